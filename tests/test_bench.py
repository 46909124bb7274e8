"""The benchmark scripts run end to end on the tiny model (figures are not asserted)."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
from pathlib import Path

import pytest
from conftest import MRPC, REPO


def run_script(script: str, *args: str) -> str:
    """Run bench/SCRIPT in this process, its sides and ft runs too (FT_BENCH_IN_PROCESS:
    no interpreter and torch start per side; the figures are not asserted); its stdout."""
    path = REPO / "bench" / script
    said = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FT_BENCH_IN_PROCESS", "1")
        patch.setattr(sys, "argv", [str(path), *args])
        with contextlib.redirect_stdout(said):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as done:
                assert done.code in (None, 0), done.code
    return said.getvalue()


def run_bench(script: str, *args: str, trainer: bool = True) -> str:
    """Run bench/SCRIPT on the tiny model and MRPC; its stdout."""
    if not (MRPC / "train.tsv").is_file():
        pytest.skip("../shared/data/glue/MRPC is absent")
    if trainer:
        pytest.importorskip("accelerate")
    return run_script(script, "--tiny", "--data", str(MRPC), *args)


@pytest.mark.slow
def test_compare_hf_quick_on_the_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    stdout = run_bench(
        "compare_hf.py",
        "--quick",
        "--max-steps",
        "3",
        "--max-train-samples",
        "128",
        "--max-eval-samples",
        "64",
        "--json",
        str(out),
    )
    assert "ft / HF" in stdout and "MFU vs bf16 peak" in stdout
    record = json.loads(out.read_text())
    for side in ("ft", "hf"):
        row = record["table"][side]
        assert row["train samples/s"] > 0
        assert 0 <= row["padding (%)"] < 100
        assert row["peak RSS (MiB)"] > 0
        assert record["runs"][side][0]["train_samples"] == 3 * 32


@pytest.mark.slow
def test_compare_mlm_on_the_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    stdout = run_bench("compare_mlm.py", "--max-steps", "3", "--json", str(out))
    assert "ft / HF" in stdout and "train tokens/s" in stdout
    record = json.loads(out.read_text())
    for side in ("ft", "hf"):
        run = record["runs"][side][0]
        assert run["train_samples"] == 3 * 32
        assert run["train_tokens"] == pytest.approx(3 * 32 * 128)  # full blocks, no padding
        assert record["table"][side]["train tokens/s"] > 0


@pytest.mark.slow
def test_compare_clm_on_its_own_data(tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    out = tmp_path / "bench.json"
    stdout = run_script(
        "compare_clm.py", "--epochs", "1", "--max-train-samples", "32", "--json", str(out)
    )
    assert "ft / HF" in stdout and "validation loss (responses)" in stdout
    record = json.loads(out.read_text())
    for side in ("ft", "hf"):
        run = record["runs"][side][0]
        assert run["examples"] == 32 and run["train_seconds"] > 0
        assert 0 < run["eval_loss"] < 20  # next-token loss over the responses, both sides


@pytest.mark.slow
def test_dapt_chain_quick_on_the_tiny_model() -> None:
    stdout = run_bench("dapt_mrpc.py", "--quick", trainer=False)
    assert "MLM then fine-tune" in stdout and "perplexity" in stdout


@pytest.mark.slow
def test_compare_strategies_quick_on_the_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "strategies.json"
    stdout = run_bench(
        "compare_strategies.py",
        "--quick",
        "--only",
        "distill",
        "--json",
        str(out),
        trainer=False,
    )
    assert "Strategies" in stdout
    record = json.loads(out.read_text())
    assert list(record) == ["full", "distill"]  # the teacher runs first
    for row in record.values():
        assert 0 <= row["dev accuracy"] <= 1 and row["peak RSS (MiB)"] > 0
        assert row["trainable parameters"] > 0


@pytest.mark.slow
def test_compare_parallel_on_the_tiny_model() -> None:
    stdout = run_script(
        "compare_parallel.py",
        "--tiny",
        "--steps",
        "3",
        "--batch",
        "8",
        # DDP against one process is tests/test_distributed.py's; a torchrun start saved.
        "--sides",
        "single,fsdp",
    )
    rows = {line.split()[0]: line.split() for line in stdout.splitlines() if line}
    assert {"single", "fsdp"} <= set(rows) and "ddp" not in rows
    # Same global batches on every side: the same model at the end.
    losses = {float(rows[side][-1]) for side in ("single", "fsdp")}
    assert max(losses) - min(losses) < 1e-4


@pytest.mark.slow
def test_compare_multitask_on_the_tiny_model(tmp_path: Path) -> None:
    if not (MRPC.parent / "SST-2" / "train.tsv").is_file():
        pytest.skip("../shared/data/glue is absent")
    out = tmp_path / "multitask.json"
    stdout = run_script(
        "compare_multitask.py",
        "--tiny",
        "--glue",
        str(MRPC.parent),
        "--steps",
        "3",
        "--seeds",
        "1",
        "--json",
        str(out),
        "--only",
        "multi-task",
        "SST-2 alone",
    )
    record = json.loads(out.read_text())
    assert set(record["multi-task"][0]["scores"]) == {"mrpc/f1", "mrpc/accuracy", "sst2/accuracy"}
    assert set(record["SST-2 alone"][0]["scores"]) == {"sst2/accuracy"}
    assert "Multi-task vs single-task" in stdout


@pytest.mark.slow
def test_profile_step_on_the_tiny_model() -> None:
    if not (MRPC / "train.tsv").is_file():
        pytest.skip("../shared/data/glue/MRPC is absent")
    stdout = run_script(
        "profile_step.py",
        "--tiny",
        "--data",
        str(MRPC),
        "--steps",
        "2",
        "--precision",
        "fp32",
    )
    assert "a step's phases" in stdout and "matmul" in stdout


@pytest.mark.slow
def test_deploy_bench_on_the_tiny_model(exported_tiny: Path) -> None:
    stdout = run_script(
        "deploy.py",
        str(exported_tiny),
        "--repeats",
        "1",
        "--singles",
        "4",
    )
    rows = {
        line.split("|")[1].strip(): line
        for line in stdout.splitlines()
        if line.startswith("| ") and "variant" not in line and "---" not in line
    }
    assert {"torch fp32", "onnx fp32", "onnx int8"} <= set(rows)
    accuracy = {name: float(line.split("|")[5]) for name, line in rows.items()}
    assert accuracy["onnx fp32"] == accuracy["torch fp32"]


@pytest.mark.slow
def test_serve_bench_on_the_tiny_model(exported_tiny: Path) -> None:
    stdout = run_script(
        "serve.py",
        str(exported_tiny),
        "--requests",
        "40",
        "--concurrency",
        "8",
    )
    rows = {line[:28].strip(): line[28:].split() for line in stdout.splitlines()[2:]}
    assert set(rows) == {"batched (max 32, 5 ms)", "unbatched (reference)"}
    assert all(float(row[0]) > 0 and row[3] == "0" for row in rows.values())  # req/s, errors
    assert float(rows["unbatched (reference)"][4]) == 1.0  # rows per batch


@pytest.mark.slow
def test_serve_bench_with_bad_requests_mixed_in(exported_tiny: Path) -> None:
    stdout = run_script(
        "serve.py",
        str(exported_tiny),
        "--requests",
        "100",
        "--concurrency",
        "40",
        "--bad-share",
        "0.1",
    )
    rows = {line[:28].strip(): line[28:].split() for line in stdout.splitlines()[2:]}
    assert set(rows) == {"clean (reference)", "10% bad mixed in"}
    # req/s, p50, p99, errors (a good request not 200, a bad one not 4xx), refused
    assert rows["clean (reference)"][3:] == ["0", "0"]
    assert rows["10% bad mixed in"][3:] == ["0", "10"]
