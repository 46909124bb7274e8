"""Using a trained model: ft eval and ft predict on the tiny model's runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import TINY, compose_spec, write_csv
from test_error_corpus import run_ft

from ft_cli import cli
from ft_cli.commands import evaluation, predict
from ft_cli.data import formats
from ft_cli.paths import resolve_path

VALIDATION = Path(resolve_path("pkg:ft_cli/assets/demo/validation.csv", "data"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run, trained through the CLI so that its overrides are recorded."""
    folder = tmp_path_factory.mktemp("use") / "run"
    overrides = [
        *TINY,
        "optimizer.lr=3e-3",
        "train.epochs=3",
        "train.eval_every=6",
        "train.export=best",
        f"hydra.run.dir={folder}",
    ]
    assert cli.run_train(overrides) == 0
    return folder


def test_eval_of_the_export_reproduces_the_logged_metrics(run_dir: Path) -> None:
    record = json.loads((run_dir / "metrics.json").read_text())
    result = evaluation.evaluate_trained(str(run_dir), [])
    best = {k: v for k, v in record["best"].items() if k != "step"}
    assert result["metrics"] == pytest.approx(best, rel=1e-6, abs=1e-6)
    assert result["rows"] == 48 and result["split"] == "validation"
    written = json.loads((run_dir / "eval_metrics.json").read_text())
    assert written["metrics"] == result["metrics"]
    # A checkpoint: the last one holds the weights the final evaluation saw.
    last = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    at_last = evaluation.evaluate_trained(str(last), [])
    assert at_last["metrics"] == pytest.approx(record["final"], rel=1e-6, abs=1e-6)


def test_predict_keeps_rows_in_order_and_agrees_with_eval(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "predicted.csv"
    rows = predict.predict_file(str(run_dir / "model"), VALIDATION, out, [])
    with open(VALIDATION, newline="") as handle:
        source = list(csv.DictReader(handle))
    with open(out, newline="") as handle:
        predicted = list(csv.DictReader(handle))
    assert rows == len(predicted) == len(source) == 200
    assert [r["text"] for r in predicted] == [r["text"] for r in source]
    labels = ("negative", "positive")
    for row in predicted:
        probabilities = [float(row[f"probability_{name}"]) for name in labels]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert row["predicted_label"] == labels[probabilities.index(max(probabilities))]
        assert float(row["predicted_probability"]) == max(probabilities)
    accuracy = sum(r["predicted_label"] == r["label"] for r in predicted) / len(predicted)
    on_file = evaluation.evaluate_trained(str(run_dir), [], file=str(VALIDATION))
    assert on_file["rows"] == 200
    assert accuracy == pytest.approx(on_file["metrics"]["accuracy"], abs=1e-6)  # float32


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".tsv"])
def test_predict_streams_every_format_in_chunks(
    run_dir: Path, tmp_path: Path, monkeypatch, suffix: str
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(VALIDATION, newline="") as handle:
        source = list(csv.DictReader(handle))[:50]
    path = tmp_path / f"input{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in source))
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(source), path)
    else:
        write_csv(path, source, delimiter="\t")
    whole = predict.predict_file(str(run_dir), path, tmp_path / f"whole{suffix}", [])
    monkeypatch.setattr(formats, "CHUNK_ROWS", 7)  # chunk edges must not move any row
    chunked = predict.predict_file(str(run_dir), path, tmp_path / f"chunked{suffix}", [])
    assert whole == chunked == 50
    table, quoted = formats.by_suffix(path, "--input"), compose_spec(["data.quoting=quoted"]).data
    a = list(table.read_rows(tmp_path / f"whole{suffix}", quoted))
    b = list(table.read_rows(tmp_path / f"chunked{suffix}", quoted))
    flat_a, flat_b = [r for c in a for r in c], [r for c in b for r in c]
    assert [r["text"] for r in flat_b] == [r["text"] for r in source]
    for x, y in zip(flat_a, flat_b, strict=True):
        assert x["predicted_label"] == y["predicted_label"]
        assert float(x["predicted_probability"]) == pytest.approx(
            float(y["predicted_probability"]), abs=1e-5
        )


def test_use_errors_are_one_line(run_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad = write_csv(tmp_path / "bad.csv", [{"review": "fine", "label": "positive"}])
    code, err = run_ft(
        ["predict", str(run_dir), "--input", str(bad), "--output", str(tmp_path / "o.csv")], capsys
    )
    assert code == 2
    assert err.strip().splitlines() == [
        "ft: error: ft predict: data.text_column: column 'text' is not in the input; its columns"
        " are: review, label (set data.text_column=NAME)"
    ]
    assert not (tmp_path / "o.csv").exists()
    code, err = run_ft(
        ["predict", str(run_dir), "--input", str(bad), "data.text_column=review"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "bad.predictions.csv").is_file()
    code, err = run_ft(["eval", str(tmp_path)], capsys)
    assert code == 2
    assert "holds no ft run, exported model" in err
    code, err = run_ft(["eval", str(run_dir), "--split", "test"], capsys)
    assert code == 2
    assert "--split test: the run's data has no such split; splits: train, validation" in err
