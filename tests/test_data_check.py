"""Data checks: planted duplicates, leaks, conflicts and empty rows are all found, by row."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import compose_spec

from ft_cli.checks import duplicates, run
from ft_cli.checks.rows import normalise
from ft_cli.errors import FtError

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]


def sentence(number: int) -> str:
    """A distinct sentence per number (its words spell the number in base 13)."""
    words = []
    for _ in range(6):
        number, digit = divmod(number, len(WORDS))
        words.append(WORDS[digit])
    return " ".join(words) + " stop"


def write(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["text", "label"])
        out.writerows(rows)


def planted(tmp_path: Path) -> tuple[list[str], dict[str, object]]:
    """A train and a validation file with known flaws; the overrides that read them."""
    train = [(sentence(i * 7 + 1), "yes" if i % 2 else "no") for i in range(60)]
    validation = [(sentence(i * 7 + 3), "yes" if i % 2 else "no") for i in range(20)]
    train[10] = ("  " + train[3][0].upper() + " ", train[3][1])  # duplicate of row 3
    train[11] = (train[4][0], "yes" if train[4][1] == "no" else "no")  # conflicts with row 4
    train[12] = ("", "yes")  # empty
    train[13] = (train[5][0].replace("stop", "stops"), train[5][1])  # near duplicate of 5
    validation[7] = train[20]  # a leak
    validation[8] = (f"and then {train[21][0]} again", "no")  # holds train row 21
    write(tmp_path / "train.csv", train)
    write(tmp_path / "validation.csv", validation)
    overrides = [
        "+recipe=demo",
        f"data.path={tmp_path}",
        "data.files.train=train.csv",
        "data.files.validation=validation.csv",
    ]
    return overrides, {"duplicate": [3, 10], "conflict": [4, 11], "empty": [12], "near": [5, 13]}


def test_the_check_finds_every_planted_duplicate_leak_and_conflict(tmp_path: Path) -> None:
    from ft_cli import tasks

    overrides, expected = planted(tmp_path)
    spec = compose_spec(overrides)
    found = run.check(spec, tasks.get("classification").processor(spec.model))
    by_kind = {(f.kind, f.split): f for f in found.findings}
    assert by_kind["duplicates", "train"].rows == [expected["duplicate"]]
    conflict = by_kind["conflicts", "train"].rows
    assert conflict == [{"rows": expected["conflict"], "labels": ["no", "yes"]}]
    assert by_kind["empty", "train"].rows == expected["empty"]
    assert by_kind["leak", "validation"].rows == [[7, 20]]
    assert by_kind["contained", "validation"].rows == [[8, 21]]
    assert expected["near"] in by_kind["near_duplicates", "train"].rows
    assert sum(found.splits["train"]["labels"].values()) == 60
    assert found.splits["train"]["truncation"]["rows cut"] == 0
    kinds = {f.kind for f in found.findings}
    assert kinds <= {"duplicates", "conflicts", "empty", "leak", "contained", "near_duplicates"}


def test_identities_normalise_case_space_and_word_lists() -> None:
    assert normalise("  Hello\tWORLD \n") == normalise("hello world") == "hello world"
    assert normalise(["New", "York"]) == "new york"
    assert duplicates.groups(["a", "b", "a", "", ""]) == [[0, 2]]  # empty rows never pair
    assert duplicates.shared(["a", "b"], ["b", "c", "a"]) == [[0, 1], [2, 0]]
    assert duplicates.contained(["one two three four"], ["zero one two three four five"]) == [
        [0, 0]
    ]
    assert duplicates.contained(["one two three"], ["zero one two three four"]) == []


def test_ft_data_check_writes_the_rows_and_strict_training_refuses(tmp_path: Path, capsys) -> None:
    from ft_cli.commands import data
    from ft_cli.training.engine import train

    overrides, _ = planted(tmp_path)
    report = tmp_path / "check.json"
    assert data.main(["check", "--output", str(report), *overrides]) == 0
    written = json.loads(report.read_text())
    assert {f["kind"] for f in written["findings"]} >= {"duplicates", "leak", "conflicts"}
    assert "also in train" in capsys.readouterr().out
    # strict: refused before the run dir is written to.
    run_dir = tmp_path / "run"
    strict = [*overrides, "data.checks=strict"]
    with pytest.raises(FtError, match=r"^data.checks=strict: 4 finding\(s\) to fix first"):
        train(compose_spec(strict), run_dir=run_dir, overrides=strict)
    assert not run_dir.exists() or not any(run_dir.iterdir())


@pytest.mark.slow
def test_images_are_compared_by_content_and_measured(tmp_path: Path) -> None:
    from ft_cli.assets import generated

    source = generated("shapes")
    shutil.copytree(source / "train", tmp_path / "train")
    shutil.copytree(source / "validation", tmp_path / "validation")
    first, second = sorted((tmp_path / "train" / "circle").iterdir())[:2]
    shutil.copy(first, tmp_path / "train" / "circle" / "copy.png")  # the same bytes twice
    shutil.copy(second, tmp_path / "train" / "square" / "copy.png")  # and with another label
    shutil.copy(first, tmp_path / "validation" / "circle" / "leaked.png")
    spec = compose_spec(["+recipe=demo_images", f"data.path={tmp_path}"])
    found = run.check(spec)
    kinds = {(f.kind, f.split) for f in found.findings}
    assert {("duplicates", "train"), ("conflicts", "train"), ("leak", "validation")} <= kinds
    assert found.splits["train"]["width"] == {"min": 32, "median": 32, "max": 32}
    assert any("truncation: the inputs are files" in line for line in found.lines())


@pytest.mark.slow
def test_tasks_without_labels_say_what_is_not_checked() -> None:
    spec = compose_spec(["+recipe=demo_detection"])
    found = run.check(spec, near=False)
    assert any(
        line.startswith("not checked: labels: task=object_detection") for line in found.lines()
    )
    with pytest.raises(FtError, match="check each task's data alone"):
        run.check(compose_spec(["+recipe=demo_multitask"]))


GOOD = "beautiful comfortable excellent great impressive reliable solid sturdy useful wonderful"
BAD = "awful broken cheap disappointing flimsy fragile noisy terrible unreliable useless"
THINGS = "backpack bicycle blender camera chair headset jacket kettle keyboard lamp laptop phone"


@pytest.mark.slow
def test_label_errors_rank_most_flipped_labels_first(tmp_path: Path) -> None:
    """A task a tiny model learns (one opinion word decides), 20 of 400 labels flipped:
    the ranking from 5-fold predictions puts at least 16 of them in its top 40."""
    import random

    from ft_cli.checks import label_errors
    from ft_cli.training import cross_validation

    rng = random.Random(3)
    rows = []
    for _ in range(400):
        positive = rng.random() < 0.5
        word = rng.choice((GOOD if positive else BAD).split())
        rows.append((f"the {rng.choice(THINGS.split())} is {word}", "yes" if positive else "no"))
    flipped = set(rng.sample(range(400), 20))
    rows = [
        (t, ("no" if y == "yes" else "yes") if i in flipped else y) for i, (t, y) in enumerate(rows)
    ]
    write(tmp_path / "train.csv", rows)
    overrides = [
        "model=tiny_bert",
        "data=csv",
        f"data.path={tmp_path}",
        "data.files.train=train.csv",
        "data.max_length=16",
        "train.batch_size=16",
        "train.epochs=4",
        "optimizer.lr=3e-3",
        "hardware.precision=fp32",
        "train.folds=5",
    ]
    cross_validation.run_folds(compose_spec(overrides), tmp_path / "cv", overrides)
    found = label_errors.read_out_of_fold(tmp_path / "cv" / "oof_predictions.csv")
    ranked = label_errors.rank(found[1], found[2], found[3])
    top = {found[0][line["position"]] for line in ranked[:40]}
    assert len(top & flipped) >= 16
    assert all(line["suggested"] != line["given"] for line in ranked[:10])


@pytest.mark.slow
def test_label_errors_from_a_k_fold_runs_predictions_are_written_ranked(tmp_path: Path) -> None:
    from ft_cli.commands import data

    overrides, _ = planted(tmp_path)
    run = tmp_path / "cv"
    run.mkdir()
    lines = ["row,fold,label,predicted_label,probability_no,probability_yes"]
    for row in range(60):  # confident and right, except rows 7 and 30: confidently the other
        label = "yes" if row % 2 else "no"
        right = 0.05 if row in (7, 30) else 0.95
        yes = right if label == "yes" else 1 - right
        lines.append(f"{row},{row % 3},{label},{'yes' if yes > 0.5 else 'no'},{1 - yes},{yes}")
    (run / "oof_predictions.csv").write_text("\n".join(lines) + "\n")
    output = tmp_path / "out" / "check.json"
    output.parent.mkdir()
    args = ["check", "--no-near", "--label-errors", "--from", str(run), "--output", str(output)]
    assert data.main([*args, *overrides]) == 0
    with open(output.parent / "label_errors.csv") as handle:
        ranked = list(csv.DictReader(handle))
    assert {ranked[0]["row"], ranked[1]["row"]} == {"7", "30"}
    assert ranked[0]["suggested"] != ranked[0]["given"] and ranked[0]["flagged"] == "True"
    written = json.loads(output.read_text())
    found = next(f for f in written["findings"] if f["kind"] == "label_errors")
    assert sorted(r[0] for r in found["rows"]) == [7, 30]
    assert any("skipped (--no-near)" in line for line in written["not_checked"])


@pytest.mark.slow
def test_a_sentence_tagged_two_ways_names_the_words(tmp_path: Path) -> None:
    sentence = [("Elena", "B-PER"), ("visited", "O"), ("Paris", "B-LOC"), (".", "O")]
    other = [("Elena", "B-PER"), ("visited", "O"), ("Paris", "B-ORG"), (".", "O")]
    lines = []
    for words in (sentence, other, [("Hello", "O"), ("there", "O")]):
        lines += [f"{w} {t}" for w, t in words] + [""]
    (tmp_path / "train.conll").write_text("\n".join(lines))
    spec = compose_spec(["+recipe=demo_ner", f"data.files.train={tmp_path / 'train.conll'}"])
    found = run.check(spec, near=False)
    conflict = next(f for f in found.findings if f.kind == "conflicts" and f.split == "train")
    assert conflict.rows[0]["rows"] == [0, 1] and conflict.rows[0]["words"] == ["paris"]
    assert "words tagged differently: paris" in conflict.summary
    assert found.splits["train"]["labels"]["O"] == 6  # tags are counted one by one
