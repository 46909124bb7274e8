"""A new kind of input and a new task are one module each plus a line in each table:
a toy plug-in (rows of four numbers, classified by a small MLP of its own) runs
through ft train, eval, predict, export and serve with nothing else in ft_cli changed."""

from __future__ import annotations

import csv
import json
import random
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ft_cli import cli


@pytest.fixture
def registered(monkeypatch) -> None:
    from ft_cli import inputs, tasks

    monkeypatch.setitem(inputs.MODALITIES, "numbers", "toy_plugin.numbers")
    info = tasks.TaskInfo("toy_plugin.numbers", ("accuracy", "f1", "loss"), "numbers")
    monkeypatch.setitem(tasks.TASKS, "number_classification", info)


def _rows(count: int, seed: int) -> list[dict]:
    draw = random.Random(seed)
    rows = []
    for _ in range(count):
        numbers = [round(draw.gauss(0, 1), 3) for _ in range(4)]
        label = "up" if numbers[0] + numbers[1] - numbers[2] > 0 else "down"
        rows.append({"numbers": " ".join(map(str, numbers)), "label": label})
    return rows


def _write(path: Path, rows: list[dict]) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.mark.slow
def test_a_registered_modality_and_task_train_eval_predict_export_and_serve(
    registered: None, tmp_path: Path
) -> None:
    train = _write(tmp_path / "train.csv", _rows(256, 0))
    validation = _write(tmp_path / "validation.csv", _rows(64, 1))
    run = tmp_path / "run"
    overrides = [
        "task.kind=number_classification",
        "data=csv",
        f"data.files.train={train}",
        f"data.files.validation={validation}",
        "data.text_column=numbers",
        "model=tiny_bert",
        "train.epochs=8",
        "train.batch_size=16",
        "optimizer.lr=3e-2",
        "hardware.precision=fp32",
        f"hydra.run.dir={run}",
    ]
    assert cli.run_train(overrides) == 0
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["best"]["accuracy"] > 0.85  # a linear rule: the MLP learns it

    assert cli._run_tool("eval", [str(run), "--file", validation]) == 0

    predicted = tmp_path / "predicted.csv"
    assert (
        cli._run_tool("predict", [str(run), "--input", validation, "--output", str(predicted)]) == 0
    )
    with open(predicted) as handle:
        out = list(csv.DictReader(handle))
    right = sum(row["predicted_label"] == row["label"] for row in out)
    assert right / len(out) > 0.85

    pytest.importorskip("onnxruntime")
    assert cli._run_tool("export", [str(run)]) == 0
    assert (run / "onnx" / "model.onnx").is_file()

    pytest.importorskip("uvicorn")
    from ft_cli.commands import serve
    from ft_cli.deploy import serving

    served, _ = serve.load(str(run), None, None, [], 8)
    limits = serving.Limits()
    import uvicorn

    app = serving.build_app(served, limits)
    server = uvicorn.Server(uvicorn.Config(app, port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        first = out[0]
        answer = _post(port, {"numbers": [float(n) for n in first["numbers"].split()]})
        assert answer["prediction"]["predicted_label"] == first["predicted_label"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(port, {"numbers": [1, 2]})
        assert refused.value.code == 422
        listed = _post(port, {"rows": [[0, 0, 0, 1], [1, 1, 0, 0]]})["predictions"]
        assert [row["predicted_label"] for row in listed] == ["down", "up"]
    finally:
        server.should_exit = True
        thread.join(10)


def _post(port: int, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
