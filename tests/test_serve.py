"""`ft serve`: a real server on localhost, compared with `ft predict`, batched, refusing bad
requests in 4xx and draining on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY, write_csv

from ft_cli import cli

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

PAIRS = [
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ("Stocks fell sharply today.", "The weather was sunny."),
    ("He bought a new car.", "He purchased a new automobile."),
    ("The meeting is at noon.", "Nobody likes rainy days."),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(target: Path, *flags: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`ft serve TARGET` in its own process, once /health answers."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ft_cli", "serve", str(target), "--port", str(port), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read()
            with contextlib.suppress(OSError):
                if call(url, "/health")[0] == 200:
                    break
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def call(url: str, path: str, body: bytes | dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _predicted(run: Path, rows: list[dict], tmp_path: Path, *flags: str) -> list[dict]:
    """What `ft predict` writes for the rows: their prediction columns."""
    source = write_csv(tmp_path / "input.csv", rows)
    target = tmp_path / "predicted.jsonl"
    args = [str(run), "--input", str(source), "--output", str(target), *flags]
    assert cli._run_tool("predict", args) == 0
    written = [json.loads(line) for line in target.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in rows[0]} for row in written]


def _same(served: list[dict], predicted: list[dict]) -> None:
    assert [r["predicted_label"] for r in served] == [r["predicted_label"] for r in predicted]
    for mine, theirs in zip(served, predicted, strict=True):
        assert mine.keys() == theirs.keys()
        assert all(abs(mine[k] - theirs[k]) < 1e-5 for k in mine if k.startswith("probab"))


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory) -> Path:
    """A tiny sentence-pair classifier (2 steps)."""
    folder = tmp_path_factory.mktemp("pairs")
    rows = [{"s1": a, "s2": b, "label": i % 2} for i, (a, b) in enumerate(PAIRS * 8)]
    train = write_csv(folder / "train.csv", rows)
    run = folder / "run"
    assert (
        cli.run_train(
            [
                *TINY,
                "data=csv",
                f"data.files.train={train}",
                f"data.files.validation={train}",
                "data.text_column=s1",
                "data.text_pair_column=s2",
                "train.max_steps=2",
                f"hydra.run.dir={run}",
            ]
        )
        == 0
    )
    return run


@pytest.mark.slow
def test_a_pair_model_served_answers_as_ft_predict_batches_refuses_and_drains(
    pair_run: Path, tmp_path: Path
) -> None:
    rows = [{"s1": a, "s2": b} for a, b in PAIRS]
    predicted = _predicted(pair_run, rows, tmp_path)
    flags = ("--max-wait-ms", "300", "--max-items", "8", "--max-chars", "200")
    with serving(pair_run, *flags) as (url, process):
        code, one = call(url, "/predict", {"text": PAIRS[2][0], "text_pair": PAIRS[2][1]})
        assert code == 200
        _same([one["prediction"]], predicted[2:3])
        code, many = call(url, "/predict", {"pairs": [list(p) for p in PAIRS]})
        assert code == 200
        _same(many["predictions"], predicted)
        code, given = call(url, "/predict", {"rows": rows})
        _same(given["predictions"], predicted)
        code, info = call(url, "/info")
        assert info["task"] == "classification" and info["inputs"] == {
            "text": "s1",
            "text_pair": "s2",
        }
        assert info["labels"] == ["0", "1"] and "trained with ft" in info["model_card"]

        # Each bad request gets its 4xx and one line; the next good one is answered.
        bad = [
            (b'{"pairs": [["a", "b"]', 400, "the body is not JSON"),
            ({}, 422, "send one of: text (with text_pair for a pair model), texts, pairs or rows"),
            ({"texts": ["a", "b"]}, 422, "this model reads sentence pairs: send pairs"),
            ({"text": "a"}, 422, "this model reads sentence pairs: send text and text_pair"),
            ({"pairs": [["a"]]}, 422, "pairs.0: expected a pair [text, text_pair], got a list"),
            ({"pairs": [["a", 7]]}, 422, "pairs.0.1: expected a string, got a number"),
            ({"pairs": [["a", "b"]] * 9}, 413, "pairs: 9 items; at most 8 a request"),
            ({"text": "a" * 201, "text_pair": "b"}, 413, "text: longer than 200 characters"),
            ({"rows": [{"s1": "a"}]}, 422, "rows.0: no 's2' (the model reads s1, s2)"),
            ({"sentences": ["a"]}, 422, "unknown field 'sentences'"),
        ]
        for body, status, message in bad:
            code, answer = call(url, "/predict", body)
            assert (code, answer["error"][: len(message)]) == (status, message), body
            assert call(url, "/predict", {"pairs": [list(PAIRS[0])]})[0] == 200

        # A body longer than the limit is refused by its declared length, before it is read.
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: 1000001\r\n\r\n" + b"x" * 1000
            )
            answer = b""
            while b"at most" not in answer and (chunk := raw.recv(4096)):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 413") and b"at most 1000000" in answer
        assert call(url, "/predict", {"pairs": [list(PAIRS[0])]})[0] == 200

        # 12 concurrent requests, twice: the queue batches them; the second time SIGTERM
        # comes once all have arrived, and every one is still answered.
        answers: list[tuple[int, dict]] = []

        def ask(index: int) -> None:
            answers.append(call(url, "/predict", {"pairs": [list(PAIRS[index % 4])]}))

        for stop in (False, True):
            before = call(url, "/stats")[1]["requests"]
            threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
            for thread in threads:
                thread.start()
            while call(url, "/stats")[1]["requests"] < before + 12:
                time.sleep(0.01)
            if stop:
                process.send_signal(signal.SIGTERM)
            for thread in threads:
                thread.join(timeout=60)
            if not stop:
                batch_rows = call(url, "/stats")[1]["batch_rows"]
                assert max(int(rows) for rows in batch_rows) > 1, batch_rows
        assert [code for code, _ in answers] == [200] * 24
        assert process.wait(timeout=60) == 0
        output = process.stdout.read()
        assert "stopped on SIGTERM, every request answered" in output
        assert "Traceback" not in output


@pytest.mark.slow
def test_the_onnx_export_is_served_like_ft_predict_with_onnxruntime(
    exported_tiny: Path, tmp_path: Path
) -> None:
    texts = ["a gripping and funny film", "dull", "I would not watch it again", "superb"]
    predicted = _predicted(
        exported_tiny, [{"text": t} for t in texts], tmp_path, "--backend", "onnxruntime"
    )
    with serving(exported_tiny / "onnx") as (url, _):
        assert call(url, "/info")[1]["backend"] == "onnxruntime"
        code, answer = call(url, "/predict", {"texts": texts})
        assert code == 200
        _same(answer["predictions"], predicted)
        assert (
            call(url, "/predict", {"text": texts[0]})[1]["prediction"] == answer["predictions"][0]
        )


def test_serve_flags_and_a_taken_port_get_one_line(tmp_path: Path, capsys) -> None:
    cases = [
        (["--port", "http"], "--port http: give a port number from 0 to 65535"),
        (["--max-batch", "0"], "--max-batch 0: give a positive whole number"),
        (["--backend", "tensorrt"], "--backend tensorrt: use torch, onnxruntime"),
        (["--host", "999.1.1.1"], "--host 999.1.1.1: not an address or host name this machine"),
        (["--host", "192.0.2.77"], "--host 192.0.2.77: not an address of this machine"),
        (["--max-megapixels", "x"], "--max-megapixels x: give a positive whole number"),
        (["--read-timeout-s", "0"], "--read-timeout-s 0: give a positive whole number"),
    ]
    for flags, message in cases:
        assert cli._run_tool("serve", [str(tmp_path), *flags]) == 2
        assert capsys.readouterr().err.startswith(f"ft: error: ft serve: {message}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert cli._run_tool("serve", [str(tmp_path), "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--port {port}: cannot listen there" in err


def test_a_missing_server_library_names_the_install_command(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    assert cli._run_tool("serve", [str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "ft: error: ft serve: uvicorn is not installed: pip install 'ft-cli[serve]'"
        " (from a checkout: pip install -e '.[serve]')\n"
    )


@pytest.mark.slow
def test_an_image_model_answers_base64_images_as_ft_predict_does(tmp_path: Path) -> None:
    import base64
    import csv

    from ft_cli.assets import shapes

    run = tmp_path / "run"
    assert (
        cli.run_train(
            [
                "+recipe=demo_images",
                "train.max_steps=2",
                "data.max_train_samples=32",
                "data.max_eval_samples=16",
                f"hydra.run.dir={run}",
            ]
        )
        == 0
    )
    folder = tmp_path / "some"
    for shape in ("circle", "square"):
        (folder / shape).mkdir(parents=True)
        for path in sorted((shapes.ensure("shapes") / "validation" / shape).glob("*.png"))[:3]:
            (folder / shape / path.name).write_bytes(path.read_bytes())
    target = tmp_path / "predicted.csv"
    assert (
        cli._run_tool("predict", [str(run), "--input", str(folder), "--output", str(target)]) == 0
    )
    with open(target, newline="") as handle:
        written = list(csv.DictReader(handle))
    encoded = [base64.b64encode((folder / row["image"]).read_bytes()).decode() for row in written]
    with serving(run) as (url, _):
        code, answer = call(url, "/predict", {"images": encoded})
        assert code == 200
        for served, row in zip(answer["predictions"], written, strict=True):
            assert served["predicted_label"] == row["predicted_label"]
            assert abs(served["predicted_probability"] - float(row["predicted_probability"])) < 1e-5
        assert (
            call(url, "/predict", {"image": encoded[0]})[1]["prediction"]["predicted_label"]
            == (written[0]["predicted_label"])
        )
        bad = [
            ({"image": "%%%"}, "image: not base64"),
            (
                {"images": [encoded[0], base64.b64encode(b"text").decode()]},
                "images.1: not a readable image (cannot identify image file)",
            ),
            ({"text": "a circle"}, "send one of: image (an image file, base64) or images"),
        ]
        for body, message in bad:
            code, answer = call(url, "/predict", body)
            assert (code, answer["error"][: len(message)]) == (422, message)
        assert call(url, "/info")[1]["limits"]["max_body"] == 16_000_000


def _raw(url: str, data: bytes, wait: float = 30) -> bytes:
    """Send raw bytes over one connection; whatever comes back before it closes (or `wait`)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as raw:
        raw.sendall(data)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := raw.recv(4096):
                answer += chunk
    return answer


@pytest.mark.slow
def test_a_poisoned_batch_and_stalled_clients_harm_no_one(exported_tiny: Path) -> None:
    with serving(exported_tiny, "--read-timeout-s", "2", "--max-wait-ms", "200") as (url, process):
        # One input the tokenizer cannot read among 15 good ones sent at once: the bad one
        # gets its 422, every neighbour its answer.
        poison = b'{"text": "broken \\ud800 text"}'
        answers: dict[int, tuple[int, dict]] = {}

        def ask(index: int) -> None:
            body = poison if index == 7 else {"text": f"a fine kettle number {index}"}
            answers[index] = call(url, "/predict", body)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert [answers[i][0] for i in range(16)] == [200] * 7 + [422] + [200] * 8
        assert "not valid Unicode (a lone surrogate" in answers[7][1]["error"]
        # Parser limits, unknown paths and chunked bodies answer in the same one-line JSON.
        code, answer = call(url, "/predict", b"[" * 50_000 + b"]" * 50_000)
        assert (code, answer["error"]) == (400, "the body is not JSON ft reads: nested too deeply")
        code, answer = call(url, "/nowhere", None)
        assert (code, answer) == (404, {"error": "Not Found"})
        chunk = b"x" * 100_000
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(12))
        answer = _raw(
            url,
            b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n" + chunked + b"0\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 413") and b"request body over 1000000 bytes" in answer
        code, answer = call(url, "/predict", {"text": ["great", "kettle"]})
        assert (
            code == 422 and "a list of words is for a token-classification model" in answer["error"]
        )
        # Clients that stall in their headers or body are cut after the read timeout.
        stalled = []
        host, port = url.removeprefix("http://").split(":")
        for index in range(40):
            raw = socket.create_connection((host, int(port)), timeout=30)
            raw.sendall(
                b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"te'
                if index % 2
                else b"POST /predict HTTP/1.1\r\nHo"
            )
            stalled.append(raw)
        assert call(url, "/predict", {"text": "still served"})[0] == 200
        started = time.monotonic()
        cut = [raw.recv(4096) for raw in stalled]
        assert time.monotonic() - started < 20
        assert all(c == b"" or c.startswith(b"HTTP/1.1 408") for c in cut)
        assert sum(c.startswith(b"HTTP/1.1 408") for c in cut) == 20
        for raw in stalled:
            raw.close()
        # SIGTERM with fresh stalled clients open: a bounded, quiet exit.
        late = [socket.create_connection((host, int(port))) for _ in range(20)]
        for raw in late:
            raw.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        time.sleep(0.2)
        stats = call(url, "/stats")[1]
        assert stats["refused"] >= 5 and stats["failed"] == 0
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
        assert time.monotonic() - started < 40
        output = process.stdout.read()
        assert "stopped on SIGTERM, every request answered" in output
        assert "Traceback" not in output and "ERROR" not in output
        for raw in late:
            raw.close()


def test_requests_are_checked_alone_and_a_failed_batch_is_retried_one_by_one() -> None:
    import asyncio

    from ft_cli.deploy import serving

    seen: list[int] = []

    def predict(rows: list[dict]) -> list[dict]:
        seen.append(len(rows))
        if any(row["text"] == "poison" for row in rows):
            raise RuntimeError("the model choked")
        return [{"length": len(row["text"])} for row in rows]

    async def scenario() -> list:
        batcher = serving.Batcher(predict, serving.Limits(max_wait=0.2), serving.Stats())
        batcher.start()
        texts = ["one", "poison", "three"]
        asks = [batcher.submit([{"text": text}]) for text in texts]
        results = await asyncio.gather(*asks, return_exceptions=True)
        await batcher.stop()
        return results

    first, broken, third = asyncio.run(scenario())
    assert first == [{"length": 3}] and third == [{"length": 5}]
    assert isinstance(broken, RuntimeError)
    assert seen == [3, 1, 1, 1]  # the batch of three, then each request alone


def test_request_shapes_and_images_are_checked_before_they_queue() -> None:
    import base64
    import io

    from PIL import Image

    from ft_cli import inputs
    from ft_cli.deploy.serving import Limits
    from ft_cli.inputs.base import RequestError

    def request_rows(body: dict, columns: dict, limits: Limits, words: bool = False):
        return inputs.get("image" if "image" in columns else "text").request_rows(
            body, columns, limits, words
        )

    def refused(body: dict, columns: dict, limits: Limits | None = None, words: bool = False):
        with pytest.raises(RequestError) as raised:
            request_rows(body, columns, limits or Limits(), words)
        return raised.value.status, str(raised.value)

    text = {"text": "sentence"}
    assert refused({"texts": [["a", "b"]]}, text) == (
        422,
        "texts.0: expected a string (a list of words is for a token-classification model),"
        " got a list",
    )
    assert request_rows({"texts": [["a", "b"]]}, text, Limits(), True)[0] == [
        {"sentence": ["a", "b"]}
    ]
    status, message = refused({"text": "bad \ud800"}, text)
    assert status == 422 and "not valid Unicode (a lone surrogate at character 4)" in message
    status, message = refused({"texts": ["ok", ["fine", "x\udcff"]]}, text, words=True)
    assert status == 422 and message.startswith("texts.1.1: not valid Unicode")

    def encoded(image: Image.Image, cut: int = 0) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        return base64.b64encode(data[: len(data) - cut] if cut else data).decode()

    picture = {"image": "image"}
    noisy = Image.effect_noise((64, 64), 80).convert("RGB")
    assert len(request_rows({"image": encoded(noisy)}, picture, Limits())[0]) == 1
    status, message = refused({"image": encoded(noisy, cut=2000)}, picture)
    assert status == 422 and message.startswith("image: not a readable image")
    big = Image.new("RGB", (3000, 2000))  # compresses to a few KB
    status, message = refused(
        {"images": [encoded(noisy), encoded(big)]}, picture, Limits(max_pixels=5_000_000)
    )
    assert (status, message) == (413, "images.1: 6.0 megapixels; at most 5 an image")
