"""Data-parallel training on CPU with gloo: torchrun with 2 processes against 1.

Tolerances: fp32 sums in a different order (each rank pads its half of a
batch to its own length; gradients are averaged by all-reduce), so losses
agree to 1e-5 relative and final weights to 1e-5 absolute, while training at
this learning rate moves the weights by more than 1e-3 over the compared steps.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_train
from safetensors.torch import load_file
from test_resume import cut_after, max_delta
from test_train import scalars

from ft_cli.data import batching
from ft_cli.rundir import checkpoint
from ft_cli.tasks import metrics

# Dropout off: each rank draws its own masks, which no single process can reproduce.
SETTINGS = [
    "optimizer.lr=1e-3",
    "train.epochs=2",
    "strategy.dropout=0.0",
    "hardware=cpu",
    "train.eval_every=4",
    "train.save_every=2",
    "train.keep_checkpoints=100",
    "train.export=last",
]
BATCH = 8  # per process; the global batch is 16 in both runs


def torchrun(cwd: Path, overrides: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={processes}",
        "--standalone",
        "-m",
        "ft_cli",
        "train",
        *TINY,
        *overrides,
    ]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_rank_shards_partition_each_global_batch() -> None:
    whole = batching.ShuffledBatches(37, 8, seed=3)
    parts = [batching.RankShard(batching.ShuffledBatches(37, 8, seed=3), r, 3) for r in range(3)]
    for part in parts:
        part.set_epoch(1)
    whole.set_epoch(1)
    shards = [list(part) for part in parts]
    assert all(len(s) == len(parts[0]) == len(whole) for s in shards)  # 37 = 4 x 8 + 5
    for index, batch in enumerate(whole.batches()):
        pieces = [s[index] for s in shards]
        assert [i for piece in pieces for i in piece] == batch
        assert max(map(len, pieces)) - min(map(len, pieces)) <= 1
    # A last global batch with fewer rows than ranks is skipped by every rank.
    tail = [batching.RankShard(batching.ShuffledBatches(33, 8, seed=3), r, 3) for r in range(3)]
    assert [len(list(t)) for t in tail] == [4, 4, 4] and len(tail[0]) == 4


def test_even_eval_parts_cover_the_split_once_and_keep_ranks_in_step() -> None:
    from ft_cli.data.encoded import EncodedSplit

    split = EncodedSplit([[1] * (i % 5 + 1) for i in range(26)], None, [0] * 26)  # 7 batches of 4
    loaders = [batching.eval_loader(split, 4, list, r, 3, even=True) for r in range(3)]
    assert [len(list(loader)) for loader in loaders] == [3, 3, 3]  # FSDP: same forwards each
    assert [loader.real_batches for loader in loaders] == [3, 2, 2]
    real = [i for loader in loaders for b in list(loader)[: loader.real_batches] for i in b]
    assert sorted(real) == list(range(26))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_merged_eval_parts_equal_one_pass(task: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(30, 1 if task == "regression" else 3)
    labels = torch.randn(30) if task == "regression" else torch.randint(0, 3, (30,))
    whole = metrics.EvalMetrics(task, 3)
    whole.update(logits, labels)
    parts = [metrics.EvalMetrics(task, 3) for _ in range(3)]
    for i, part in enumerate(parts):
        part.update(logits[i::3], labels[i::3])
    merged = parts[0].merge(parts[1:]).compute()
    assert merged == pytest.approx(whole.compute(), rel=1e-6)


# One 2-process run per backend, shared by the tests that compare with it: 3 epochs of
# 6 global batches, a checkpoint every 2 steps (each torchrun start costs seconds).
REFERENCE = [*SETTINGS, f"train.batch_size={BATCH}", "train.epochs=3"]


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def reference(request, tmp_path_factory) -> tuple[str, Path]:
    """(the backend, the run dir of its uninterrupted 2-process run)."""
    parallel = request.param
    cwd = tmp_path_factory.mktemp(f"reference-{parallel}")
    torchrun(cwd, [*REFERENCE, f"hardware.distributed={parallel}", "hydra.run.dir=run"])
    return parallel, cwd / "run"


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(
    tmp_path: Path, reference: tuple[str, Path]
) -> None:
    parallel, ddp = reference
    single = run_train(
        tmp_path / "single", [*SETTINGS, f"train.batch_size={2 * BATCH}", "train.epochs=3"]
    )

    # Exactly one run dir (rank 0's), one TensorBoard run, one set of checkpoints.
    assert [p.parent for p in ddp.parent.rglob("metrics.json")] == [ddp]
    assert len(list((ddp / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert len(list((ddp / ".hydra").glob("*.yaml"))) == 3
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == sorted(
        p.name for p in (single.run_dir / "checkpoints").iterdir()
    )
    record = json.loads((ddp / "metrics.json").read_text())
    assert record["processes"] == 2 and record["steps"] == single.steps == 18

    one, two = scalars(single.run_dir, "train/loss"), scalars(ddp, "train/loss")
    assert [s for s, _ in one] == [s for s, _ in two]
    assert [v for _, v in two] == pytest.approx([v for _, v in one], rel=1e-5)
    # Evaluation is split over the ranks and merged: the same metrics as one pass.
    assert record["final"] == pytest.approx(single.final, rel=1e-5)

    a = load_file(single.run_dir / "model" / "model.safetensors")
    b = load_file(ddp / "model" / "model.safetensors")
    assert max_delta(a, b) < 1e-5
    start = load_file(single.run_dir / "checkpoints" / "step-00000002" / "model.safetensors")
    assert max_delta(start, a) > 1e-3  # 100x the tolerance: training moved them
    # The export is an ordinary save_pretrained folder, whichever way it was trained.
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(ddp / "model")
    assert max_delta(a, dict(reloaded.state_dict())) < 1e-5
    if parallel == "fsdp":  # sharded checkpoints: each rank's shards, in safetensors
        shards = list((ddp / "checkpoints" / "step-00000018" / "sharded").glob("*.safetensors"))
        assert len(shards) == 2


@pytest.mark.slow
# FSDP's; DDP's resume after a real SIGTERM is the test below (a torchrun start saved).
@pytest.mark.parametrize("reference", ["fsdp"], indirect=True)
def test_data_parallel_resume_equals_uninterrupted(
    tmp_path: Path, reference: tuple[str, Path]
) -> None:
    parallel, done = reference
    # The cut run is the same run, left as a crash after step 6 would leave it.
    shutil.copytree(done, tmp_path / "cut")
    cut_after(tmp_path / "cut", 6)
    overrides = [*REFERENCE, f"hardware.distributed={parallel}"]
    resumed = torchrun(tmp_path, [*overrides, "hydra.run.dir=cut", "resume=auto"])
    assert "resuming from" in resumed.stdout
    a = load_file(done / "model" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model" / "model.safetensors")
    assert max_delta(a, b) == 0.0
    state = torch.load(
        tmp_path / "cut" / "checkpoints" / "step-00000018" / checkpoint.STATE, weights_only=True
    )
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2  # one per rank
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])


@pytest.mark.parametrize(
    "extra",
    [
        # DDP wraps masked-LM's objective forward (the head sees masked tokens only), with
        # accumulation; the trainable set grows mid-run, so DDP is rebuilt at each unfreezing.
        pytest.param(
            [
                "task=mlm",
                "train.grad_accum=2",
                "strategy=gradual_unfreeze",
                "strategy.unfreeze_every=2",
                "strategy.unfreeze_unit=steps",
            ],
            marks=pytest.mark.slow,
        ),
        # FSDP: tied weights (decoder = embeddings) stored once, frozen layers, and a
        # penalty summed over shards.
        pytest.param(
            [
                "task=mlm",
                "train.grad_accum=2",
                "strategy=freeze_layers",
                "strategy.frozen_layers=1",
                "strategy.l2=0.01",
                "hardware.distributed=fsdp",
            ],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_data_parallel_runs_every_objective(tmp_path: Path, extra: list[str]) -> None:
    torchrun(tmp_path, [*SETTINGS, f"train.batch_size={BATCH}", *extra, "hydra.run.dir=run"])
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["processes"] == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in record["final"].values())


@pytest.mark.slow  # a torchrun start
def test_fsdp_names_the_strategies_it_cannot_run(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--standalone",
        "-m",
        "ft_cli",
        "train",
        *TINY,
        "hardware=cpu",
        "hardware.distributed=fsdp",
        "strategy=lora",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "ft: error: hardware.distributed=fsdp: strategy=lora is not supported" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["ddp"], indirect=True)  # the signal path is shared
def test_sigterm_stops_every_rank_at_one_step_and_resume_is_exact(
    tmp_path: Path, reference: tuple[str, Path]
) -> None:
    import signal
    import time

    _, done = reference
    overrides = [*REFERENCE, "hardware.distributed=ddp"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--standalone",
        "-m",
        "ft_cli",
        "train",
        *TINY,
        *overrides,
        "hydra.run.dir=run",
    ]
    victim = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    assert victim.stdout is not None
    for line in victim.stdout:
        if line.startswith("step 7/"):
            break
        assert time.monotonic() < deadline, "no progress"
    victim.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    victim.communicate(timeout=300)
    assert victim.returncode != 0
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["checkpoint"]
    assert record["steps"] < 18
    saved = tmp_path / record["checkpoint"]  # the run's cwd was tmp_path (or it is absolute)
    state = torch.load(saved / checkpoint.STATE, weights_only=True)
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2  # one per rank
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    torchrun(tmp_path, [*overrides, "hydra.run.dir=run", "resume=auto"])
    a = load_file(done / "model" / "model.safetensors")
    b = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert max_delta(a, b) == 0.0


@pytest.mark.slow
def test_explain_eval_and_train_share_the_setup_under_torchrun(tmp_path: Path, monkeypatch) -> None:
    """97 rows over 2 processes x batch 8: the last global batch (1 row) has fewer rows
    than ranks, so every rank skips it; explain must count what training then runs."""
    from ft_cli.commands import evaluation, explain

    overrides = [
        "data.max_train_samples=97",
        "train.epochs=2",
        "train.batch_size=8",
        "strategy=llrd",
        "hardware=cpu",
        "train.export=last",
    ]
    torchrun(tmp_path, [*overrides, "hydra.run.dir=run"])
    run = tmp_path / "run"
    monkeypatch.setenv("WORLD_SIZE", "2")
    plan = explain.plan([*TINY, *overrides])
    record = json.loads((run / "metrics.json").read_text())
    assert plan.steps_per_epoch == 6 and plan.total_steps == record["steps"] == 12
    strategy = json.loads((run / "strategy.json").read_text())
    assert plan.strategy["groups"] == strategy["groups"]
    assert plan.strategy["optimizer_groups"] == strategy["optimizer_groups"]
    monkeypatch.delenv("WORLD_SIZE")
    evaluated = evaluation.evaluate_trained(str(run), [])
    assert evaluated["rows"] == 48  # the validation split training evaluated
    assert evaluated["metrics"] == pytest.approx(record["final"], rel=1e-5)
