"""Exact resume in-process: a run cut after a checkpoint and resumed equals the uninterrupted run.

Cutting is simulated the way a crash leaves the run dir: every checkpoint
after the cut, the export and metrics.json are removed (TensorBoard keeps the
later events; the resumed run purges them).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_spec, run_train
from crash import cut_after
from safetensors.torch import load_file

from ft_cli import host
from ft_cli.errors import FtError
from ft_cli.rundir import checkpoint

# Dropout on (tiny_bert has 0.1), shuffled length-grouped batches, 3 epochs of 6 batches.
BASE = [
    "optimizer.lr=3e-3",
    "train.epochs=3",
    "train.save_every=1",
    "train.keep_checkpoints=100",
    "train.export=last",
    "train.eval_every=4",
    "data.max_train_samples=96",
]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "model.safetensors")


def max_delta(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def resume_after(tmp_path: Path, overrides: list[str], cut: int):
    """The uninterrupted run, and a copy of it cut after `cut` and resumed (training is
    deterministic, so the copy is the run dir a second run that crashed would leave)."""
    reference = run_train(tmp_path / "reference", overrides)
    shutil.copytree(tmp_path / "reference", tmp_path / "cut")
    cut_after(tmp_path / "cut" / "run", cut)
    resumed = run_train(tmp_path / "cut", [*overrides, "resume=auto"])
    return reference, resumed


@pytest.mark.parametrize(
    ("extra", "cut"),
    [
        ([], 3),  # mid-epoch
        pytest.param([], 6, marks=pytest.mark.slow),  # at the epoch boundary
        pytest.param([], 8, marks=pytest.mark.slow),  # right after an evaluation
        pytest.param(  # accumulation, mid-epoch
            ["train.grad_accum=2", "train.batch_size=8"], 5, marks=pytest.mark.slow
        ),
        # Masked-LM: the masks of the resumed batches must be the ones never drawn.
        (["task=mlm", "task.packing=line_by_line", "task.whole_word_mask=true"], 3),
        pytest.param(["task=mlm", "data.max_length=16"], 4, marks=pytest.mark.slow),
        # Every augmentation at once, resumed mid-way through the second epoch.
        (
            [
                "augment=token_mask",
                "augment.token_delete=0.1",
                "augment.token_swap=0.2",
                "augment.span_cutoff=0.1",
                "augment.embedding_noise=5",
                "augment.mixup=0.4",
            ],
            8,
        ),
    ],
)
def test_resumed_run_is_bit_identical(tmp_path: Path, extra: list[str], cut: int) -> None:
    reference, resumed = resume_after(tmp_path, [*BASE, *extra], cut)
    assert resumed.steps == reference.steps
    assert max_delta(final_weights(reference.run_dir), final_weights(resumed.run_dir)) == 0.0
    assert resumed.best == reference.best


@pytest.mark.parametrize("sabotage", ["rng", "data_position"])
def test_negative_controls_break_exactness(tmp_path: Path, monkeypatch, sabotage: str) -> None:
    """Without the RNG state or the data position, the resumed run differs: the test can fail."""
    if sabotage == "rng":
        monkeypatch.setattr(checkpoint, "restore_rng", lambda state: None)
    else:
        from ft_cli.training.loop_state import LoopState

        original = LoopState.from_dict.__func__

        def forget_position(cls, values):
            return original(cls, {**values, "next_batch": 0})

        monkeypatch.setattr(LoopState, "from_dict", classmethod(forget_position))
    reference, resumed = resume_after(tmp_path, BASE, 3)
    assert max_delta(final_weights(reference.run_dir), final_weights(resumed.run_dir)) > 0


@pytest.mark.slow
def test_tensorboard_has_no_duplicate_steps_after_resume(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, resumed = resume_after(tmp_path, BASE, 3)
    events = EventAccumulator(str(resumed.run_dir / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, resumed.steps + 1))


def test_early_stopping_patience_survives_resume(tmp_path: Path) -> None:
    # lr ~ 0 (it must be > 0): no improvement after the first evaluation; patience 4 stops at evaluation 5.
    overrides = [
        "optimizer.lr=1e-12",
        "train.epochs=10",
        "train.eval_every=1",
        "train.save_every=1",
        "train.keep_checkpoints=100",
        "train.early_stopping.enabled=true",
        "train.early_stopping.patience=4",
    ]
    reference, resumed = resume_after(tmp_path, overrides, 3)
    assert reference.stopped_early and reference.steps == 5
    assert resumed.stopped_early and resumed.steps == 5


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path: Path, capsys) -> None:
    result = run_train(tmp_path, ["train.max_steps=2", "resume=auto"])
    assert result.steps == 2
    assert "no usable checkpoint in" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_skips_incomplete_and_corrupt_checkpoints(tmp_path: Path, capsys) -> None:
    run = run_train(tmp_path / "a", BASE)
    cut_after(run.run_dir, 5)
    root = run.run_dir / "checkpoints"
    # A kill during the write of step 6 leaves its temporary folder; step 5 is corrupted on disk.
    shutil.copytree(root / "step-00000004", root / ".tmp-step-00000006")
    (root / ".tmp-step-00000006" / "manifest.json").unlink()
    weights = root / "step-00000005" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    resumed = run_train(tmp_path / "a", [*BASE, "resume=auto"])
    out = capsys.readouterr().out
    assert "the leftover of an interrupted checkpoint write" in out
    assert "skipping checkpoint" in out and "step-00000005" in out
    assert "resuming from" in out and "step-00000004" in out
    # Neither is deleted: both are moved aside, where their weights stay readable.
    assert not (root / ".tmp-step-00000006").exists()
    assert (root / "unusable" / "step-00000006" / "model.safetensors").is_file()
    assert (root / "unusable" / "step-00000005" / "model.safetensors").is_file()
    reference = run_train(tmp_path / "b", BASE)
    assert max_delta(final_weights(reference.run_dir), final_weights(resumed.run_dir)) == 0.0


@pytest.mark.slow
def test_resume_from_a_path(tmp_path: Path) -> None:
    run = run_train(tmp_path / "a", BASE)
    ckpt = run.run_dir / "checkpoints" / "step-00000004"
    resumed = run_train(tmp_path / "elsewhere", [*BASE, f"resume={ckpt}"])
    assert resumed.run_dir == run.run_dir  # a resumed run keeps writing to its own run dir
    with pytest.raises(FtError, match=r"^resume=.*nope: no such checkpoint or run dir"):
        run_train(tmp_path / "x", [*BASE, f"resume={tmp_path / 'nope'}"])
    (ckpt / "manifest.json").unlink()
    with pytest.raises(FtError, match=r"not a valid checkpoint \(no manifest"):
        run_train(tmp_path / "x", [*BASE, f"resume={ckpt}"])


@pytest.mark.slow
def test_drift_is_reported_and_guarded(tmp_path: Path, capsys) -> None:
    run = run_train(tmp_path / "a", BASE)
    cut_after(run.run_dir, 4)
    with pytest.raises(
        FtError,
        match=r"^resume: the model, task or data changed since the checkpoint \(data.max_length: 32 -> 24",
    ):
        run_train(tmp_path / "a", [*BASE, "resume=auto", "data.max_length=24"])
    resumed = run_train(tmp_path / "a", [*BASE, "resume=auto", "optimizer.weight_decay=0.5"])
    assert (
        "resuming with a changed config: optimizer.weight_decay: 0.01 -> 0.5"
        in capsys.readouterr().out
    )
    assert resumed.steps == 18
    cut_after(run.run_dir, 4)
    forced = run_train(
        tmp_path / "a", [*BASE, "resume=auto", "data.max_length=24", "resume_force=true"]
    )
    assert forced.steps == 18


def test_hostile_pickle_is_refused(tmp_path: Path) -> None:
    import json
    import os

    run = run_train(tmp_path / "a", BASE)
    ckpt = run.run_dir / "checkpoints" / "step-00000004"
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    state["optimizer"] = Boom()
    torch.save(state, ckpt / "trainer_state.pt")
    manifest = json.loads((ckpt / "manifest.json").read_text())
    path = ckpt / "trainer_state.pt"
    manifest["files"]["trainer_state.pt"] = {
        "bytes": path.stat().st_size,
        "sha256": host.sha256(path),
    }
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FtError, match=r"^resume: cannot load .*trainer_state.pt safely"):
        run_train(tmp_path / "b", [*BASE, f"resume={ckpt}"])
    assert not (tmp_path / "pwned").exists()


def test_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import collections
    import errno

    calls = {"n": 0}
    real_save = checkpoint.save_model

    def save_until_full(model, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(model, path)

    monkeypatch.setattr(checkpoint, "save_model", save_until_full)
    with pytest.raises(
        FtError,
        match=r"the disk filled up while writing checkpoint step-00000003 .* the previous checkpoint is intact",
    ):
        run_train(tmp_path, BASE)
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001", "step-00000002"]
    assert checkpoint.is_valid(root / "step-00000002")[0]

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: usage(10, 10, 1024))
    with pytest.raises(
        FtError, match=r"^not enough disk space for a checkpoint in .*MiB needed, .* free;"
    ):
        run_train(tmp_path, [*BASE, "resume=auto"])
    assert checkpoint.is_valid(root / "step-00000002")[0]


@pytest.mark.slow
def test_nonfinite_loss_stops_or_skips(tmp_path: Path, monkeypatch) -> None:
    from ft_cli.tasks import metrics

    real_loss = metrics.task_loss
    calls = {"n": 0}

    def poisoned(task, logits, labels, *smoothing):
        loss = real_loss(task, logits, labels, *smoothing)
        if not logits.requires_grad:  # an evaluation batch
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] in (4, 5) else loss

    monkeypatch.setattr(metrics, "task_loss", poisoned)
    with pytest.raises(
        FtError,
        match=r"^non-finite loss \(nan\) at step 4 \(epoch 0.67\); try a lower optimizer.lr.*train.on_nonfinite=skip.*step-00000003",
    ):
        run_train(tmp_path / "stop", BASE)
    calls["n"] = 0
    skipped = run_train(tmp_path / "skip", [*BASE, "train.on_nonfinite=skip"])
    import json

    record = json.loads((skipped.run_dir / "metrics.json").read_text())
    assert record["skipped_steps"] == 2
    assert all(torch.isfinite(t).all() for t in final_weights(skipped.run_dir).values())


def test_out_of_memory_names_the_knobs(tmp_path: Path, monkeypatch) -> None:
    import transformers

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(transformers.BertForSequenceClassification, "forward", oom)
    with pytest.raises(FtError) as fp32:
        run_train(tmp_path / "fp32", ["train.max_steps=2", "hardware.precision=fp32"])
    assert re.match(
        r"^out of memory at train.batch_size=16, sequence length \d+, precision fp32; lower train.batch_size .*train.grad_accum.*, or use hardware.precision=bf16",
        str(fp32.value),
    )
    # Already in half precision: the advice must not suggest it again.
    with pytest.raises(FtError) as bf16:
        run_train(tmp_path / "bf16", ["train.max_steps=2", "hardware.precision=bf16"])
    assert "precision bf16; lower train.batch_size" in str(bf16.value)
    assert "hardware.precision" not in str(bf16.value)


def test_spec_keys_for_resume_compose() -> None:
    spec = compose_spec([*TINY, "resume=auto", "resume_force=true", "train.on_nonfinite=skip"])
    assert (spec.resume, spec.resume_force, spec.train.on_nonfinite.value) == ("auto", True, "skip")


def test_resuming_a_finished_run_trains_no_further(tmp_path: Path) -> None:
    done = run_train(tmp_path, [*BASE, "train.max_steps=5"])
    again = run_train(tmp_path, [*BASE, "train.max_steps=5", "resume=auto"])
    assert again.steps == done.steps == 5
    assert max_delta(final_weights(done.run_dir), final_weights(again.run_dir)) == 0.0
