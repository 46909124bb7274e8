"""Calibration: temperature scaling, adaptive ECE, decision thresholds, end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_spec

from ft_cli.errors import FtError
from ft_cli.tasks import calibration, confidence


def test_adaptive_ece_on_hand_made_rows() -> None:
    # Two bins of two rows: confidences 0.6, 0.7 (one right) and 0.8, 0.9 (both right).
    probs = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 0, 1])
    expected = (2 * abs(0.5 - 0.65) + 2 * abs(1.0 - 0.85)) / 4
    assert confidence.adaptive_ece(probs, labels, bins=2) == pytest.approx(expected)
    bins = confidence.reliability(probs, labels, bins=2)
    assert [(round(c, 2), a, n) for c, a, n in bins] == [(0.65, 0.5, 2), (0.85, 1.0, 2)]


def test_the_fitted_temperature_recovers_the_one_labels_were_drawn_at() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 3, generator=generator) * 3
    labels = torch.multinomial((logits / 2.0).softmax(-1), 1, generator=generator).squeeze(-1)
    fitted = calibration.fit_temperature(logits, labels)
    assert fitted == pytest.approx(2.0, rel=0.05)
    before = confidence.adaptive_ece(logits.softmax(-1), labels)
    after = confidence.adaptive_ece((logits / fitted).softmax(-1), labels)
    assert after < before / 3


def test_folding_the_temperature_divides_the_logits_and_keeps_every_prediction() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    net = BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 50, (4, 7))
    with torch.no_grad():
        before = net(input_ids=ids).logits
        calibration.fold_temperature(net, 2.5, 3)
        after = net(input_ids=ids).logits
    assert torch.allclose(after, before / 2.5, atol=1e-6)
    assert torch.equal(after.argmax(-1), before.argmax(-1))


def test_the_tuned_threshold_maximises_f1_and_bad_thresholds_get_one_line() -> None:
    positive = torch.tensor([0.1, 0.2, 0.35, 0.4, 0.6, 0.9])
    probs = torch.stack([1 - positive, positive], -1)
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    threshold, f1 = calibration.tune_threshold(probs, labels, "f1")
    assert threshold == pytest.approx(0.35) and f1 == pytest.approx(6 / 7)
    assert calibration.parse_threshold("0.3") == (0.3, "")
    assert calibration.parse_threshold("auto") == (None, "f1")
    assert calibration.parse_threshold("auto:mcc") == (None, "mcc")
    for bad in ("1.5", "high", "auto:recall"):
        with pytest.raises(FtError, match=r"task.threshold="):
            calibration.parse_threshold(bad)


def test_calibration_is_refused_for_tasks_without_a_class_per_row() -> None:
    spec = compose_spec(["+recipe=demo_ner", "task.calibration=temperature"])
    with pytest.raises(FtError, match="task=token_classification has no class per row"):
        calibration.check(spec)


@pytest.mark.slow
def test_calibrated_probabilities_agree_in_predict_serve_and_onnx(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from ft_cli.commands import export, predict, serve
    from ft_cli.deploy import serving
    from ft_cli.training.engine import train

    overrides = [
        "+recipe=demo",
        *TINY,
        "train.epochs=1",
        "task.calibration=temperature",
        "task.threshold=0.3",
    ]
    result = train(compose_spec(overrides), run_dir=tmp_path / "run", overrides=overrides)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())["calibration"]
    assert record["threshold"] == 0.3 and record["rows"] == 48
    assert record["nll_after"] <= record["nll_before"] + 1e-6
    assert "ece" in result.final
    run = str(tmp_path / "run")
    texts = ["a wonderful, warm film", "dull and far too long", "it was fine"]
    source = tmp_path / "rows.csv"
    source.write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
    assert export.main([run]) == 0
    found = {}
    for backend in ("torch", "onnxruntime"):
        target = tmp_path / f"{backend}.csv"
        predict.predict_file(run, source, target, [], backend=backend)
        with open(target) as handle:
            found[backend] = list(csv.DictReader(handle))
    served, _ = serve.load(run, None, None, [], 8)
    with TestClient(serving.build_app(served, serving.Limits())) as client:
        found["serve"] = client.post("/predict", json={"texts": texts}).json()["predictions"]
    for name in ("onnxruntime", "serve"):
        for mine, theirs in zip(found["torch"], found[name], strict=True):
            assert mine["predicted_label"] == theirs["predicted_label"]
            for label in ("negative", "positive"):
                key = f"probability_{label}"
                assert float(mine[key]) == pytest.approx(float(theirs[key]), abs=1e-4)
    for row in found["torch"]:  # the threshold decides, not the larger probability
        expected = "positive" if float(row["probability_positive"]) >= 0.3 else "negative"
        assert row["predicted_label"] == expected


def test_folds_are_stratified_grouped_seeded_and_cover_every_row() -> None:
    import datasets

    from ft_cli.data import folds

    table = datasets.Dataset.from_dict(
        {"label": ["a"] * 30 + ["b"] * 10, "speaker": [str(i // 4) for i in range(40)]}
    )
    fold = folds.assignment(table, 5, seed=1, labels="label", groups=None)
    assert fold == folds.assignment(table, 5, seed=1, labels="label", groups=None)
    assert fold != folds.assignment(table, 5, seed=2, labels="label", groups=None)
    for k in range(5):  # stratified: each fold 6 a's and 2 b's
        kept, out = folds.held_out(fold, k)
        assert sorted(kept + out) == list(range(40))
        assert [table["label"][i] for i in out].count("b") == 2 and len(out) == 8
    grouped = folds.assignment(table, 5, seed=1, labels="label", groups="speaker")
    for speaker in set(table["speaker"]):  # a speaker never straddles two folds
        assert len({grouped[i] for i in range(40) if table["speaker"][i] == speaker}) == 1
    with pytest.raises(FtError, match="has 10 groups; every fold needs one"):
        folds.assignment(table, 11, seed=1, labels=None, groups="speaker")


@pytest.mark.slow
def test_k_fold_cross_validation_reports_folds_and_predicts_every_training_row(
    tmp_path: Path,
) -> None:
    from ft_cli.training import cross_validation

    overrides = ["+recipe=demo", *TINY, "data.max_train_samples=null", "train.max_steps=3"]
    overrides += ["train.folds=3", "data.max_eval_samples=null"]
    spec = compose_spec(overrides)
    train_rows = 800  # the demo's
    result = cross_validation.run_folds(spec, tmp_path / "cv", overrides)
    record = json.loads((tmp_path / "cv" / "folds.json").read_text())
    assert len(record["per_fold"]) == 3 and record["monitor"] == "accuracy"
    accuracy = [fold["accuracy"] for fold in record["per_fold"]]
    assert record["summary"]["accuracy"]["mean"] == pytest.approx(sum(accuracy) / 3)
    assert result.metric == pytest.approx(sum(accuracy) / 3)
    with open(tmp_path / "cv" / "oof_predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["row"]) for r in rows] == list(range(train_rows))
    assert {r["fold"] for r in rows} == {"0", "1", "2"}
    for row in rows:
        total = float(row["probability_negative"]) + float(row["probability_positive"])
        assert total == pytest.approx(1.0, abs=1e-5)
    # Each fold's validation is its held-out rows; the given validation became its test.
    fold_record = json.loads((tmp_path / "cv" / "fold-1" / "metrics.json").read_text())
    assert fold_record["test"] and (tmp_path / "cv" / "fold-1" / "model").is_dir()


@pytest.mark.slow
def test_ft_calibrate_fits_a_finished_run_and_a_second_fit_changes_little(tmp_path: Path) -> None:
    from ft_cli.commands import calibrate
    from ft_cli.training.engine import train

    overrides = ["+recipe=demo", *TINY, "train.epochs=2"]
    train(compose_spec(overrides), run_dir=tmp_path / "run", overrides=overrides)
    run = str(tmp_path / "run")
    assert calibrate.main([run]) == 0
    first = json.loads((tmp_path / "run" / "model" / "calibration.json").read_text())
    assert first["nll_after"] <= first["nll_before"] + 1e-6
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["calibration"] == first
    assert calibrate.main([run]) == 0  # already calibrated: T near 1, the product recorded
    second = json.loads((tmp_path / "run" / "model" / "calibration.json").read_text())
    assert second["temperature"] == pytest.approx(first["temperature"], rel=0.05)
    assert second["nll_before"] == pytest.approx(first["nll_after"], abs=1e-4)
