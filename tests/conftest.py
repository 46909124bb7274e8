"""Shared helpers: compose a spec in-process and train the tiny model on small data."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

# Tests never reach for the hub: fail fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Tokenized-split cache: one fresh folder per test session, never the user's.
os.environ["FT_CACHE_DIR"] = tempfile.mkdtemp(prefix="ft-test-cache-")

# Under pytest-xdist (-n N) the cores are shared by N workers: each worker's torch (and
# the ft processes it starts) gets its share of threads instead of all of them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

# Each xdist worker takes a whole file at a time (--dist loadfile), in collection order
# (--no-loadscope-reorder): the files that take longest (measured with --durations) go
# first, so that none of them starts last while the other worker has nothing left.
LONGEST_FIRST = (
    "test_mrpc.py",
    "test_nsp.py",
    "test_bench.py",
    "test_bench_tasks.py",
    "test_export.py",
    "test_interrupts.py",
    "test_distributed.py",
    "test_search.py",
    "test_serve.py",
    "test_error_corpus.py",
    "test_resume.py",
    "test_multitask.py",
    "test_tagging.py",
    "test_train.py",
    "test_config.py",
    "test_cli.py",
)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: for the full suite a worker more than there are cores, since its slow
    tests wait on processes they started (torchrun ranks, servers, sweeps, kill -9
    victims) and the extra worker keeps the cores busy meanwhile (2 cores: 8 min 35 s
    against 9 min 9 s); the fast tier runs in-process, a worker per core."""
    cores = os.cpu_count() or 1
    return cores if "not slow" in (config.option.markexpr or "") else cores + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


REPO = Path(__file__).resolve().parent.parent
MRPC = REPO.parent / "shared" / "data" / "glue" / "MRPC"

# Small and fast: the tiny BERT, short inputs, a few steps.
TINY = [
    "model=tiny_bert",
    "data.max_length=32",
    "data.max_train_samples=96",
    "data.max_eval_samples=48",
    "train.batch_size=16",
    "train.eval_batch_size=32",
    "train.log_every=1",
    # Pinned: hardware=auto picks bf16 on CPUs with native bf16, and tests that
    # compare numbers must not depend on the machine. bf16 is tested on purpose.
    "hardware.precision=fp32",
]


@pytest.fixture(autouse=True)
def _simulated_bf16_cpu(monkeypatch) -> None:
    """FT_TEST_SIMULATE_BF16_CPU=1: in-process runs see a CPU with fast native bf16, as
    hardware=auto does on AMD EPYC machines, so either kind of machine can check both."""
    if os.environ.get("FT_TEST_SIMULATE_BF16_CPU") == "1":
        import torch

        from ft_cli.hardware import device as hardware

        # Below the probe, so that tests of the probe itself can fake the CPU again.
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
        seconds = {torch.float32: 2.2, torch.bfloat16: 1.0}
        monkeypatch.setattr(hardware, "_matmul_seconds", lambda dtype, *a: seconds[dtype])
        monkeypatch.setattr(hardware.remembered, "value", lambda name, measure: measure())


def compose_spec(overrides: list[str]):
    from ft_cli.config import compose

    return compose.to_spec(compose.compose_config(overrides))


def run_train(tmp_path: Path, overrides: list[str]):
    from ft_cli.training.engine import train

    spec = compose_spec([*TINY, *overrides])
    return train(spec, run_dir=tmp_path / "run", overrides=overrides)


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def tiny_pretrained(tmp_path: Path) -> Path:
    """A tiny BERT saved in the save_pretrained layout, to fine-tune 'pretrained' weights."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from ft_cli.paths import resolve_path

    source = resolve_path("pkg:ft_cli/assets/tiny_bert", "model")
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.from_pretrained(source))
    target = tmp_path / "tiny_pretrained"
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def exported_tiny(tmp_path_factory) -> Path:
    """A tiny classifier trained 3 steps on the demo data and exported by `ft export
    --quantize int8` (RUN/onnx): shared by the export tests and the deploy bench test."""
    pytest.importorskip("onnxruntime")
    from ft_cli import cli

    run = tmp_path_factory.mktemp("exported") / "run"
    assert (
        cli.run_train(
            [
                "model=tiny_bert",
                "data=demo",
                "data.max_length=32",
                "data.max_train_samples=64",
                "data.max_eval_samples=40",
                "train.batch_size=16",
                "hardware.precision=fp32",
                "optimizer.lr=3e-3",
                "train.max_steps=3",
                f"hydra.run.dir={run}",
            ]
        )
        == 0
    )
    assert cli._run_tool("export", [str(run), "--quantize", "int8"]) == 0
    return run


def resumes_bit_identical(train: Any, tmp_path: Path, overrides: list[str]) -> bool:
    """Train to the end, then again from a checkpoint of the first epoch's second step
    (`train(run_dir, overrides)`): whether both export the same weights, bit for bit."""
    import shutil

    import torch
    from safetensors.torch import load_file

    train(tmp_path / "reference", overrides)
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "reference", cut)
    for ckpt in (cut / "checkpoints").glob("step-*"):
        if int(ckpt.name.split("-")[1]) > 2:  # mid-way through the first epoch
            shutil.rmtree(ckpt)
    shutil.rmtree(cut / "model")
    (cut / "metrics.json").unlink()
    train(cut, [*overrides, "resume=auto"])
    a = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    b = load_file(cut / "model" / "model.safetensors")
    return all(torch.equal(a[k], b[k]) for k in a)
