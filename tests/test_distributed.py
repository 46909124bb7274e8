"""Data-parallel training on CPU with gloo: torchrun with 2 processes against 1.

Tolerances: fp32 sums in a different order (each rank pads its half of a
batch to its own length; gradients are averaged by all-reduce), so losses
agree to 1e-5 relative and final weights to 1e-5 absolute, while training at
this learning rate moves the weights by more than 1e-3 over the compared steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, compose_spec, run_train
from safetensors.torch import load_file
from test_multitask import SMALL
from test_resume import max_delta
from test_train import scalars

from ft_cli.data import batching
from ft_cli.rundir import checkpoint
from ft_cli.tasks import metrics
from ft_cli.training.engine import train

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


# --- under torchrun -----------------------------------------------------------------------
# A torchrun start costs each rank and the agent an interpreter, torch and transformers: far
# more than a tiny run. One start runs every job below in turn (torchrun_jobs.py); only the
# run that SIGTERM stops is a start of its own, since its processes must really die.

# A 2-process run per backend that the other runs compare with: 3 epochs of 6 global
# batches, a checkpoint every 2 steps.
REFERENCE = [*SETTINGS, f"train.batch_size={BATCH}", "train.epochs=3"]
# 97 rows over 2 processes x batch 8: the last global batch (1 row) has fewer rows than
# ranks, so every rank skips it; explain must count what training then runs.
EXPLAINED = [
    "data.max_train_samples=97",
    "train.epochs=2",
    "train.batch_size=8",
    "strategy=llrd",
    "hardware=cpu",
    "train.export=last",
]
OBJECTIVES = {
    # DDP wraps masked-LM's objective forward (the head sees masked tokens only), with
    # accumulation; the trainable set grows mid-run, so DDP is rebuilt at each unfreezing.
    "mlm-ddp": [
        "task=mlm",
        "train.grad_accum=2",
        "strategy=gradual_unfreeze",
        "strategy.unfreeze_every=2",
        "strategy.unfreeze_unit=steps",
    ],
    # FSDP: tied weights (decoder = embeddings) stored once, frozen layers, and a penalty
    # summed over shards.
    "mlm-fsdp": [
        "task=mlm",
        "train.grad_accum=2",
        "strategy=freeze_layers",
        "strategy.frozen_layers=1",
        "strategy.l2=0.01",
        "hardware.distributed=fsdp",
    ],
}
TWO_CLASSIFIERS = """# @package _global_
# Purpose: two classification tasks (the DDP test)
defaults:
  - /data@task.tasks.first.data: demo
  - /data@task.tasks.second.data: demo
  - override /task: multitask
task:
  mixing: temperature
  tasks:
    first: {kind: classification, data: {max_train_samples: 64, max_eval_samples: 32}}
    second: {kind: classification, weight: 0.5,
             data: {max_train_samples: 48, max_eval_samples: 32, max_length: 24}}
"""
MULTITASK = [
    *SMALL,
    "+recipe=two",
    "strategy.dropout=0.0",
    "hardware=cpu",
    "optimizer.lr=1e-3",
    "train.epochs=1",
    "train.export=last",
]


def searched(base: Path) -> list[str]:
    """An Optuna search of 2 trials whose pruner stops each at its first evaluation."""
    return [
        "-m",
        *TINY,
        "+search=lr_batch",
        "train.max_steps=3",
        "train.eval_every=1",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage=sqlite:///{base / 'search.db'}",
        "hydra.sweeper.study_name=ranks",
        "hydra.sweeper.pruner.name=threshold",
        "hydra.sweeper.pruner.lower=2.0",
        f"hydra.sweep.dir={base / 'search'}",
    ]


def torchrun(cwd: Path, args: list[str], env: dict | None = None, **popen) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--standalone",
        *args,
    ]
    return subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})}, **popen)


def sigterm_at_step_7(cwd: Path) -> int:
    """`ft train` on 2 processes, stopped by SIGTERM at step 7; its exit code."""
    args = ["-m", "ft_cli", "train", *TINY, *REFERENCE, "hardware.distributed=ddp"]
    victim = torchrun(cwd, [*args, "hydra.run.dir=run"], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    assert victim.stdout is not None
    for line in victim.stdout:
        if line.startswith("step 7/"):
            break
        assert time.monotonic() < deadline, "no progress"
    victim.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    victim.communicate(timeout=300)
    return victim.returncode


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> SimpleNamespace:
    """Every 2-process run of this module: the SIGTERM victim's exit code and record, and each job's
    `{"code", "stdout", "stderr"}` per rank (`ranks`; rank 0's also as `jobs`)."""
    base = tmp_path_factory.mktemp("torchrun")
    (base / "victim").mkdir()
    victim_code = sigterm_at_step_7(base / "victim")
    victim_record = json.loads((base / "victim" / "run" / "metrics.json").read_text())
    (base / "recipes").mkdir()
    (base / "recipes" / "two.yaml").write_text(TWO_CLASSIFIERS)

    def job(name: str, args: list[str], **more) -> dict:
        return {"name": name, "args": [*args, f"hydra.run.dir={base / name}"], **more}

    ddp, fsdp = [*REFERENCE, "hardware.distributed=ddp"], [*REFERENCE, "hardware.distributed=fsdp"]
    jobs = [
        job("ddp", [*TINY, *ddp]),
        job("fsdp", [*TINY, *fsdp]),
        # The cut run is the same run, left as a crash after step 6 would leave it.
        job(
            "fsdp-resumed",
            [*TINY, *fsdp, "resume=auto"],
            copy_cut=[str(base / "fsdp"), str(base / "fsdp-resumed"), 6],
        ),
        {
            "name": "victim",
            "args": [*TINY, *ddp, f"hydra.run.dir={base / 'victim' / 'run'}", "resume=auto"],
        },
        *(
            job(name, [*TINY, *SETTINGS, f"train.batch_size={BATCH}", *extra])
            for name, extra in OBJECTIVES.items()
        ),
        job("fsdp-lora", [*TINY, "hardware=cpu", "hardware.distributed=fsdp", "strategy=lora"]),
        job("explained", [*TINY, *EXPLAINED]),
        job("multitask", [*MULTITASK, "train.batch_size=8"]),
        job("multitask-fsdp", [*MULTITASK, "train.batch_size=8", "hardware.distributed=fsdp"]),
        job("search", searched(base)),
    ]
    spec = base / "jobs.json"
    spec.write_text(json.dumps(jobs))
    script = Path(__file__).with_name("torchrun_jobs.py")
    launch = torchrun(
        base,
        [str(script), str(spec)],
        {"FT_RECIPES_DIR": str(base / "recipes")},
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = launch.communicate(timeout=900)
    assert launch.returncode == 0, stderr[-3000:]
    ranks = [json.loads(spec.with_name(f"jobs.json.rank{r}.json").read_text()) for r in range(2)]
    return SimpleNamespace(
        base=base, victim_code=victim_code, victim_record=victim_record, ranks=ranks, jobs=ranks[0]
    )


def completed(launched: SimpleNamespace, name: str) -> Path:
    """The folder of job `name` (its run dir), which every rank finished with exit code 0."""
    for rank in launched.ranks:
        assert rank[name]["code"] == 0, rank[name]["stderr"][-3000:]
    return launched.base / name


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(
    tmp_path: Path, launched: SimpleNamespace, parallel: str
) -> None:
    ddp = completed(launched, parallel)
    single = run_train(
        tmp_path / "single", [*SETTINGS, f"train.batch_size={2 * BATCH}", "train.epochs=3"]
    )

    # Exactly one run dir (rank 0's), one TensorBoard run, one set of checkpoints.
    assert [p.parent for p in ddp.rglob("metrics.json")] == [ddp]
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
def test_data_parallel_resume_equals_uninterrupted(launched: SimpleNamespace) -> None:
    """FSDP's sharded state; DDP's resume after a real SIGTERM is the test below."""
    resumed = completed(launched, "fsdp-resumed")
    assert "resuming from" in launched.jobs["fsdp-resumed"]["stdout"]
    a = load_file(completed(launched, "fsdp") / "model" / "model.safetensors")
    b = load_file(resumed / "model" / "model.safetensors")
    assert max_delta(a, b) == 0.0
    state = torch.load(
        resumed / "checkpoints" / "step-00000018" / checkpoint.STATE, weights_only=True
    )
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2  # one per rank
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_data_parallel_runs_every_objective(launched: SimpleNamespace, name: str) -> None:
    record = json.loads((completed(launched, name) / "metrics.json").read_text())
    assert record["status"] == "completed" and record["processes"] == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in record["final"].values())


@pytest.mark.slow
def test_fsdp_names_the_strategies_and_tasks_it_cannot_run(launched: SimpleNamespace) -> None:
    for rank in launched.ranks:  # every rank stops, in one line
        lora, multitask = rank["fsdp-lora"], rank["multitask-fsdp"]
        assert lora["code"] == 2 and "Traceback" not in lora["stderr"]
        expected = "ft: error: hardware.distributed=fsdp: strategy=lora is not supported"
        assert expected in lora["stderr"]
        assert multitask["code"] != 0 and "cannot train task=multitask" in multitask["stderr"]


@pytest.mark.slow
def test_sigterm_stops_every_rank_at_one_step_and_resume_is_exact(
    launched: SimpleNamespace,
) -> None:
    assert launched.victim_code != 0
    record = launched.victim_record  # as the victim left it, before the resume
    assert record["status"] == "interrupted" and record["checkpoint"]
    assert record["steps"] < 18
    saved = launched.base / "victim" / record["checkpoint"]  # relative to its cwd, or absolute
    state = torch.load(saved / checkpoint.STATE, weights_only=True)
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2  # one per rank
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    resumed = completed(launched, "victim")
    assert "resuming from" in launched.jobs["victim"]["stdout"]
    a = load_file(completed(launched, "ddp") / "model" / "model.safetensors")
    b = load_file(resumed / "run" / "model" / "model.safetensors")
    assert max_delta(a, b) == 0.0


@pytest.mark.slow
def test_explain_eval_and_train_share_the_setup_under_torchrun(
    launched: SimpleNamespace, monkeypatch
) -> None:
    from ft_cli.commands import evaluation, explain

    run = completed(launched, "explained")
    monkeypatch.setenv("WORLD_SIZE", "2")
    plan = explain.plan([*TINY, *EXPLAINED])
    record = json.loads((run / "metrics.json").read_text())
    assert plan.steps_per_epoch == 6 and plan.total_steps == record["steps"] == 12
    strategy = json.loads((run / "strategy.json").read_text())
    assert plan.strategy["groups"] == strategy["groups"]
    assert plan.strategy["optimizer_groups"] == strategy["optimizer_groups"]
    monkeypatch.delenv("WORLD_SIZE")
    evaluated = evaluation.evaluate_trained(str(run), [])
    assert evaluated["rows"] == 48  # the validation split training evaluated
    assert evaluated["metrics"] == pytest.approx(record["final"], rel=1e-5)


@pytest.mark.slow
def test_multitask_on_two_processes_matches_one(
    tmp_path: Path, launched: SimpleNamespace, monkeypatch
) -> None:
    """Every rank draws the same task each step, DDP averages gradients with the other head
    unused; the result is the one-process run's. (Two classification tasks: a
    token-classification loss averages over each rank's own tokens, which no single
    process reproduces exactly.)"""
    ddp = completed(launched, "multitask")
    monkeypatch.setenv("FT_RECIPES_DIR", str(launched.base / "recipes"))
    train(compose_spec([*MULTITASK, "train.batch_size=16"]), run_dir=tmp_path / "single")
    record = json.loads((ddp / "metrics.json").read_text())
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert record["processes"] == 2 and record["steps"] == single["steps"]
    assert record["final"] == pytest.approx(single["final"], rel=1e-5, abs=1e-6)
    for name in ("first", "second"):
        a = load_file(tmp_path / "single" / "model" / name / "model.safetensors")
        b = load_file(ddp / "model" / name / "model.safetensors")
        assert max_delta(a, b) < 1e-5, name


@pytest.mark.slow
def test_a_search_under_torchrun_runs_each_trial_on_every_rank_and_prunes_them_alike(
    launched: SimpleNamespace,
) -> None:
    import optuna

    completed(launched, "search")
    storage = f"sqlite:///{launched.base / 'search.db'}"
    trials = optuna.load_study(study_name="ranks", storage=storage).trials
    # The first process alone asked: 2 trials, not one per rank.
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    for trial in trials:
        run = launched.base / "search" / str(trial.number)
        record = json.loads((run / "metrics.json").read_text())
        # Both ranks stopped at the same evaluation (else the run would hang or fail).
        assert record["status"] == "pruned" and record["steps"] == 1
        assert list(trial.intermediate_values) == [1]
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        assert f"optimizer.lr={trial.params['optimizer.lr']!r}" in overrides
