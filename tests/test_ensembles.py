"""Ensembles: each combination method on constructed outputs, then the CLI end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY

from ft_cli import cli
from ft_cli.commands import ensemble
from ft_cli.ensembles import combine, scoring
from ft_cli.errors import FtError


def probabilities(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.double)


def accuracy_of(targets: torch.Tensor):
    return lambda combined: float((combined.argmax(-1) == targets).double().mean())


def test_the_mean_of_identical_members_is_one_member() -> None:
    member = torch.rand(7, 3, dtype=torch.double).softmax(-1)
    combined = combine.Combiner("mean", regression=False)(torch.stack([member] * 4))
    assert torch.allclose(combined, member)


def test_vote_picks_the_majority_where_the_mean_would_not() -> None:
    # One confident member for class 0, two lukewarm ones for class 1.
    outputs = torch.stack(
        [probabilities([[0.9, 0.1]]), probabilities([[0.4, 0.6]]), probabilities([[0.45, 0.55]])]
    )
    assert combine.Combiner("mean", False)(outputs).argmax(-1).item() == 0
    voted = combine.Combiner("vote", False)(outputs)
    assert voted.argmax(-1).item() == 1
    assert voted.sum().item() == pytest.approx(1.0)
    # A 1-1 tie goes to the class with the higher mean probability.
    tie = torch.stack([probabilities([[0.6, 0.4]]), probabilities([[0.3, 0.7]])])
    assert combine.Combiner("vote", False)(tie).argmax(-1).item() == 1


def test_vote_of_regression_scores_is_their_median() -> None:
    scores = torch.tensor([[[1.0], [5.0]], [[3.0], [0.0]], [[2.0], [9.0]]], dtype=torch.double)
    assert combine.Combiner("vote", True)(scores).flatten().tolist() == [2.0, 5.0]


@pytest.mark.parametrize("seed", range(5))
def test_greedy_selection_never_does_worse_than_the_best_member(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (60,), generator=generator)
    # Members right on a random share of rows, noisy elsewhere.
    members = []
    for _ in range(5):
        logits = torch.randn(60, 3, generator=generator, dtype=torch.double)
        right = torch.rand(60, generator=generator) < 0.6
        logits[right, targets[right]] += 2
        members.append(logits.softmax(-1))
    outputs = torch.stack(members)
    score = accuracy_of(targets)
    fitted = combine.fit("greedy", (outputs, targets), score, regression=False)
    assert fitted.weights is not None and sum(fitted.weights) >= 1
    assert score(fitted(outputs)) >= max(score(m) for m in outputs)


def test_stacking_learns_what_averaging_cannot_and_is_scored_out_of_fold() -> None:
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 2, (200,), generator=generator)
    sure = torch.nn.functional.one_hot(targets, 2).double() * 0.8 + 0.1
    inverted = sure.flip(-1)  # a member that is always confidently wrong
    outputs = torch.stack([inverted, inverted, sure * 0.2 + 0.4])
    score = accuracy_of(targets)
    assert score(combine.Combiner("mean", False)(outputs)) < 0.1
    fitted = combine.fit("stack", (outputs, targets), score, regression=False)
    assert score(fitted(outputs)) == 1.0
    out_of_fold = combine.cross_validated(outputs, targets, regression=False, seed=0)
    assert score(out_of_fold) == 1.0
    # Out of fold means fit without the row: a row alone is predicted by the rest's model.
    assert not torch.allclose(out_of_fold, fitted(outputs))


def test_a_linear_stack_recovers_regression_weights() -> None:
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(100, generator=generator), torch.randn(100, generator=generator)
    targets = (0.3 * a + 0.7 * b + 1.0).double()
    outputs = torch.stack([a, b]).unsqueeze(-1).double()
    fitted = combine.fit("stack", (outputs, targets), lambda c: 0.0, regression=True)
    assert fitted.coef is not None and fitted.bias is not None
    assert fitted.coef[0] == pytest.approx([0.3, 0.7], abs=0.02)
    assert fitted.bias[0] == pytest.approx(1.0, abs=0.02)


def test_bad_methods_and_weights_are_one_line_errors() -> None:
    with pytest.raises(FtError, match="unknown method median; methods: mean, vote"):
        scoring.parse_methods("mean,median")
    with pytest.raises(FtError, match="--weights 1,x: give 3 non-negative numbers"):
        scoring.parse_weights("1,x", 3)
    with pytest.raises(FtError, match="give 2 non-negative"):
        scoring.parse_weights("0,0", 2)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Three tiny classifiers that differ in their seed."""
    root = tmp_path_factory.mktemp("ensemble") / "sweep"
    assert (
        cli.run_train(
            [
                "-m",
                *TINY,
                "train.max_steps=8",
                "optimizer.lr=3e-3",
                "train.seed=1,2,3",
                f"hydra.sweep.dir={root}",
            ]
        )
        == 0
    )
    return root


def predicted(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_eval_shows_every_member_and_method_and_a_manifest_reproduces_predictions(
    sweep: Path, tmp_path: Path
) -> None:
    assert cli._run_tool("eval", [str(sweep), "--ensemble", "all"]) == 0
    record = json.loads((sweep / "ensemble_metrics.json").read_text())
    names = [model["name"] for model in record["models"]]
    assert names[:3] == ["sweep/0", "sweep/1", "sweep/2"]
    assert names[3:] == [f"ensemble: {m}" for m in combine.METHODS]
    assert record["models"][-1]["fit"] == "5-fold CV"

    data = str(Path(cli.__file__).parent / "assets" / "demo" / "validation.csv")
    singles = []
    for job in ("0", "1", "2"):
        target = tmp_path / f"single{job}.csv"
        assert (
            cli._run_tool("predict", [str(sweep / job), "--input", data, "--output", str(target)])
            == 0
        )
        singles.append(predicted(target))
    saved = tmp_path / "ensemble"
    assert (
        cli._run_tool("ensemble", [str(sweep), "--method", "greedy", "--output", str(saved)]) == 0
    )
    weights = json.loads((saved / "ensemble.json").read_text())["combination"]["weights"]
    from_manifest, fitted_again = tmp_path / "manifest.csv", tmp_path / "again.csv"
    assert (
        cli._run_tool("predict", [str(saved), "--input", data, "--output", str(from_manifest)]) == 0
    )
    assert (
        cli._run_tool(
            "predict",
            [str(sweep), "--ensemble", "greedy", "--input", data, "--output", str(fitted_again)],
        )
        == 0
    )
    rows = predicted(from_manifest)
    assert rows == predicted(fitted_again)
    assert len(rows) == len(singles[0]) == 200
    for index, row in enumerate(rows):
        mixed = sum(
            w * float(s[index]["probability_positive"])
            for w, s in zip(weights, singles, strict=True)
        ) / sum(weights)
        assert float(row["probability_positive"]) == pytest.approx(mixed, abs=1e-5)


@pytest.mark.slow
def test_members_must_share_their_labels_and_outputs_must_be_new(
    sweep: Path, tmp_path: Path, capsys
) -> None:
    other = tmp_path / "relabelled"
    shutil.copytree(sweep / "1", other)
    config_path = other / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config["id2label"] = {"0": "no", "1": "yes"}
    config["label2id"] = {"no": 0, "yes": 1}
    config_path.write_text(json.dumps(config))
    assert cli._run_tool("eval", [str(sweep / "0"), str(other), "--ensemble", "mean"]) == 2
    err = capsys.readouterr().err
    assert "an ensemble's members share one label set" in err and len(err.splitlines()) == 1
    with pytest.raises(FtError, match="exists and is not an empty folder"):
        ensemble.main([str(sweep), "--method", "mean", "--output", str(sweep / "0")])
    assert not (sweep / "0" / "ensemble.json").exists()
    with pytest.raises(FtError, match="two or more members"):
        ensemble.main([str(sweep / "0"), "--method", "mean", "--output", str(tmp_path / "x")])


@pytest.mark.slow
def test_several_teachers_distil_through_the_mean_of_their_logits(sweep: Path) -> None:
    from conftest import compose_spec
    from transformers import AutoModelForSequenceClassification

    from ft_cli.hardware.device import setup_hardware
    from ft_cli.hardware.parallel import Backend
    from ft_cli.strategies.distill import Teachers
    from ft_cli.training import setup

    spec = compose_spec([*TINY, "strategy=distill", f"strategy.teacher.from_run={sweep}"])
    run = setup.build(spec, setup.Purpose.train, Backend(), setup_hardware(spec.hardware))
    assert isinstance(run.objective.teacher, Teachers) and len(run.objective.teacher.members) == 3
    batch = next(iter(run.loader))
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "row_index")}
    run.forward.train()
    run.forward(dict(batch))
    with torch.no_grad():
        each = [
            AutoModelForSequenceClassification.from_pretrained(sweep / job / "model")
            .eval()(**inputs)
            .logits
            for job in ("0", "1", "2")
        ]
    assert torch.allclose(run.objective.teacher_logits, torch.stack(each).mean(0), atol=1e-5)
    # The same teachers named one by one.
    listed = compose_spec(
        [*TINY, "strategy=distill", f"strategy.teacher.from_runs=[{sweep}/0,{sweep}/1,{sweep}/2]"]
    )
    again = setup.build(listed, setup.Purpose.train, Backend(), setup_hardware(spec.hardware))
    again.forward.train()
    again.forward(dict(batch))
    assert torch.allclose(again.objective.teacher_logits, run.objective.teacher_logits)


@pytest.mark.slow
def test_a_sweep_dir_without_ensemble_says_how_to_use_it(sweep: Path, capsys) -> None:
    assert cli._run_tool("eval", [str(sweep)]) == 2
    assert "is a sweep dir: name one of its runs" in capsys.readouterr().err


@pytest.mark.slow
def test_a_regression_ensemble_scores_and_predicts_scores(tmp_path: Path) -> None:
    texts = [f"the kettle is {'great ' * (i % 4)}good" for i in range(48)]
    data = tmp_path / "scores.csv"
    with open(data, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence", "score"])
        writer.writerows([t, float(i % 4)] for i, t in enumerate(texts))
    root = tmp_path / "sweep"
    assert (
        cli.run_train(
            [
                "-m",
                *TINY,
                "data=csv",
                f"data.files.train={data}",
                f"data.files.validation={data}",
                "data.text_column=sentence",
                "data.label_column=score",
                "task=regression",
                "optimizer.lr=5e-3",
                "train.max_steps=6",
                "train.seed=1,2",
                f"hydra.sweep.dir={root}",
            ]
        )
        == 0
    )
    assert cli._run_tool("eval", [str(root), "--ensemble", "mean,vote,stack"]) == 0
    record = json.loads((root / "ensemble_metrics.json").read_text())
    assert set(record["models"][-1]["metrics"]) == {"pearson", "spearman", "mse", "loss"}
    out = tmp_path / "predicted.csv"
    assert (
        cli._run_tool(
            "predict", [str(root), "--ensemble", "mean", "--input", str(data), "--output", str(out)]
        )
        == 0
    )
    singles = []
    for job in ("0", "1"):
        single = tmp_path / f"single{job}.csv"
        assert (
            cli._run_tool(
                "predict", [str(root / job), "--input", str(data), "--output", str(single)]
            )
            == 0
        )
        singles.append([float(r["predicted_score"]) for r in predicted(single)])
    mean = [(a + b) / 2 for a, b in zip(*singles, strict=True)]
    assert [float(r["predicted_score"]) for r in predicted(out)] == pytest.approx(mean, abs=1e-5)


def _manifest(folder: Path, **changes) -> Path:
    """A saved two-member weighted ensemble (members: empty folders), with `changes`."""
    for member in ("a", "b"):
        (folder / member).mkdir(parents=True, exist_ok=True)
    record = {
        "format": "ft-ensemble/1",
        "task": "classification",
        "labels": ["neg", "pos"],
        "members": ["a", "b"],
        "combination": {"method": "weighted", "weights": [1.0, 2.0], "coef": None, "bias": None},
    }
    for key, value in changes.items():
        if key in ("method", "weights", "coef", "bias"):
            record["combination"][key] = value
        else:
            record[key] = value
    (folder / "ensemble.json").write_text(json.dumps(record))
    return folder


MANIFEST_CASES = {
    "nan weight": ({"weights": [float("nan"), 1.0]}, "weights holds a value that is not finite"),
    "infinite weight": ({"weights": [float("inf"), 1.0]}, "not finite"),
    "negative weight": ({"weights": [-1.0, 2.0]}, "weights must be non-negative and not all 0"),
    "zero-sum weights": ({"weights": [0, 0]}, "weights must be non-negative and not all 0"),
    "wrong length": ({"weights": [1.0]}, "weights must be a list of 2 numbers"),
    "strings": ({"weights": ["1", "2"]}, "weights must hold numbers only"),
    "booleans": ({"weights": [True, 1]}, "weights must hold numbers only"),
    "unknown method": ({"method": "median"}, "method 'median'; methods: mean, vote"),
    "stacker of the wrong shape": (
        {"method": "stack", "coef": [[0.1, 0.2]], "bias": [0.0, 0.0]},
        "coef must be 2 rows of 4 numbers",
    ),
    "stacker bias": (
        {"method": "stack", "coef": [[0.0] * 4, [0.0] * 4], "bias": [0.0]},
        "bias must be a list of 2 numbers",
    ),
    "labels not strings": ({"labels": [0, 1]}, "labels must be a non-empty list of strings"),
    "unknown task": ({"task": "mlm"}, "task 'mlm': ensembles combine classification"),
    "not an object": ({"members": "a"}, "members must be a non-empty list of strings"),
}


@pytest.mark.parametrize("name", sorted(MANIFEST_CASES))
def test_a_saved_ensemble_checks_every_number_and_shape(name: str, tmp_path: Path) -> None:
    from ft_cli.ensembles import manifest

    changes, expected = MANIFEST_CASES[name]
    folder = _manifest(tmp_path / "ens", **changes)
    with pytest.raises(FtError, match="damaged") as raised:
        manifest.read(folder)
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_a_valid_manifest_reads_back_and_edited_labels_are_refused(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ft_cli.ensembles import manifest

    saved = manifest.read(_manifest(tmp_path / "ens"))
    assert saved is not None and saved.combiner.weights == [1.0, 2.0]
    probabilities = torch.tensor([[[0.2, 0.8]], [[0.5, 0.5]]])
    assert saved.combiner(probabilities)[0].tolist() == pytest.approx([0.4, 0.6])
    stack = _manifest(
        tmp_path / "stack", method="stack", coef=[[0.0] * 4, [0.0] * 4], bias=[0.0, 1.0]
    )
    assert manifest.read(stack).combiner.coef == [[0.0] * 4, [0.0] * 4]

    def member(labels: list[str], kind: str = "classification"):
        spec = SimpleNamespace(task=SimpleNamespace(kind=kind))
        return SimpleNamespace(spec=spec, labels=labels)

    manifest.check_members(saved, [member(["neg", "pos"])])
    with pytest.raises(FtError, match=r"labels \['neg', 'pos'\], but its members predict"):
        manifest.check_members(saved, [member(["pos", "neg"])])
    with pytest.raises(FtError, match="but its members are now regression"):
        manifest.check_members(saved, [member(["neg", "pos"], "regression")])
    with pytest.raises(FtError, match=r"--weights inf,1: give 2 non-negative numbers"):
        scoring.parse_weights("inf,1", 2)
