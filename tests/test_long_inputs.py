"""Long inputs read whole in windows (data.long_inputs=windows): windows that cover every
token, labels spread to windows, pooling back to rows, NER word stitching, and a run
scored per row end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_spec, write_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from ft_cli.config.schema import DataConfig, LongInputs
from ft_cli.errors import FtError
from ft_cli.tasks import documents, tagging

WORDS = ["cat", "dog", "sat", "on", "the", "mat", "park", "ball", "red", "runs", "a", "blue"]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from ft_cli.paths import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path("pkg:ft_cli/assets/tiny_bert", "model"))


def windows_cfg(max_length: int, stride: int) -> DataConfig:
    return DataConfig(max_length=max_length, stride=stride, long_inputs=LongInputs.windows)


@settings(max_examples=25, deadline=None)
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=60),
    max_length=st.integers(8, 24),
    stride=st.integers(0, 5),
)
def test_windows_cover_every_token_in_order_and_overlap_by_the_stride(
    tokenizer, words: list[str], max_length: int, stride: int
) -> None:
    text = " ".join(words)
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    split = documents.encode_texts(tokenizer, [text, "red"], None, windows_cfg(max_length, stride))
    red = tokenizer("red", add_special_tokens=False)["input_ids"]
    assert split.rows is not None and split.rows[-1] == 1 and split.input_ids[-1][1:-1] == red
    parts = [ids[1:-1] for ids, row in zip(split.input_ids, split.rows, strict=True) if row == 0]
    assert all(len(ids) <= max_length for ids in split.input_ids)
    rebuilt = list(parts[0])
    for before, part in itertools.pairwise(parts):
        if stride:
            assert part[:stride] == before[-stride:]
        rebuilt += part[stride:]
    assert rebuilt == whole


def test_a_pair_keeps_its_first_text_whole_in_every_window(tokenizer) -> None:
    long = " ".join(WORDS * 3)
    split = documents.encode_texts(tokenizer, ["red cat"], [long], windows_cfg(16, 4))
    first = tokenizer("red cat", add_special_tokens=False)["input_ids"]
    assert split.rows is not None and len(split.rows) > 2 and set(split.rows) == {0}
    assert all(ids[1 : 1 + len(first)] == first for ids in split.input_ids)


def test_labels_spread_to_windows_and_truncation_makes_one_row_each(tokenizer) -> None:
    texts = [" ".join(WORDS * 2), "cat"]
    split = documents.encode_texts(tokenizer, texts, None, windows_cfg(12, 2))
    assert split.rows is not None
    assert documents.spread([1, 0], split) == [1 if row == 0 else 0 for row in split.rows]
    plain = documents.encode_texts(tokenizer, texts, None, DataConfig(max_length=12))
    assert plain.rows is None and len(plain.input_ids) == 2
    assert documents.spread([1, 0], plain) == [1, 0]


def test_window_pooling_mean_max_and_first() -> None:
    logits = torch.tensor([[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0]])
    assert documents.pool(logits, "mean").tolist() == pytest.approx([1.0, 2.0 / 3.0])
    assert documents.pool(logits, "max").tolist() == [3.0, 4.0]
    assert documents.pool(logits, "first").tolist() == [1.0, -2.0]
    rows, pooled = documents.pooled_rows(
        {0: logits[0], 1: logits[1], 2: logits[2]}, [0, 0, 1], "max"
    )
    assert rows == [0, 1] and pooled.tolist() == [[3.0, 0.0], [-1.0, 4.0]]


def test_metrics_count_rows_not_windows(tokenizer) -> None:
    from ft_cli.tasks import metrics

    # Row 0 (label 1): three windows, one of them wrong; row 1 (label 0): one window.
    split = documents.encode_texts(tokenizer, ["a"] * 2, None, windows_cfg(12, 2))
    split.rows, split.labels = [0, 0, 0, 1], [1, 1, 1, 0]
    split.input_ids = [[1, 2]] * 4
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 3.0], [2.0, 0.0]])
    for how, accuracy in (("mean", 1.0), ("first", 1.0)):
        scores = documents.PooledMetrics(metrics.EvalMetrics("classification", 2), split, how)
        scores.update(logits[:2], (torch.tensor([1, 1]), torch.tensor([0, 1])))
        other = documents.PooledMetrics(metrics.EvalMetrics("classification", 2), split, how)
        other.update(logits[2:], (torch.tensor([1, 0]), torch.tensor([2, 3])))
        assert scores.merge([other]).compute()["accuracy"] == accuracy
    wrong = torch.tensor([[0.0, 2.0], [9.0, 0.0], [0.0, 3.0], [2.0, 0.0]])  # mean says 0
    scores = documents.PooledMetrics(metrics.EvalMetrics("classification", 2), split, "mean")
    scores.update(wrong, (torch.tensor([1, 1, 1, 0]), torch.tensor([0, 1, 2, 3])))
    assert scores.compute()["accuracy"] == 0.5  # of 2 rows, not 3 of 4 windows


def test_a_word_is_tagged_from_the_window_where_it_has_most_context() -> None:
    # Two windows of one row: [CLS] w0 w1 w2 [SEP] and [CLS] w1 w2 w3 [SEP].
    first = ([None, 0, 1, 2, None], [False, True, True, True, False])
    second = ([None, 1, 2, 3, None], [False, True, True, True, False])
    # Window 1 says tag 1 everywhere, window 2 tag 2: w1 sits in the middle of window 1
    # (1 token each side), w2 in the middle of window 2.
    ones = torch.tensor([[0.0, 9.0, 0.0]] * 5)
    twos = torch.tensor([[0.0, 0.0, 9.0]] * 5)
    words, predicted, _ = documents.stitch(
        [(ones, *first, None), (twos, *second, None)]  # type: ignore[list-item]
    )
    assert words == [0, 1, 2, 3]
    assert predicted == [1, 1, 2, 2]


@settings(max_examples=20, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    max_length=st.integers(8, 20),
    stride=st.integers(0, 4),
    seed=st.integers(0, 1000),
)
def test_ner_windows_label_each_word_once_and_stitch_back_every_word(
    tokenizer, lengths: list[int], max_length: int, stride: int, seed: int
) -> None:
    import random

    draw = random.Random(seed)
    rows = [[draw.choice(WORDS) + draw.choice(["", "s", "ing"]) for _ in range(n)] for n in lengths]
    labels = ["O", "B-X", "I-X"]
    tags = [[draw.choice(labels) for _ in row] for row in rows]
    split = tagging.encode_tagged(tokenizer, rows, tags, labels, max_length, False, "train", stride)
    assert split.rows is not None and split.word_ids is not None and split.word_starts is not None
    for row, words in enumerate(rows):
        mine = [i for i, owner in enumerate(split.rows) if owner == row]
        # Each window labels exactly its word starts, with their words' tags.
        for window in mine:
            for word, start, label in zip(
                split.word_ids[window], split.word_starts[window], split.labels[window], strict=True
            ):
                assert (label != tagging.IGNORE) == start
                if start:
                    assert labels[label] == tags[row][word]
        # Stitched with perfect logits, every word comes back with its own tag.
        parts = [
            (
                torch.nn.functional.one_hot(
                    torch.tensor([max(t, 0) for t in split.labels[w]]), 3
                ).float(),
                split.word_ids[w],
                split.word_starts[w],
                split.labels[w],
            )
            for w in mine
        ]
        found, predicted, true = documents.stitch(parts)
        assert found == list(range(len(words)))
        assert [labels[p] for p in predicted] == tags[row] == [labels[t] for t in true]


def test_bad_window_settings_are_one_line(tokenizer) -> None:
    with pytest.raises(FtError, match=r"^data.stride=10 must be smaller than the text's room"):
        documents.encode_texts(tokenizer, ["a b c"], None, windows_cfg(12, 10))
    with pytest.raises(FtError, match=r"^data.max_length=8: first text 0 is \d+ tokens"):
        documents.encode_texts(tokenizer, [" ".join(WORDS)], ["cat"], windows_cfg(8, 1))
    with pytest.raises(FtError, match=r"^data.long_inputs=windows: task=mlm is not scored"):
        compose_spec(["+recipe=demo", "task=mlm", "data.long_inputs=windows"])
    with pytest.raises(FtError, match=r"data.window_pooling"):
        compose_spec(["+recipe=demo", "data.window_pooling=median"])


def windowed_reviews(tmp_path: Path) -> list[str]:
    """The tiny model on the long reviews, read in windows of 16 tokens (stride 4)."""
    train_file, dev_file = long_reviews(tmp_path)
    return [
        *TINY,
        "data=csv",
        f"data.files.train={train_file}",
        f"data.files.validation={dev_file}",
        "data.max_length=16",
        "data.stride=4",
        "data.long_inputs=windows",
        "train.max_steps=2",
    ]


def long_reviews(tmp_path: Path) -> tuple[Path, Path]:
    """Rows whose label word sits past the first 16 tokens: truncation cannot see it."""
    filler = "the park was on a blue day and the dog sat on the mat"
    rows = []
    for index in range(64):
        good = index % 2 == 0
        cue = "wonderful great" if good else "terrible awful"
        rows.append({"text": f"{filler} {filler} {cue}", "label": "pos" if good else "neg"})
    return write_csv(tmp_path / "train.csv", rows), write_csv(tmp_path / "dev.csv", rows[:16])


def test_a_classification_run_in_windows_is_scored_per_row_and_predicts_per_row(
    tmp_path: Path,
) -> None:
    from ft_cli.commands import predict
    from ft_cli.training.engine import train

    overrides = [*windowed_reviews(tmp_path), "data.window_pooling=max"]
    dev_file = tmp_path / "dev.csv"
    train(compose_spec(overrides), run_dir=tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["windows"]["validation"]["rows"] == 16
    assert record["windows"]["validation"]["windows"] > 16
    assert 0 <= record["final"]["accuracy"] <= 1
    # The same rows' pooled logits, by hand, give the recorded accuracy.
    found = tmp_path / "found.csv"
    assert (
        predict.main([str(tmp_path / "run"), "--input", str(dev_file), "--output", str(found)]) == 0
    )
    import csv

    with open(found, encoding="utf-8") as handle:
        predicted = list(csv.DictReader(handle))
    assert len(predicted) == 16
    right = sum(row["predicted_label"] == row["label"] for row in predicted) / 16
    assert right == pytest.approx(record["final"]["accuracy"])


@pytest.mark.slow
def test_ner_in_windows_scores_words_and_predict_tags_every_word_as_eval_did(
    tmp_path: Path,
) -> None:
    from ft_cli import cli
    from ft_cli.commands import evaluation, predict
    from ft_cli.paths import resolve_path

    run = tmp_path / "run"
    overrides = [
        "model=tiny_bert",
        "data=demo_ner",
        "task=token_classification",
        "data.max_train_samples=120",
        "data.max_eval_samples=30",
        "data.max_length=16",  # the tiny tokenizer's characters: most rows take windows
        "data.stride=4",
        "data.long_inputs=windows",
        "train.epochs=2",
        "optimizer.lr=3e-3",
        "train.batch_size=16",
        f"hydra.run.dir={run}",
    ]
    assert cli.run_train(overrides) == 0
    record = json.loads((run / "metrics.json").read_text())
    assert record["windows"]["validation"]["rows"] == 30
    assert record["windows"]["validation"]["windows"] > 60
    evaluated = evaluation.evaluate_trained(str(run), [])["metrics"]
    best = {k: v for k, v in record["best"].items() if k != "step"}
    assert evaluated == pytest.approx(best, rel=1e-6, abs=1e-6)
    # ft predict tags every word of every row (none cut off) from the same stitching:
    # its tags score exactly what evaluation reported.
    rows = tagging.read_conll(resolve_path("pkg:ft_cli/assets/ner/validation.conll", "data"))
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"tokens": words}) + "\n" for words in rows["tokens"][:30])
    )
    out = tmp_path / "out.jsonl"
    assert predict.predict_file(str(run), source, out, []) == 30
    guessed = [json.loads(line)["predicted_tags"] for line in out.read_text().splitlines()]
    assert [len(g) for g in guessed] == [len(w) for w in rows["tokens"][:30]]
    scores = tagging.entity_scores(rows["tags"][:30], guessed)
    assert scores["f1"] == pytest.approx(evaluated["f1"], abs=1e-6)
    assert scores["accuracy"] == pytest.approx(evaluated["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_explain_shows_what_truncation_cuts_and_how_many_windows_reading_whole_makes(
    tmp_path: Path,
) -> None:
    from ft_cli.commands import explain

    train_file, _ = long_reviews(tmp_path)
    common = [*TINY, "data=csv", f"data.files.train={train_file}", "data.max_length=16"]
    shown = dict(explain.plan([*common, "data.stride=4"]).long_inputs)
    # Every review is longer than 16 tokens: truncation cuts all 64 of them.
    assert shown["rows over data.max_length=16"].startswith("64 of 64 (100.0%)")
    assert "(data.long_inputs=truncate)" in shown["truncation drops"]
    windowed = dict(
        explain.plan([*common, "data.stride=4", "data.long_inputs=windows"]).long_inputs
    )
    made = int(windowed["windows (data.stride=4)"].split()[0].replace(",", ""))
    assert made > 64 and "(data.long_inputs=windows)" in windowed["windows (data.stride=4)"]


def test_report_counts_a_windowed_runs_rows_in_its_confusion_matrix(tmp_path: Path) -> None:
    from ft_cli import cli
    from ft_cli.commands import report

    overrides = [*windowed_reviews(tmp_path), f"hydra.run.dir={tmp_path / 'run'}"]
    assert cli.run_train(overrides) == 0
    found = report.confusion_matrix(tmp_path / "run")
    assert found is not None
    counts, labels = found
    assert sum(map(sum, counts)) == 16  # the 16 reviews, not their windows
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    right = sum(counts[i][i] for i in range(len(labels))) / 16
    assert right == pytest.approx(record["best"]["accuracy"])


@pytest.mark.slow
def test_an_ensemble_of_windowed_runs_pools_each_rows_combined_windows(
    tmp_path: Path, capsys
) -> None:
    from ft_cli import cli

    runs = []
    for seed in (1, 2):
        runs.append(str(tmp_path / f"run{seed}"))
        overrides = [*windowed_reviews(tmp_path), f"train.seed={seed}", "optimizer.lr=1e-2"]
        assert cli.run_train([*overrides, f"hydra.run.dir={runs[-1]}"]) == 0
    capsys.readouterr()
    assert cli._run_tool("eval", [*runs, "--ensemble", "mean,vote,stack"]) == 0
    table = " ".join(capsys.readouterr().out.split())  # the title may wrap
    assert "(16 rows)" in table and "ensemble: stack" in table  # rows, not their windows
    # A run with itself: every method gives the run's own pooled metrics and predictions.
    folder = tmp_path / "twice"
    assert (
        cli._run_tool("ensemble", [runs[0], runs[0], "--method", "mean", "--output", str(folder)])
        == 0
    )
    assert cli._run_tool("eval", [str(folder)]) == 0
    scored = json.loads((folder / "ensemble_metrics.json").read_text())
    alone = json.loads((Path(runs[0]) / "metrics.json").read_text())["final"]
    assert scored["rows"] == 16  # rows, not their windows
    for row in scored["models"]:
        assert row["metrics"] == pytest.approx(alone, abs=1e-6), row["name"]
    import csv

    out = {}
    for name, args in (("alone", [runs[0]]), ("twice", [str(folder)])):
        target = tmp_path / f"{name}.csv"
        source = str(tmp_path / "dev.csv")
        assert cli._run_tool("predict", [*args, "--input", source, "--output", str(target)]) == 0
        with open(target, encoding="utf-8") as handle:
            out[name] = list(csv.DictReader(handle))
    assert len(out["twice"]) == len(out["alone"]) == 16
    for mine, theirs in zip(out["alone"], out["twice"], strict=True):
        assert mine["predicted_label"] == theirs["predicted_label"]
        for column in ("probability_pos", "probability_neg"):
            assert float(mine[column]) == pytest.approx(float(theirs[column]), abs=1e-6)
