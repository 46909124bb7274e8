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

TINY = [
    "model=tiny_bert",
    "data.max_length=32",
    "train.batch_size=16",
    "hardware.precision=fp32",
    "optimizer.lr=3e-3",
]
TASKS = {
    "classification": ["data=demo", "data.max_train_samples=64", "data.max_eval_samples=40"],
    "token_classification": [
        "data=demo_ner",
        "task=token_classification",
        "data.max_train_samples=64",
        "data.max_eval_samples=40",
    ],
}


def trained(tmp_path: Path, extra: list[str]) -> Path:
    run = tmp_path / "run"
    assert cli.run_train([*TINY, *extra, "train.max_steps=3", f"hydra.run.dir={run}"]) == 0
    return run


def session(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_onnx_logits_equal_torch_for_any_batch_and_length(
    tmp_path: Path, task: str, request
) -> None:
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
        got = graph.run(
            None,
            {
                "input_ids": ids.numpy(),
                "attention_mask": mask.numpy(),
                "token_type_ids": types.numpy(),
            },
        )[0]
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
        assert (
            cli._run_tool(
                "predict",
                [str(run), "--input", str(source), "--output", str(target), "--backend", backend],
            )
            == 0
        )
        outputs[backend] = [json.loads(line) for line in target.read_text().splitlines()]
    torch_rows, onnx_rows = outputs["torch"], outputs["onnxruntime"]
    assert [r["predicted_label"] for r in onnx_rows] == [r["predicted_label"] for r in torch_rows]
    assert (
        max(
            abs(a["predicted_probability"] - b["predicted_probability"])
            for a, b in zip(torch_rows, onnx_rows, strict=True)
        )
        < 1e-5
    )


@pytest.mark.slow
def test_int8_copy_keeps_the_demo_models_accuracy(tmp_path: Path) -> None:
    """The packaged MiniLM after a short demo run; int8 within 0.05 accuracy of fp32.

    Trained as the recipe says (bf16 where the CPU has it natively): the export and its
    checks are in fp32 either way."""
    run = tmp_path / "demo"
    # Evaluated and saved once, at the end (the recipe does so each epoch, here at step 50).
    # Shorter runs (40 steps at twice the rate, 128 rows checked) left int8 0.055 behind
    # on one machine: the whole validation split and the recipe's rate keep it within.
    once = ["train.eval_every=1000000", "train.save_every=1000000"]
    assert cli.run_train(["+recipe=demo", "train.max_steps=60", *once, f"hydra.run.dir={run}"]) == 0
    assert cli._run_tool("export", [str(run), "--quantize", "int8"]) == 0
    checks = json.loads((run / "onnx" / "onnx.json").read_text())["checks"]
    fp32, int8 = checks["onnx fp32"]["metrics"], checks["onnx int8"]["metrics"]
    assert fp32["accuracy"] == pytest.approx(checks["torch"]["metrics"]["accuracy"])
    assert fp32["accuracy"] > 0.8, fp32  # a trained model: quantization has something to lose
    # Accuracies are float32 fractions of the 200 rows: 10 rows apart reads 0.05000001.
    assert abs(int8["accuracy"] - fp32["accuracy"]) <= 0.05 + 1e-6
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
    assert (
        cli._run_tool(
            "predict", [str(run), "--input", str(source), "--backend", "onnxruntime-int8"]
        )
        == 2
    )
    assert capsys.readouterr().err.strip() == (
        f"ft: error: ft predict: --backend onnxruntime-int8: no model.int8.onnx in {run / 'onnx'};"
        f" export it first with ft export {run} --format onnx --quantize int8"
    )


@pytest.mark.slow
def test_masked_lm_is_not_exported(tmp_path: Path, capsys) -> None:
    run = trained(
        tmp_path, ["data=demo", "task=mlm", "data.max_train_samples=32", "data.max_eval_samples=16"]
    )
    assert cli._run_tool("export", [str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "ft: error: ft export: task=mlm is not exported (its output is not one fixed-shape head)"
    )


def test_a_missing_library_names_the_install_command(monkeypatch) -> None:
    import importlib.util

    from ft_cli.deploy import onnx_export

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxscript" else real(name, *a),
    )
    with pytest.raises(
        FtError, match=r"^ft export --format onnx needs onnxscript: pip install 'ft-cli\[onnx\]'"
    ):
        onnx_export.require_onnx()


def _regression_data(folder: Path) -> list[str]:
    import csv

    rows = [
        {"text": f"{word} film {i}", "label": float(i % 5) / 4}
        for i, word in enumerate(["good", "bad", "fine", "dull"] * 12)
    ]
    with open(folder / "scores.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return [
        "data=csv",
        f"data.files.train={folder / 'scores.csv'}",
        f"data.files.validation={folder / 'scores.csv'}",
        "task=regression",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["regression", "image_classification", "multitask"])
def test_the_other_fixed_head_tasks_export_within_1e4_of_torch(tmp_path: Path, task: str) -> None:
    """The export's own check (validation split, torch fp32 next to onnxruntime) for the tasks
    not compared above: regression, images, one task of a multi-task run."""
    extra = {
        "regression": lambda: _regression_data(tmp_path),
        "image_classification": lambda: [
            "+recipe=demo_images",
            "data.max_train_samples=48",
            "data.max_eval_samples=24",
        ],
        "multitask": lambda: ["+recipe=demo_multitask", "model=tiny_bert"],
    }[task]()
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


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "ft.log"
    }


def _refused(args: list[str], capsys, expected: str) -> None:
    capsys.readouterr()
    assert cli._run_tool("export", args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and expected in err, err


@pytest.mark.slow
def test_export_writes_only_into_new_empty_or_its_own_folders(
    exported_tiny: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported_tiny, run)
    before = _files(run)
    _refused([str(run), "--output", str(run)], capsys, "holds files ft export did not write")
    _refused([str(run), "--output", str(run / "model")], capsys, "did not write")
    _refused([str(run), "--output", str(run / "config.yaml")], capsys, "is a file")
    _refused([str(run)], capsys, "already holds an ONNX export (the final model); replace it")
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    _refused([str(run), "--output", str(other)], capsys, "(keep.txt, ...)")
    (run / "onnx" / "notes.txt").write_text("mine too")
    _refused([str(run), "--overwrite"], capsys, "files it did not write (notes.txt)")
    (run / "onnx" / "notes.txt").unlink()
    assert _files(run) == before and (other / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_the_record_ties_an_export_to_its_weights_and_files(exported_tiny: Path) -> None:
    from ft_cli.deploy import export_folder
    from ft_cli.host import sha256
    from ft_cli.models import trained as located

    record = json.loads((exported_tiny / "onnx" / "onnx.json").read_text())
    found = located.locate(str(exported_tiny))
    assert record["weights"] == export_folder.weights_identity(found)
    assert record["weights"]["checkpoint_step"] is None
    assert record["weights"]["files"] == ["model.safetensors"]
    written = sorted(p.name for p in (exported_tiny / "onnx").iterdir() if p.name != "onnx.json")
    assert sorted(record["hashes"]) == written
    for name, digest in record["hashes"].items():
        assert sha256(exported_tiny / "onnx" / name) == digest


def _predict_onnx(run: Path, tmp_path: Path, capsys, backend: str = "onnxruntime") -> tuple:
    source = Path(__file__).resolve().parent.parent / "ft_cli" / "assets" / "demo"
    out = tmp_path / "out.csv"
    capsys.readouterr()
    code = cli._run_tool(
        "predict",
        [
            str(run),
            "--input",
            str(source / "validation.csv"),
            "--output",
            str(out),
            "--backend",
            backend,
        ],
    )
    return code, capsys.readouterr().err, out


@pytest.mark.slow
def test_a_damaged_swapped_or_stale_export_is_refused_in_one_line(
    exported_tiny: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(exported_tiny, run)
    graph = run / "onnx" / "model.onnx"
    good = graph.read_bytes()
    cases = {
        "byte flipped": lambda: graph.write_bytes(
            good[:1000] + bytes([good[1000] ^ 255]) + good[1001:]
        ),
        "truncated": lambda: graph.write_bytes(good[: len(good) // 2]),
        "swapped for the int8 graph": lambda: shutil.copy(run / "onnx" / "model.int8.onnx", graph),
    }
    for name, damage in cases.items():
        damage()
        code, err, out = _predict_onnx(run, tmp_path, capsys)
        assert code == 2 and len(err.splitlines()) == 1, (name, err)
        assert "model.onnx does not match the hash in onnx.json" in err, (name, err)
        assert not out.exists()
        graph.write_bytes(good)
    record_path = run / "onnx" / "onnx.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "format": "ft-onnx/1"}))
    code, err, _ = _predict_onnx(run, tmp_path, capsys)
    assert code == 2 and "exported by an older ft that recorded no hashes" in err
    record_path.write_text(json.dumps(record))
    # The run's weights change after the export (trained again, edited): the export is stale.
    weights = run / "model" / "model.safetensors"
    state = load_file(weights)
    first = next(iter(state))
    state[first] = state[first] + 1
    save_file(state, weights, metadata={"format": "pt"})
    code, err, _ = _predict_onnx(run, tmp_path, capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "was exported from other weights (the final model of" in err
    assert f"export it again: ft export {run} --overwrite" in err


@pytest.mark.slow
def test_a_graph_of_another_shape_is_refused_when_loaded(exported_tiny: Path) -> None:
    from ft_cli.deploy.onnx_export import SessionNet

    graph = exported_tiny / "onnx" / "model.onnx"
    with pytest.raises(
        FtError,
        match="takes inputs input_ids, attention_mask, token_type_ids,"
        " but its record says pixel_values",
    ):
        SessionNet(graph, ["pixel_values"], 2)
    net = SessionNet(graph, None, 3)
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(FtError, match="returns 2 scores per row, but the model has 3 labels"):
        net(input_ids=ids, attention_mask=ids, token_type_ids=ids * 0)
    with pytest.raises(FtError, match="takes token_type_ids, which this model's inputs lack"):
        net(input_ids=ids, attention_mask=ids)
    junk = exported_tiny.parent / "junk.onnx"
    junk.write_bytes(b"not a graph")
    with pytest.raises(FtError, match="is not a graph onnxruntime can load"):
        SessionNet(junk)


@pytest.mark.slow
def test_checkpoints_export_beside_the_final_model_and_overwrite_cleans_up(
    exported_tiny: Path, tmp_path: Path, capsys
) -> None:
    import os
    import shutil
    import socket

    from ft_cli.deploy import export_folder

    run = tmp_path / "run"
    shutil.copytree(exported_tiny, run)
    step = sorted((run / "checkpoints").glob("step-*"))[-1]
    # A killed export's staging folder (its process is gone), and a live one's.
    dead, live = run / ".onnx-killed1", run / ".onnx-running"
    for folder, pid in ((dead, 2**22 + 12345), (live, os.getpid())):
        folder.mkdir()
        (folder / export_folder.STAGING_MARK).write_text(
            json.dumps({"pid": pid, "host": socket.gethostname()})
        )
    final = (run / "onnx" / "model.onnx").read_bytes()
    assert cli._run_tool("export", [str(step)]) == 0
    record = json.loads((run / f"onnx-{step.name}" / "onnx.json").read_text())
    assert record["weights"]["checkpoint_step"] == int(step.name.split("-")[1])
    assert (run / "onnx" / "model.onnx").read_bytes() == final  # untouched
    capsys.readouterr()
    assert cli._run_tool("export", [str(run), "--overwrite"]) == 0
    assert f"removed {dead}" in capsys.readouterr().out
    assert not dead.exists() and live.exists()
    assert not (run / "onnx" / "model.int8.onnx").exists()  # the new export has no int8 copy
    assert not [p for p in run.iterdir() if p.name.startswith(".onnx-") and p != live]
    code, err, out = _predict_onnx(step, tmp_path, capsys)
    assert code == 0, err
    torch_out = tmp_path / "torch.csv"
    source = Path(__file__).resolve().parent.parent / "ft_cli" / "assets" / "demo"
    assert (
        cli._run_tool(
            "predict",
            [str(step), "--input", str(source / "validation.csv"), "--output", str(torch_out)],
        )
        == 0
    )
    import csv

    mine = list(csv.DictReader(out.read_text().splitlines()))
    theirs = list(csv.DictReader(torch_out.read_text().splitlines()))
    gap = max(
        abs(float(a["predicted_probability"]) - float(b["predicted_probability"]))
        for a, b in zip(mine, theirs, strict=True)
    )
    assert gap < 1e-5
