"""The one training engine: `train(spec) -> RunResult`.

Read top to bottom: the run dir is locked, the resume point found, the run's
pieces built by `setup.build` (the same call `ft explain` and `ft eval` make),
then one loop: forward under autocast, backward and the optimizer step through
the hardware object, log, evaluate, early-stop check, checkpoint, interrupt
check. Ends with the export of the best (or last) model. Backends, precision,
strategies and tasks are behind their seams (`parallel`, `hardware`,
`strategies`, the objective): this module names none of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from ft_cli import errors, loggers, tasks
from ft_cli.config import compose, plain
from ft_cli.config.schema import Export, NonFinite, RunSpec
from ft_cli.hardware import distributed, parallel
from ft_cli.hardware.device import Hardware, setup_hardware
from ft_cli.loggers import Loggers, RunInfo, SweepJob
from ft_cli.models import model
from ft_cli.outputs import model_card, tracking
from ft_cli.outputs.console import RunConsole
from ft_cli.rundir import checkpoint, ownership
from ft_cli.strategies import layers as strategy
from ft_cli.strategies import report as strategy_report
from ft_cli.tasks import calibration, metrics
from ft_cli.tasks.objective import Objective
from ft_cli.training import guards, pruning, resume, setup
from ft_cli.training.loop_state import LoopState
from ft_cli.training.setup import StepForward, seed_everything

__all__ = ["RunResult", "StepForward", "evaluate", "seed_everything", "train"]


@dataclass
class RunResult:
    """What a run returns; `metric` is what a Hydra sweeper optimises."""

    metric_name: str
    metric: float | None  # best monitored value; None when nothing was evaluated
    best: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    stopped_early: bool = False
    run_dir: Path = Path(".")
    model: Any = field(default=None, repr=False)  # the trained model, for in-process use
    pruned: bool = False  # a search's trial stopped it (its checkpoint is kept)


def evaluate(
    forward: torch.nn.Module,
    objective: Objective,
    loader: Any,
    hw: Hardware,
    backend: parallel.Backend | None = None,
) -> dict[str, float]:
    """The task's metrics over `loader`; with several processes, over all their parts.

    `forward`: the objective's forward module (`StepForward`), which under
    FSDP gathers the sharded weights it needs.
    """
    was_training = forward.training
    forward.eval()
    scores = objective.new_metrics(loader.dataset)
    real = getattr(loader, "real_batches", None)
    with torch.no_grad(), hw.autocast():
        for index, batch in enumerate(loader):
            batch = {k: v.to(hw.device, non_blocking=True) for k, v in batch.items()}
            outputs = forward(batch)
            if real is None or index < real:  # FSDP's top-up batches only keep step
                scores.update(*outputs)
    forward.train(was_training)
    return (backend or parallel.Backend()).merge(scores).compute()


def _resume_point(spec: RunSpec, run_dir: Path, ui: RunConsole) -> tuple[Path | None, list[Path]]:
    """(checkpoint to resume from or None, checkpoints to move aside); reads only."""
    ownership.check_reuse(run_dir, spec.resume, spec.overwrite)
    if spec.resume is None:
        return None, []
    found, unusable = resume.find_checkpoint(spec.resume, run_dir, ui.warn)
    if found is None and (run_dir / "model").exists():
        raise ownership.RunDirRefused(
            f"resume={spec.resume}: {run_dir} holds a finished model/ but no usable checkpoint"
            f" to continue from; start over with overwrite=true (the old run is moved to"
            f" {ownership.aside_name(run_dir)}), or pick another run dir"
        )
    if found is None:
        ui.info(f"resume=auto: no usable checkpoint in {run_dir / 'checkpoints'}; starting fresh")
    return found, unusable


def train(
    spec: RunSpec,
    run_dir: str | Path,
    overrides: list[str] | None = None,
    records: dict[str, str] | None = None,
    sweep: SweepJob | None = None,
    trial: pruning.Trial | None = None,
) -> RunResult:
    """Run one training job as the spec says; writes everything under `run_dir`.

    The run dir is locked for the run, and nothing is written into it until
    the spec, the data and the resume point are validated. `records`: more
    files (name -> text) written then, such as Hydra's record of the command.
    `sweep`: the sweep this run is a job of (its loggers group the jobs).
    `trial`: a search's trial, told each evaluation, that may prune the run.
    """
    # Data-parallel: every rank trains; rank 0 alone prints, locks and writes files.
    place = distributed.init()
    ui = RunConsole(None if place.is_main else Console(quiet=True))
    target = resume.target_dir(spec.resume, Path(run_dir))
    with ownership.locked(target, ui.warn, enabled=place.is_main), contextlib.ExitStack() as ends:
        context = _Context(overrides or [], records or {}, place, ui, ends, sweep, trial)
        return _train(spec, target, context)


def _hardware(spec: RunSpec, place: distributed.Dist) -> Hardware:
    seed_everything(spec.train.seed)
    hw = setup_hardware(spec.hardware, distributed.gpu_index(place))
    if place.enabled:  # e.g. the CPU bf16 probe must not differ between ranks
        decided = distributed.broadcast((hw.precision, hw.reason), place)
        hw = setup_hardware(spec.hardware, distributed.gpu_index(place), decided)
    return hw


@dataclass
class _Saver:
    """Checkpoints of the run: written through the backend, pruned, the last one known."""

    root: Path
    keep: int
    backend: parallel.Backend
    run: setup.RunSetup
    hw: Hardware
    last: Path | None = None

    def save(self, loop: LoopState, running_loss: torch.Tensor, stopper: Any) -> Path:
        place = self.backend.place
        loop.running_loss = float(distributed.mean(running_loss.clone(), place))
        loop.best_value, loop.bad_evals = stopper.best, stopper.bad_evals
        run = self.run
        self.backend.save(
            self.root,
            loop.step,
            run.net,
            run.forward,
            run.optimizer,
            run.scheduler,
            self.hw.scaler,
            loop.to_dict(),
        )
        if self.backend.is_main:
            best = self.root / loop.best_checkpoint if loop.best_checkpoint else None
            checkpoint.prune_checkpoints(self.root, self.keep, best)
        distributed.barrier(place)
        self.last = self.root / checkpoint.checkpoint_name(loop.step)
        return self.last

    def save_once(self, loop: LoopState, running_loss: torch.Tensor, stopper: Any) -> None:
        if self.last is None or self.last.name != checkpoint.checkpoint_name(loop.step):
            self.save(loop, running_loss, stopper)


@dataclass
class _Context:
    """Where a run comes from and what it ends with: the command, the process, the console."""

    overrides: list[str]
    records: dict[str, str]
    place: distributed.Dist
    ui: RunConsole
    ends: contextlib.ExitStack  # closed when the run ends, however it ends
    sweep: SweepJob | None
    trial: pruning.Trial | None = None  # a search's trial, which may prune the run


def _open_loggers(spec: RunSpec, run_dir: Path, context: _Context, resumed: int | None) -> Loggers:
    """The run's loggers (rank 0; other ranks log nothing), closed as the run ends."""
    info = None
    if context.place.is_main:
        name = context.sweep.job if context.sweep else run_dir.name
        params = tracking.flat_hparams(spec)
        info = RunInfo(run_dir, name, params, context.sweep, resumed, {})
    return context.ends.enter_context(loggers.opened(spec.logger, info, context.ui.warn))


@dataclass
class _Prepared:
    """A validated run whose run dir is claimed: what its loop trains with."""

    backend: parallel.Backend
    hw: Hardware
    run: setup.RunSetup
    loop: LoopState  # fresh, or restored from the resume point
    stopper: metrics.EarlyStopping
    resume_from: Path | None
    restored_rng: dict[str, Any] | None
    saver: _Saver
    tracker: Loggers
    counts: tuple[int, int]  # trainable, frozen parameters
    trial: pruning.Trial | None = None
    pruned: bool = False  # the trial stopped the run


def _prepare(spec: RunSpec, run_dir: Path, context: _Context) -> _Prepared:
    """Backend, resume point, device, the run's pieces, restored state; then, all of it
    validated, the run dir's first writes, the checkpoint saver and the loggers."""
    place, ui, t = context.place, context.ui, spec.train
    _, mode = metrics.monitored(spec.task, t.early_stopping)
    backend = parallel.for_run(spec.hardware, place)
    backend.check(spec.strategy)
    found = _resume_point(spec, run_dir, ui) if place.is_main else None
    resume_from, unusable = distributed.broadcast(found, place)
    spec_yaml = plain.to_yaml(spec)
    hw = _hardware(spec, place)
    run = setup.build(spec, setup.Purpose.train, backend, hw, place)
    calibration.check(spec)
    checked = _check_data(spec, ui) if place.is_main and resume_from is None else None
    stopper = metrics.EarlyStopping(mode, t.early_stopping.patience, t.early_stopping.min_delta)
    loop = LoopState(config_yaml=spec_yaml, data_hash=resume.data_hash(run.prepared.train))
    restored_rng = None
    if resume_from is not None:
        loop, restored_rng = _restore(resume_from, loop, run, backend, hw, stopper, ui)
    claimed = None
    if place.is_main:  # validated: the run's first writes
        command = f"# ft train {shlex.join(context.overrides)}\n"  # as a shell reads it
        files = {**context.records, "config.yaml": command + spec_yaml}
        if checked is not None:
            files["data_check.json"] = checked.text()
        claimed = ownership.claim(run_dir, files, spec.overwrite, unusable, ui.info)
    distributed.barrier(place)
    saver = _Saver(run_dir / "checkpoints", t.keep_checkpoints, backend, run, hw)
    try:
        tracker = _open_loggers(spec, run_dir, context, loop.step if resume_from else None)
    except Exception:
        if claimed is not None:  # nothing trained: the run dir is as it was
            ownership.release(claimed, ui.info)
        raise
    counts = _announce(spec, run, hw, place, ui, tracker, run_dir, spec_yaml)
    return _Prepared(
        backend,
        hw,
        run,
        loop,
        stopper,
        resume_from,
        restored_rng,
        saver,
        tracker,
        counts,
        context.trial,
    )


def _check_data(spec: RunSpec, ui: RunConsole) -> Any:
    """The short data check, a line per finding; data.checks=strict refuses to train on
    a blocking one (before the run dir is touched)."""
    from ft_cli.checks import run as data_checks

    found = data_checks.before_training(spec)
    if found is None:
        return None
    for finding in found.findings:
        ui.warn(f"data check: {finding.summary}")
    if spec.data.checks.value == "strict" and found.blocking():
        raise errors.FtError(data_checks.strict_refusal(found))
    return found


class _Throughput:
    """Training samples per second between two log steps, evaluation and checkpoints left out."""

    def __init__(self) -> None:
        self.samples, self.clock = 0, time.perf_counter()

    def rate(self) -> float:
        """Samples per second since the last call; starts the next span."""
        now = time.perf_counter()
        rate = self.samples / max(now - self.clock, 1e-9)
        self.samples, self.clock = 0, now
        return rate

    def leave_out(self, since: float) -> float:
        """Take the seconds since `since` (not training) out of the span; returns them."""
        seconds = time.perf_counter() - since
        self.clock += seconds
        return seconds


def _train(spec: RunSpec, run_dir: Path, context: _Context) -> RunResult:
    overrides, place, ui, t = context.overrides, context.place, context.ui, spec.train
    started = time.perf_counter()
    first_step_seconds: float | None = None  # start-up cost: loading, tokenizing, first step
    metric_name, _ = metrics.monitored(spec.task, t.early_stopping)
    ready = _prepare(spec, run_dir, context)
    backend, hw, run, loop, stopper = ready.backend, ready.hw, ready.run, ready.loop, ready.stopper
    saver, tracker, (trainable, frozen) = ready.saver, ready.tracker, ready.counts
    net, optimizer, scheduler, steps = run.net, run.optimizer, run.scheduler, run.steps
    assert steps is not None and run.penalty is not None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = t.max_grad_norm if t.max_grad_norm is not None else float("inf")
    stopped_early = False
    eval_seconds = 0.0  # evaluation and checkpoint time, kept out of the throughput
    # The loss stays on the device between log steps: no host sync per step.
    running_loss = torch.tensor(loop.running_loss, device=hw.device)
    meter = _Throughput()

    _seed_this_rank(place, t.seed, ready.restored_rng)
    synced = backend.wrap(run.forward, hw.device)
    interrupt = guards.InterruptGuard()
    ui.start(loop.step)
    loop_clock = time.perf_counter()
    run.applied.train_mode(net)
    optimizer.zero_grad(set_to_none=True)
    accum, per_epoch = t.grad_accum, steps.batches_per_epoch
    with interrupt:
        for epoch in range(loop.epoch, steps.epochs):
            first = loop.next_batch if epoch == loop.epoch else 0
            run.sampler.set_epoch(epoch, start=first)  # skipped batches are never collated
            run.objective.set_epoch(run.collate, epoch)
            group_loss = torch.zeros((), device=hw.device)
            for index, batch in enumerate(run.loader, start=first):
                if index % accum == 0 and run.applied.update(net, loop.step, epoch):
                    trainable, _ = strategy.parameter_counts(net)
                    ui.info(f"gradual unfreezing: step {loop.step}, {trainable:,} trainable")
                    synced = backend.wrap(run.forward, hw.device)  # a new trainable set
                if loop.step >= steps.total_steps:  # resumed from the final checkpoint
                    break
                # Accumulation groups start at each epoch's first batch; the last
                # group of an epoch may be short, so scale by its real size.
                group_start = index - index % accum
                group_size = min(accum, per_epoch - group_start)
                boundary = index - group_start + 1 == group_size
                loss, rows = _forward_backward(
                    batch, loop, run, backend, synced, hw, boundary, group_size
                )
                group_loss += loss
                meter.samples += rows * place.world
                if not boundary:
                    continue

                outcome = hw.optimizer_step(optimizer, params, max_norm)
                if outcome.nonfinite and t.on_nonfinite == NonFinite.stop:
                    raise guards.nonfinite_error(
                        loop.step + 1,
                        (loop.step + 1) / steps.steps_per_epoch,
                        float(group_loss / group_size),
                        str(saver.last) if saver.last else None,
                    )
                loop.skipped_steps += int(outcome.skipped)
                scheduler.step()
                if outcome.nonfinite:
                    loop.running_batches -= group_size  # keep the logged loss finite
                else:
                    running_loss += group_loss
                group_loss = torch.zeros((), device=hw.device)
                loop.advance(epoch, index, per_epoch)
                if first_step_seconds is None:
                    first_step_seconds = time.perf_counter() - started

                logs = None
                if loop.step % t.log_every == 0 or loop.step == steps.total_steps:
                    rate = meter.rate()
                    logs = _train_logs(loop, running_loss, scheduler, outcome, rate, run, place)
                    tracker.scalars("train", logs, loop.step)
                ui.step(loop.step, loop.step / steps.steps_per_epoch, logs)

                pause = time.perf_counter()
                epoch_end = index == per_epoch - 1
                stopped_early = _step_end(spec, ready, running_loss, epoch_end, metric_name, ui)
                if distributed.any_rank(interrupt.requested is not None, place):
                    saver.save_once(loop, running_loss, stopper)
                    ui.stop()
                    signum = interrupt.requested or signal.SIGTERM
                    raise _interrupted(signum, loop, saver.last, run_dir, overrides, place.is_main)
                last = loop.step >= steps.total_steps
                eval_seconds += meter.leave_out(pause)
                if stopped_early or last:
                    break
            if stopped_early or loop.step >= steps.total_steps:
                break
    timing = {
        "train": time.perf_counter() - loop_clock - eval_seconds,
        "first_step": first_step_seconds,
        "wall_started": started,
        "resumed_from": ready.resume_from,
    }
    end = _Ending(spec, run, backend, hw, place, ui, tracker, saver, run_dir, overrides)
    return end.finish(loop, stopper, stopped_early, timing, (trainable, frozen), ready.pruned)


def _step_end(
    spec: RunSpec,
    ready: _Prepared,
    running_loss: torch.Tensor,
    epoch_end: bool,
    metric_name: str,
    ui: RunConsole,
) -> bool:
    """Evaluate and checkpoint where this optimizer step calls for it; True when early
    stopping says stop."""
    t, loop, run, saver, stopper = spec.train, ready.loop, ready.run, ready.saver, ready.stopper
    assert run.steps is not None
    last = loop.step >= run.steps.total_steps
    due = (t.eval_every is not None and loop.step % t.eval_every == 0) or (
        t.eval_every is None and epoch_end
    )
    stop = False
    if run.val_loader is not None and (due or last):
        stop = _evaluate_and_save(spec, ready, running_loss, metric_name, ui)
    elif run.val_loader is None and (epoch_end or last):
        saver.save(loop, running_loss, stopper)
    if t.save_every and loop.step % t.save_every == 0:
        saver.save_once(loop, running_loss, stopper)
    return stop


def _evaluate_and_save(
    spec: RunSpec, ready: _Prepared, running_loss: torch.Tensor, metric_name: str, ui: RunConsole
) -> bool:
    """Evaluate, track the best, checkpoint; True when early stopping says stop."""
    loop, run, stopper = ready.loop, ready.run, ready.stopper
    assert run.steps is not None
    loop.last_metrics = evaluate(
        run.forward, run.objective, run.val_loader, ready.hw, ready.backend
    )
    run.applied.train_mode(run.net)  # evaluation left every module in train mode
    ready.tracker.scalars("eval", loop.last_metrics, loop.step)
    if stopper.update(loop.last_metrics[metric_name]):
        loop.best_checkpoint = checkpoint.checkpoint_name(loop.step)
        loop.best_metrics = {**loop.last_metrics, "step": loop.step}
    ready.saver.save(loop, running_loss, stopper)  # kept, a pruned run's too
    title = f"eval: step {loop.step}, epoch {loop.step / run.steps.steps_per_epoch:.2f}"
    ui.metrics_table(title, loop.last_metrics, metric_name)
    value = loop.last_metrics[metric_name]
    if pruning.decide(ready.trial, value, loop.step, ready.backend.place):
        ready.pruned = True
        ready.tracker.scalars("search", {"pruned": 1.0}, loop.step)
        return True
    return spec.train.early_stopping.enabled and stopper.should_stop


@dataclass
class _Ending:
    """What a run does after its loop: export, test, record, summary."""

    spec: RunSpec
    run: setup.RunSetup
    backend: parallel.Backend
    hw: Hardware
    place: distributed.Dist
    ui: RunConsole
    tracker: Loggers
    saver: _Saver
    run_dir: Path
    overrides: list[str]

    def finish(
        self,
        loop: LoopState,
        stopper: Any,
        stopped_early: bool,
        timing: dict[str, Any],
        counts: tuple[int, int],
        pruned: bool = False,
    ) -> RunResult:
        spec, hw, place, run_dir = self.spec, self.hw, self.place, self.run_dir
        metric_name, mode = metrics.monitored(spec.task, spec.train.early_stopping)
        self.ui.stop()
        if pruned:
            self.ui.info(f"pruned by the search at step {loop.step}: {metric_name} fell behind")
        elif stopped_early:
            self.ui.info(
                f"early stopping: {metric_name} did not improve for {stopper.patience}"
                f" evaluation(s); best {stopper.best:.4f}"
            )
        export_dir, exported_from, run = _export(
            spec, self.run, self.backend, hw, self.saver.root, loop, run_dir
        )
        test_metrics = _test_metrics(run, self.backend, hw, place)
        if test_metrics:
            self.tracker.scalars("test", test_metrics, loop.step)
        totals = [loop.samples_seen, loop.real_tokens, loop.padded_tokens]
        samples, tokens, padded = np.sum(distributed.gather(totals, place), axis=0).tolist()
        best_value = stopper.best if run.val_loader is not None else None
        assert run.steps is not None
        resumed_from = timing["resumed_from"]
        timing = {**timing, "wall": time.perf_counter() - timing["wall_started"]}
        record = {
            "status": pruning.PRUNED
            if pruned
            else ("stopped_early" if stopped_early else "completed"),
            "monitor": {"metric": metric_name, "mode": mode.value, "best": best_value},
            "best": loop.best_metrics,
            "final": loop.last_metrics,
            "test": test_metrics,
            "steps": loop.step,
            "epochs": round(loop.step / run.steps.steps_per_epoch, 4),
            "skipped_steps": loop.skipped_steps,
            **_throughput(samples, tokens, padded, timing),
            "resumed_from": str(resumed_from) if resumed_from else None,
            "trainable_parameters": counts[0],
            "frozen_parameters": counts[1],
            "device": hw.device.type,
            "processes": place.world,
            "precision": hw.precision.value,
            "compiled": spec.hardware.compile,
            "exported_from": exported_from,
            "labels": run.labels,
            **tasks.get(spec.task.kind).record(run.spec.task, run.labels),
            **_windows_record(run.prepared),
        }
        if place.is_main:
            if calibration.wanted(spec) and export_dir.is_dir():
                record["calibration"] = calibration.calibrate_run(str(run_dir), spec=spec)
                self.ui.info(calibration.summary(record["calibration"]))
            tracking.write_metrics(run_dir, record)
            model_card.write(export_dir, spec, record, self.overrides)
        results = {f"best/{k}": v for k, v in loop.best_metrics.items() if k != "step"}
        results |= {f"final/{k}": v for k, v in loop.last_metrics.items()}
        self.tracker.results(results or {"steps": float(loop.step)}, loop.step)
        self.tracker.artifacts(
            {
                "config.yaml": run_dir / "config.yaml",
                "metrics.json": run_dir / "metrics.json",
                "strategy.json": run_dir / "strategy.json",
                "model/README.md": export_dir / "README.md",
            }
        )
        if test_metrics:
            self.ui.metrics_table("test", test_metrics)
        self.ui.summary(
            _summary_rows(
                record,
                metric_name,
                export_dir,
                run_dir / "metrics.json",
                self.saver.root,
                self.tracker,
            )
        )
        return RunResult(
            metric_name,
            best_value,
            loop.best_metrics,
            loop.last_metrics,
            loop.step,
            stopped_early,
            run_dir,
            run.net,
            pruned,
        )


def _forward_backward(
    batch: dict[str, torch.Tensor],
    loop: LoopState,
    run: setup.RunSetup,
    backend: parallel.Backend,
    synced: Any,
    hw: Hardware,
    boundary: bool,
    group_size: int,
) -> tuple[torch.Tensor, int]:
    """One micro-batch: forward under autocast, backward; (its detached loss, its rows)."""
    rows, real, padded = run.objective.count(batch)  # still on the CPU: costs no sync
    loop.real_tokens += real
    loop.padded_tokens += padded
    shape = run.objective.input_shape(batch)
    batch = {k: v.to(hw.device, non_blocking=True) for k, v in batch.items()}
    assert run.penalty is not None
    try:
        # Data-parallel ranks average gradients only at the group's last batch.
        with backend.sync(synced, boundary), hw.autocast():
            predictions, targets = synced(batch)
        loss = run.objective.loss(predictions, targets)
        objective_value = loss + run.penalty() if run.penalty.active else loss
        with backend.sync(synced, boundary):
            hw.backward(objective_value / group_size)
    except torch.OutOfMemoryError as err:
        batch_size = run.spec.train.batch_size
        smaller = run.objective.smaller_inputs
        raise guards.oom_error(batch_size, shape, smaller, hw.precision.value) from err
    loop.running_batches += 1
    loop.samples_seen += rows
    return loss.detach(), rows


def _seed_this_rank(place: distributed.Dist, seed: int, restored: dict[str, Any] | None) -> None:
    if place.rank > 0:
        # Same weights on every rank, but each its own dropout masks; rank 0
        # draws exactly as a single process would.
        seed_everything(seed + 1_000_003 * place.rank)
    if restored is not None:
        # Last, after everything that draws random numbers while setting up.
        checkpoint.restore_rng(restored)


def _train_logs(
    loop: LoopState,
    running_loss: torch.Tensor,
    scheduler: Any,
    outcome: Any,
    samples_per_s: float,
    run: setup.RunSetup,
    place: distributed.Dist,
) -> dict[str, float]:
    """The train scalars of a log step; reads the loss from the device (the one sync)."""
    assert run.steps is not None
    window_loss = distributed.mean(running_loss.clone(), place)
    logs = {
        "loss": window_loss.item() / max(loop.running_batches, 1),
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": float(outcome.grad_norm),
        "samples_per_s": samples_per_s,
        "epoch": loop.step / run.steps.steps_per_epoch,
        "skipped_steps": float(loop.skipped_steps),
    }
    running_loss.zero_()
    loop.running_batches = 0
    return logs


def _restore(
    folder: Path,
    fresh: LoopState,
    run: setup.RunSetup,
    backend: parallel.Backend,
    hw: Hardware,
    stopper: Any,
    ui: RunConsole,
) -> tuple[LoopState, dict[str, Any]]:
    """Load a checkpoint into the run; (its loop state, this rank's RNG state)."""
    saved = checkpoint.load_state(folder)
    previous = LoopState.from_dict(saved["loop"])
    changes = resume.config_changes(previous.config_yaml, fresh.config_yaml)
    resume.check_drift(changes, previous.data_hash, fresh.data_hash, run.spec.resume_force, ui.warn)
    backend.resume(folder, run.net, run.forward, run.optimizer, saved)
    run.scheduler.load_state_dict(saved["scheduler"])
    hw.scaler.load_state_dict(saved["scaler"])
    loop = dataclasses.replace(previous, config_yaml=fresh.config_yaml, data_hash=fresh.data_hash)
    stopper.best, stopper.bad_evals = loop.best_value, loop.bad_evals
    rng = _rng_of_rank(saved["rng"], backend.place, ui)
    ui.info(f"resuming from {folder} (step {loop.step}, epoch {loop.epoch})")
    return loop, rng


def _announce(
    spec: RunSpec,
    run: setup.RunSetup,
    hw: Hardware,
    place: distributed.Dist,
    ui: RunConsole,
    tracker: Any,
    run_dir: Path,
    spec_yaml: str,
) -> tuple[int, int]:
    """The run's first lines, its strategy table and record; (trainable, frozen) counts."""
    steps, t, prepared = run.steps, spec.train, run.prepared
    assert steps is not None
    trainable, frozen = strategy.parameter_counts(run.net)
    ui.set_total(steps.total_steps)
    ui.info(
        f"[bold]ft[/] {model.resolved_name(spec.model)} | train {len(prepared.train)} rows,"
        f" validation {len(prepared.validation) if prepared.validation else 0} |"
        f" {hw.device.type} {hw.precision.value} ({hw.reason}) |"
        f" {trainable:,} trainable / {frozen:,} frozen parameters ({spec.strategy.kind.value})"
    )
    ui.info(f"{steps.epochs} epoch(s), {steps.total_steps} optimizer steps, run dir {run_dir}")
    if place.enabled:
        rows = place.world * t.batch_size * t.grad_accum
        ui.info(
            f"data parallel: {place.world} processes x batch {t.batch_size}"
            f" x grad_accum {t.grad_accum} = {rows} rows per step"
        )
    record = strategy_report.strategy_record(
        spec.strategy.kind.value, run.net, run.optimizer, run.applied, run.unfreeze_at
    )
    tracker.text("config", "```\n" + spec_yaml + "\n```")
    if place.is_main:
        strategy_report.write(run_dir, record)
    tracker.text("strategy", "```\n" + json.dumps(record, indent=2) + "\n```")
    opening = f" (unfreezing at steps {run.unfreeze_at})" if run.applied.unfreeze_every else ""
    ui.table(
        f"strategy {spec.strategy.kind.value}{opening}",
        ["layer group", "trainable", "frozen", "lr"],
        strategy_report.table_rows(record),
    )
    return trainable, frozen


def _export(
    spec: RunSpec,
    run: setup.RunSetup,
    backend: parallel.Backend,
    hw: Hardware,
    ckpt_root: Path,
    loop: LoopState,
    run_dir: Path,
) -> tuple[Path, str, setup.RunSetup]:
    """Write model/ (the best or last weights, as the strategy exports them)."""
    export_dir = run_dir / "model"
    exported_from = "last step"
    best_dir = ckpt_root / loop.best_checkpoint if loop.best_checkpoint else None
    if spec.train.export == Export.best and best_dir is not None and best_dir.is_dir():
        backend.load_weights(best_dir, run.net, run.forward, run.optimizer)
        exported_from = f"best checkpoint {best_dir.name}"
    net = run.hooks.export(run.net, run_dir, backend.is_main)
    if net is not run.net:  # a new model (LoRA merged): evaluate what is exported
        objective = run.hooks.objective(net, run.spec, run.tokenizer, run.labels, hw.device)
        run = dataclasses.replace(
            run, net=net, objective=objective, forward=StepForward(net, objective)
        )
    weights = backend.full_weights(run.forward)
    if backend.is_main:
        tasks.get(spec.task.kind).save(
            net, run.tokenizer, export_dir, weights, run.spec.task, run.labels
        )
    return export_dir, exported_from, run


def _test_metrics(
    run: setup.RunSetup, backend: parallel.Backend, hw: Hardware, place: distributed.Dist
) -> dict[str, float]:
    test = run.prepared.test
    if test is None or any(label == -1 for label in test.labels):
        return {}
    loader = setup.eval_loader(run, test, place, backend)
    return evaluate(run.forward, run.objective, loader, hw, backend)


def _windows_record(prepared: Any) -> dict[str, Any]:
    """How many windows each split's long inputs made (data.long_inputs=windows, question
    answering's contexts)."""
    made = {}
    for name in ("train", "validation", "test"):
        split = getattr(prepared, name, None)
        owners = getattr(split, "rows", None)
        if owners is not None:
            made[name] = {"rows": len(set(owners)), "windows": len(owners)}
    return {"windows": made} if made else {}


def _throughput(samples: int, tokens: int, padded: int, timing: dict[str, Any]) -> dict[str, Any]:
    seconds = max(timing["train"], 1e-9)
    return {
        "train_samples": samples,
        "train_samples_per_s": samples / seconds,
        "train_tokens_per_s": tokens / seconds,
        "padding_fraction": 1 - tokens / max(padded, 1),
        "train_seconds": timing["train"],
        "time_to_first_step_s": timing["first_step"],
        "wall_seconds": timing["wall"],
    }


def _rng_of_rank(saved: Any, place: distributed.Dist, ui: RunConsole) -> dict[str, Any]:
    """This rank's RNG state from a checkpoint (a list of them when written by several)."""
    states = saved if isinstance(saved, list) else [saved]
    if len(states) != place.world:
        ui.warn(
            f"resume: the checkpoint was written by {len(states)} process(es), this run has"
            f" {place.world}; data order and dropout differ from an uninterrupted run"
        )
    return states[place.rank % len(states)]


def _interrupted(
    signum: int,
    loop: LoopState,
    saved: Path | None,
    run_dir: Path,
    overrides: list[str] | None,
    main: bool = True,
) -> guards.RunInterrupted:
    kept = [o for o in overrides if not o.startswith(("resume=", "hydra.run.dir="))]
    where = shlex.quote(compose.override("hydra.run.dir", run_dir))
    command = " ".join(["ft train", *map(shlex.quote, kept), where, "resume=auto"])
    if main:
        record = {"status": "interrupted", "steps": loop.step}
        tracking.write_metrics(run_dir, {**record, "checkpoint": str(saved) if saved else None})
    return guards.RunInterrupted(
        signum, f"interrupted at step {loop.step}; checkpoint {saved}; resume with: {command}"
    )


def _summary_rows(
    record: dict[str, Any],
    metric_name: str,
    export_dir: Path,
    metrics_path: Path,
    ckpt_root: Path,
    tracker: Loggers,
) -> list[tuple[str, str]]:
    speed = f"{record['train_samples_per_s']:.1f} samples/s"
    if record["train_tokens_per_s"]:  # inputs of tokens (not images)
        speed += (
            f", {record['train_tokens_per_s']:.0f} tokens/s,"
            f" {record['padding_fraction']:.1%} padding"
        )
    rows = [
        ("status", record["status"]),
        ("steps", f"{record['steps']} ({record['epochs']} epochs)"),
        ("throughput", speed),
        ("wall time", f"{record['wall_seconds']:.1f}s"),
    ]
    best = record["monitor"]["best"]
    if best is not None:
        rows.append((f"best {metric_name}", f"{best:.4f} (step {record['best'].get('step')})"))
    rows += [
        ("model", f"{export_dir} ({record['exported_from']})"),
        ("metrics", str(metrics_path)),
        ("checkpoints", str(ckpt_root)),
    ]
    return rows + tracker.where()
