"""Processes that die: kill -9 then resume=auto, and SIGTERM / SIGINT exits (subprocesses)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file

from ft_cli.rundir import checkpoint

# 45 optimizer steps: long enough to be caught mid-run.
LONG = [
    *TINY,
    "data.max_train_samples=240",
    "train.epochs=3",
    "train.save_every=7",
    "train.keep_checkpoints=3",
    "train.export=last",
    "train.eval_every=50",
]


def start(run_dir: Path, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "ft_cli", "train", *LONG, *extra, f"hydra.run.dir={run_dir}"]
    # One thread each: two runs side by side share the cores without oversubscribing them,
    # and every run of a test computes with the same thread count (the same sums).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for_step(process: subprocess.Popen, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(f"step {step}/"):
            return
        assert time.monotonic() < deadline, "no progress"
    raise AssertionError(f"the run ended before step {step}: {process.stderr.read()}")


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def train_here(run_dir: Path, extra: list[str]) -> None:
    """The same run in this process, with the victim's one thread (the same sums)."""
    from ft_cli import cli

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cli.run_train([*LONG, *extra, f"hydra.run.dir={run_dir}"]) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["train.grad_accum=2", "train.batch_size=8"]])
def test_kill_9_then_resume_auto_is_bit_identical(tmp_path: Path, extra: list[str]) -> None:
    # Only the victim must be a process of its own; the reference and the resumed run
    # run here (no interpreter and torch start each).
    killed_at = random.Random().randint(10, 35)
    victim = start(tmp_path / "run", extra)
    wait_for_step(victim, killed_at)
    victim.kill()  # SIGKILL: no handler runs, no checkpoint is written now
    victim.wait()
    train_here(tmp_path / "run", [*extra, "resume=auto"])
    train_here(tmp_path / "reference", extra)
    a = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    b = load_file(tmp_path / "run" / "model" / "model.safetensors")
    delta = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert delta == 0.0, f"killed at step {killed_at}: max |delta| = {delta}"
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["resumed_from"]


def interrupt_with(tmp_path: Path, signum: int) -> tuple[int, str]:
    process = start(tmp_path / "run", [])
    wait_for_step(process, 20)
    process.send_signal(signum)
    return finish(process)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path: Path) -> None:
    code, err = interrupt_with(tmp_path, signal.SIGTERM)
    assert code == 143, err
    assert "resume with: ft train" in err and "resume=auto" in err
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "interrupted"
    saved = Path(record["checkpoint"])
    assert checkpoint.is_valid(saved)[0]
    assert int(saved.name.split("-")[1]) >= 20
    # The printed command resumes it to the end.
    command = err.split("resume with: ")[1].strip().split()
    assert command[:2] == ["ft", "train"]
    from ft_cli import cli

    assert cli.run_train(command[2:]) == 0  # here: only the interrupted run must be a process
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path: Path) -> None:
    code, err = interrupt_with(tmp_path, signal.SIGINT)
    assert code == 130, err
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert checkpoint.is_valid(Path(record["checkpoint"]))[0]


@pytest.mark.slow
def test_a_committed_checkpoint_survives_kill_9_mid_write(tmp_path: Path) -> None:
    """Whenever the process dies, every step-* folder is either complete or absent."""
    process = start(tmp_path / "run", ["train.save_every=1"])  # writing nearly all the time
    wait_for_step(process, 12)  # a dozen checkpoints written, kept or pruned: any can be hit
    process.kill()
    process.wait()
    root = tmp_path / "run" / "checkpoints"
    committed = sorted(p for p in root.glob("step-*"))
    assert committed
    for path in committed:
        assert checkpoint.is_valid(path)[0], path
    state = checkpoint.load_state(committed[-1])
    assert torch.is_tensor(state["rng"]["torch"])


@pytest.mark.slow
def test_a_second_sigint_aborts_at_once(tmp_path: Path) -> None:
    process = start(tmp_path / "run", ["train.save_every=1"])
    wait_for_step(process, 6)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    assert code == 130, err
    for path in (tmp_path / "run" / "checkpoints").glob("step-*"):
        assert checkpoint.is_valid(path)[0], path
