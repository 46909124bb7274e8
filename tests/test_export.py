"""ft export --format onnx: the graph answers as torch does, at any batch and length."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ft_cli import cli
from ft_cli.errors import FtError

pytest.importorskip("onnxruntime")

TINY = ["model=tiny_bert", "data.max_length=32", "train.batch_size=16", "hardware.precision=fp32",
        "optimizer.lr=3e-3"]  # fmt: skip
TASKS = {
    "classification": ["data=demo", "data.max_train_samples=64", "data.max_eval_samples=40"],
    "token_classification": ["data=demo_ner", "task=token_classification",
                             "data.max_train_samples=64", "data.max_eval_samples=40"],
}  # fmt: skip


def trained(tmp_path: Path, extra: list[str]) -> Path:
    run = tmp_path / "run"
    assert cli.run_train([*TINY, *extra, "train.max_steps=3", f"hydra.run.dir={run}"]) == 0
    return run


def session(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_onnx_logits_equal_torch_for_any_batch_and_length(tmp_path: Path, task: str,
                                                          request) -> None:  # fmt: skip
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    if task == "classification":
        run = request.getfixturevalue("exported_tiny")
    else:
        run = trained(tmp_path, TASKS[task])
        assert cli._run_tool("export", [str(run)]) == 0
    record = json.loads((run / "onnx" / "onnx.json").read_text())
    assert record["format"] == "ft-onnx/2" and record["opset"] == 18
    assert record["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert record["checks"]["onnx fp32"]["max_diff"] < 1e-4
    assert record["checks"]["onnx fp32"]["metrics"] == pytest.approx(
        record["checks"]["torch"]["metrics"], abs=1e-4
    )
    auto = (
        AutoModelForTokenClassification
        if task != "classification"
        else AutoModelForSequenceClassification
    )
    net = auto.from_pretrained(run / "model").eval()
    graph = session(run / "onnx" / "model.onnx")
    rng = np.random.default_rng(0)
    for rows, length in [(1, 3), (17, 128), (17, 3), (1, 128)]:
        ids = torch.from_numpy(rng.integers(5, 100, (rows, length)))
        mask = torch.ones_like(ids)
        mask[0, max(length // 2, 2) :] = 0  # a padded row
        types = torch.zeros_like(ids)
        with torch.no_grad():
            expected = net(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = graph.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                               "token_type_ids": types.numpy()})[0]  # fmt: skip
        assert got.shape == tuple(expected.shape)
        assert np.abs(got - expected.numpy()).max() < 1e-4, (rows, length)
    assert (run / "onnx" / "tokenizer_config.json").is_file()
    labels = json.loads((run / "onnx" / "config.json").read_text())["id2label"]
    assert list(labels.values()) == record["labels"]
    # ft predict --backend onnxruntime writes what the torch path writes.
    source = Path(__file__).resolve().parent.parent / "ft_cli" / "assets"
    source = source / (
        "demo/validation.csv" if task == "classification" else "ner/validation.conll"
    )
    if task != "classification":
        return  # conll input is not a prediction format; tagging is checked above
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        target = tmp_path / f"{backend}.jsonl"
        assert cli._run_tool("predict", [str(run), "--input", str(source), "--output", str(target),
                                          "--backend", backend]) == 0  # fmt: skip
        outputs[backend] = [json.loads(line) for line in target.read_text().splitlines()]
    torch_rows, onnx_rows = outputs["torch"], outputs["onnxruntime"]
    assert [r["predicted_label"] for r in onnx_rows] == [r["predicted_label"] for r in torch_rows]
    assert max(abs(a["predicted_probability"] - b["predicted_probability"])
               for a, b in zip(torch_rows, onnx_rows, strict=True)) < 1e-5  # fmt: skip


@pytest.mark.slow
def test_int8_copy_keeps_the_demo_models_accuracy(tmp_path: Path) -> None:
    """The packaged MiniLM after a short demo run; int8 within 0.05 accuracy of fp32."""
    run = tmp_path / "demo"
    assert cli.run_train(["+recipe=demo", "train.max_steps=60", "hardware.precision=fp32",
                          f"hydra.run.dir={run}"]) == 0  # fmt: skip
    assert cli._run_tool("export", [str(run), "--quantize", "int8"]) == 0
    checks = json.loads((run / "onnx" / "onnx.json").read_text())["checks"]
    fp32, int8 = checks["onnx fp32"]["metrics"], checks["onnx int8"]["metrics"]
    assert fp32["accuracy"] == pytest.approx(checks["torch"]["metrics"]["accuracy"])
    assert abs(int8["accuracy"] - fp32["accuracy"]) <= 0.05
    assert (run / "onnx" / "model.int8.onnx").stat().st_size < 0.5 * (
        run / "onnx" / "model.onnx"
    ).stat().st_size


@pytest.mark.slow
def test_an_export_that_strays_from_torch_is_refused_and_nothing_written(
    tmp_path, monkeypatch, exported_tiny
):
    from ft_cli.deploy import onnx_export

    run, target = exported_tiny, tmp_path / "graph"
    monkeypatch.setattr(onnx_export, "TOLERANCE", 0.0)  # any float difference now counts
    real = onnx_export.check

    def off_by_some(ready, variants):
        found = real(ready, variants)
        found["onnx fp32"].max_diff += 1e-6
        return found

    monkeypatch.setattr(onnx_export, "check", off_by_some)
    with pytest.raises(
        FtError, match=r"differ from torch's by .* on the validation split; nothing written$"
    ):
        from ft_cli.commands import export

        export.main([str(run), "--output", str(target)])
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".graph")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite"], "--format tflite: the one export format is onnx"),
        (["--quantize", "int4"], "--quantize int4: the one quantization is int8"),
        (["--opset", "9"], "--opset 9: give an ONNX opset from 14 to 23"),
    ],
)
def test_bad_export_flags_get_one_line(
    tmp_path: Path, args: list[str], message: str, capsys
) -> None:
    assert cli._run_tool("export", [str(tmp_path), *args]) == 2
    assert capsys.readouterr().err.strip() == f"ft: error: ft export: {message}"


@pytest.mark.slow
def test_predict_with_onnxruntime_needs_an_export(tmp_path: Path, capsys) -> None:
    run = trained(tmp_path, TASKS["classification"])
    source = (
        Path(__file__).resolve().parent.parent / "ft_cli" / "assets" / "demo" / "validation.csv"
    )
    assert cli._run_tool("predict", [str(run), "--input", str(source), "--backend",
                                     "onnxruntime-int8"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == (
        f"ft: error: ft predict: --backend onnxruntime-int8: no model.int8.onnx in {run / 'onnx'};"
        f" export it first with ft export {run} --format onnx --quantize int8"
    )


def test_masked_lm_is_not_exported(tmp_path: Path, capsys) -> None:
    run = trained(tmp_path, ["data=demo", "task=mlm", "data.max_train_samples=32",
                             "data.max_eval_samples=16"])  # fmt: skip
    assert cli._run_tool("export", [str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "ft: error: ft export: task=mlm is not exported (its output is not one fixed-shape head)"
    )


def test_a_missing_library_names_the_install_command(monkeypatch) -> None:
    import importlib.util

    from ft_cli.deploy import onnx_export

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))  # fmt: skip
    with pytest.raises(
        FtError, match=r"^ft export --format onnx needs onnxscript: pip install 'ft-cli\[onnx\]'"
    ):
        onnx_export.require_onnx()


def _regression_data(folder: Path) -> list[str]:
    import csv

    rows = [{"text": f"{word} film {i}", "label": float(i % 5) / 4}
            for i, word in enumerate(["good", "bad", "fine", "dull"] * 12)]  # fmt: skip
    with open(folder / "scores.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return ["data=csv", f"data.files.train={folder / 'scores.csv'}",
            f"data.files.validation={folder / 'scores.csv'}", "task=regression"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("task", ["regression", "image_classification", "multitask"])
def test_the_other_fixed_head_tasks_export_within_1e4_of_torch(tmp_path: Path, task: str) -> None:
    """The export's own check (validation split, torch fp32 next to onnxruntime) for the tasks
    not compared above: regression, images, one task of a multi-task run."""
    extra = {
        "regression": lambda: _regression_data(tmp_path),
        "image_classification": lambda: ["+recipe=demo_images", "data.max_train_samples=48",
                                         "data.max_eval_samples=24"],
        "multitask": lambda: ["+recipe=demo_multitask", "model=tiny_bert"],
    }[task]()  # fmt: skip
    run = tmp_path / "run"
    settings = ["train.batch_size=16", "hardware.precision=fp32", "train.max_steps=3"]
    if task != "image_classification":
        settings += ["model=tiny_bert", "data.max_length=32"] if task == "regression" else []
    assert cli.run_train([*extra, *settings, f"hydra.run.dir={run}"]) == 0
    flags = ["--task", "sentiment"] if task == "multitask" else []
    assert cli._run_tool("export", [str(run), *flags]) == 0
    folder = run / ("onnx-sentiment" if task == "multitask" else "onnx")
    record = json.loads((folder / "onnx.json").read_text())
    assert record["checked_rows"] > 0
    assert record["checks"]["onnx fp32"]["max_diff"] < 1e-4
    assert record["checks"]["onnx fp32"]["metrics"] == pytest.approx(
        record["checks"]["torch"]["metrics"], abs=1e-4
    )
    expected_inputs = ["pixel_values"] if task == "image_classification" else ["input_ids"]
    assert record["inputs"][: len(expected_inputs)] == expected_inputs
