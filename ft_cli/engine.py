"""The one training engine: `train(spec) -> RunResult`.

Read top to bottom: seed, hardware, data, model and strategy, optimizer and
schedule, resume, then one loop: forward under autocast, backward through the
scaler, at the accumulation boundary unscale/clip/step/schedule, then log,
evaluate, early-stop check, checkpoint, interrupt check. Ends with the export
of the best (or last) model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from rich.console import Console

from ft_cli import (
    batching,
    checkpoint,
    data,
    distill,
    distributed,
    guards,
    lora,
    metrics,
    model,
    model_card,
    optim,
    ownership,
    regularize,
    resume,
    sharded,
    strategy,
    strategy_report,
    tracking,
)
from ft_cli.console import RunConsole
from ft_cli.hardware import Hardware, setup_hardware
from ft_cli.loop_state import LoopState
from ft_cli.objective import Objective, build_objective
from ft_cli.schema import Export, NonFinite, Parallel, RunSpec, StrategyKind


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def evaluate(
    forward: torch.nn.Module,
    objective: Objective,
    loader: Any,
    hw: Hardware,
    place: distributed.Dist = distributed.SINGLE,
) -> dict[str, float]:
    """The task's metrics over `loader`; with several processes, over all their parts.

    `forward`: the objective's forward module (`StepForward`), which under
    FSDP gathers the sharded weights it needs.
    """
    was_training = forward.training
    forward.eval()
    scores = objective.new_metrics()
    real = getattr(loader, "real_batches", None)
    with torch.no_grad(), hw.autocast():
        for index, batch in enumerate(loader):
            batch = {k: v.to(hw.device, non_blocking=True) for k, v in batch.items()}
            outputs = forward(batch)
            if real is None or index < real:  # FSDP's top-up batches only keep step
                scores.update(*outputs)
    forward.train(was_training)
    if place.enabled:
        parts = distributed.gather(scores, place)
        scores = parts[0].merge(parts[1:])
    return scores.compute()


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
) -> RunResult:
    """Run one training job as the spec says; writes everything under `run_dir`.

    The run dir is locked for the run, and nothing is written into it until
    the spec, the data and the resume point are validated. `records`: more
    files (name -> text) written then, such as Hydra's record of the command.
    """
    # Data-parallel: every rank trains; rank 0 alone prints, locks and writes files.
    place = distributed.init()
    ui = RunConsole(None if place.is_main else Console(quiet=True))
    target = resume.target_dir(spec.resume, Path(run_dir))
    with ownership.locked(target, ui.warn, enabled=place.is_main):
        return _train(spec, target, overrides or [], records or {}, place, ui)


def _train(
    spec: RunSpec,
    run_dir: Path,
    overrides: list[str],
    records: dict[str, str],
    place: distributed.Dist,
    ui: RunConsole,
) -> RunResult:
    started = time.perf_counter()
    first_step_seconds: float | None = None  # start-up cost: loading, tokenizing, first step
    task = spec.task.kind
    metric_name, mode = metrics.monitored(task, spec.train.early_stopping)
    main = place.is_main
    fsdp = place.enabled and spec.hardware.distributed == Parallel.fsdp
    if fsdp:
        sharded.check_supported(spec.strategy)
    found = _resume_point(spec, run_dir, ui) if main else None
    resume_from, unusable = distributed.broadcast(found, place)
    spec_yaml = OmegaConf.to_yaml(OmegaConf.structured(spec))

    seed_everything(spec.train.seed)
    hw = setup_hardware(spec.hardware, distributed.gpu_index(place))
    if place.enabled:  # e.g. the CPU bf16 probe must not differ between ranks
        decided = distributed.broadcast((hw.precision, hw.reason), place)
        hw = setup_hardware(spec.hardware, distributed.gpu_index(place), decided)
    tokenizer = model.load_tokenizer(spec.model)
    model.check_max_length(spec.model, spec.data.max_length)
    with distributed.main_first(place):  # rank 0 fills the token cache, the others read it
        prepared = data.prepare(spec.data, spec.task, tokenizer, spec.train.seed)
    num_labels = len(prepared.labels) if prepared.labels is not None else 1
    seed_everything(spec.train.seed)  # the head's init does not depend on the data size
    plan = spec.strategy
    net, new_names = model.load_model(
        spec.model, task, prepared.labels, len(tokenizer), plan.dropout
    )
    if plan.kind == StrategyKind.lora:
        net = lora.apply_lora(net, plan.lora)
    net = net.to(hw.device)
    applied = strategy.apply_strategy(net, plan)
    objective = _objective(spec, net, tokenizer, prepared.labels, num_labels, hw)
    step_forward = StepForward(net, objective)
    if fsdp:  # before the optimizer: it must hold the sharded parameters
        sharded.shard(step_forward, net)
    trainable, frozen = strategy.parameter_counts(net)

    seed = spec.train.seed
    collate = objective.collator(prepared.train, seed)
    loader, sampler = batching.train_loader(
        prepared.train,
        spec.train.batch_size,
        seed,
        collate,
        spec.train.group_by_length,
        place.rank,
        place.world,
    )
    val_loader = None
    if prepared.validation is not None:
        val_collate = objective.collator(prepared.validation, seed)
        val_loader = batching.eval_loader(
            prepared.validation,
            spec.train.eval_batch_size,
            val_collate,
            place.rank,
            place.world,
            even=fsdp,
        )
    accum = spec.train.grad_accum
    batches_per_epoch = len(sampler)
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    total_steps = spec.train.max_steps or steps_per_epoch * spec.train.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)

    gradual = plan.kind == StrategyKind.gradual_unfreeze
    optimizer = optim.build_optimizer(net, spec.optimizer, plan.lr_decay, include_frozen=gradual)
    unfreeze_at = strategy.unfreeze_steps(applied, steps_per_epoch, total_steps)
    scheduler = optim.build_scheduler(
        optimizer, spec.schedule, total_steps, unfreeze_at, plan.rewarm_steps
    )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    penalty = regularize.Penalty(net, plan, new_names)
    plan_record = strategy_report.strategy_record(
        plan.kind.value, net, optimizer, applied, unfreeze_at
    )
    max_norm = spec.train.max_grad_norm if spec.train.max_grad_norm is not None else math.inf
    stopper = metrics.EarlyStopping(
        mode, spec.train.early_stopping.patience, spec.train.early_stopping.min_delta
    )
    loop = LoopState(config_yaml=spec_yaml, data_hash=resume.data_hash(prepared.train))
    restored_rng = None
    if resume_from is not None:
        saved = checkpoint.load_state(resume_from)
        previous = LoopState.from_dict(saved["loop"])
        changes = resume.config_changes(previous.config_yaml, spec_yaml)
        resume.check_drift(changes, previous.data_hash, loop.data_hash, spec.resume_force, ui.warn)
        if fsdp:
            sharded.load(resume_from, step_forward, optimizer, saved["optimizer_groups"])
        else:
            checkpoint.load_weights(net, resume_from)
            optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        hw.scaler.load_state_dict(saved["scaler"])
        loop = dataclasses.replace(previous, config_yaml=spec_yaml, data_hash=loop.data_hash)
        stopper.best, stopper.bad_evals = loop.best_value, loop.bad_evals
        restored_rng = _rng_of_rank(saved["rng"], place, ui)
        ui.info(f"resuming from {resume_from} (step {loop.step}, epoch {loop.epoch})")

    if main:  # validated: the run's first writes
        header = f"# ft train {' '.join(overrides)}\n"
        files = {**records, "config.yaml": header + spec_yaml}
        ownership.claim(run_dir, files, spec.overwrite, unusable, ui.info)
    distributed.barrier(place)
    ckpt_root = run_dir / "checkpoints"
    purge_step = loop.step + 1 if resume_from else None
    tracker = tracking.Tracker(run_dir, purge_step) if main else tracking.NoTracker()
    ui.set_total(total_steps)
    ui.info(
        f"[bold]ft[/] {model.resolved_name(spec.model)} | train {len(prepared.train)} rows,"
        f" validation {len(prepared.validation) if prepared.validation else 0} |"
        f" {hw.device.type} {hw.precision.value} ({hw.reason}) |"
        f" {trainable:,} trainable / {frozen:,} frozen parameters ({spec.strategy.kind.value})"
    )
    ui.info(f"{epochs} epoch(s), {total_steps} optimizer steps, run dir {run_dir}")
    if place.enabled:
        ui.info(
            f"data parallel: {place.world} processes x batch {spec.train.batch_size}"
            f" x grad_accum {accum} = {place.world * spec.train.batch_size * accum} rows per step"
        )
    tracker.text("config", "```\n" + spec_yaml + "\n```")
    if main:
        strategy_report.write(run_dir, plan_record)
    tracker.text("strategy", "```\n" + json.dumps(plan_record, indent=2) + "\n```")
    ui.table(
        f"strategy {plan.kind.value}"
        + (f" (unfreezing at steps {unfreeze_at})" if gradual else ""),
        ["layer group", "trainable", "frozen", "lr"],
        strategy_report.table_rows(plan_record),
    )

    stopped_early = False
    eval_seconds = 0.0  # evaluation and checkpoint time, kept out of the throughput
    # The loss stays on the device between log steps: no host sync per step.
    running_loss = torch.tensor(loop.running_loss, device=hw.device)
    log_samples, log_clock = 0, time.perf_counter()
    last_saved: Path | None = None

    def save() -> Path:
        nonlocal last_saved
        loop.running_loss = float(distributed.mean(running_loss.clone(), place))
        loop.best_value, loop.bad_evals = stopper.best, stopper.bad_evals
        # Every rank's RNG state is kept: its dropout masks differ from the others'.
        rng = distributed.gather(checkpoint.rng_state(), place) if place.enabled else None
        state = loop.to_dict()
        if fsdp:  # every rank writes its shards into rank 0's temporary folder
            if main:
                needed = checkpoint.estimated_bytes(net, optimizer)
                checkpoint.begin(ckpt_root, loop.step, needed)
            distributed.barrier(place)
            tmp = ckpt_root / f"{checkpoint.TMP_PREFIX}{checkpoint.checkpoint_name(loop.step)}"
            groups = sharded.save(tmp, step_forward, optimizer)
            distributed.barrier(place)
            if main:
                checkpoint.commit(
                    ckpt_root, tmp, loop.step, groups, scheduler, hw.scaler, state, rng
                )
        elif main:
            checkpoint.save_checkpoint(
                ckpt_root, loop.step, net, optimizer, scheduler, hw.scaler, state, rng
            )
        if main:
            best = ckpt_root / loop.best_checkpoint if loop.best_checkpoint else None
            checkpoint.prune_checkpoints(ckpt_root, spec.train.keep_checkpoints, best)
        distributed.barrier(place)
        last_saved = ckpt_root / checkpoint.checkpoint_name(loop.step)
        return last_saved

    def save_once() -> None:
        if last_saved is None or last_saved.name != checkpoint.checkpoint_name(loop.step):
            save()

    def run_evaluation() -> bool:
        """Evaluate, track the best, checkpoint; True when early stopping says stop."""
        assert val_loader is not None
        loop.last_metrics = evaluate(step_forward, objective, val_loader, hw, place)
        applied.train_mode(net)  # evaluation left every module in train mode
        tracker.scalars("eval", loop.last_metrics, loop.step)
        if stopper.update(loop.last_metrics[metric_name]):
            loop.best_checkpoint = checkpoint.checkpoint_name(loop.step)
            loop.best_metrics = {**loop.last_metrics, "step": loop.step}
        save()
        title = f"eval: step {loop.step}, epoch {loop.step / steps_per_epoch:.2f}"
        ui.metrics_table(title, loop.last_metrics, metric_name)
        return spec.train.early_stopping.enabled and stopper.should_stop

    if place.rank > 0:
        # Same weights on every rank, but each its own dropout masks; rank 0
        # draws exactly as a single process would.
        seed_everything(spec.train.seed + 1_000_003 * place.rank)
    if restored_rng is not None:
        # Last, after everything that draws random numbers while setting up.
        checkpoint.restore_rng(restored_rng)
    synced = step_forward if fsdp else _data_parallel(step_forward, hw, place)
    interrupt = guards.InterruptGuard()
    ui.start(loop.step)
    loop_clock = time.perf_counter()
    applied.train_mode(net)
    optimizer.zero_grad(set_to_none=True)
    with interrupt:
        for epoch in range(loop.epoch, epochs):
            first = loop.next_batch if epoch == loop.epoch else 0
            sampler.set_epoch(epoch, start=first)  # skipped batches are never collated
            objective.set_epoch(collate, epoch)
            group_loss = torch.zeros((), device=hw.device)
            for index, batch in enumerate(loader, start=first):
                if index % accum == 0 and applied.update(net, loop.step, epoch):
                    trainable, _ = strategy.parameter_counts(net)
                    ui.info(f"gradual unfreezing: step {loop.step}, {trainable:,} trainable")
                    # DistributedDataParallel fixes its parameter set when built.
                    synced = _data_parallel(step_forward, hw, place)
                if loop.step >= total_steps:  # resumed from the final checkpoint
                    break
                mask = batch["attention_mask"]  # still on the CPU: counting costs no sync
                loop.real_tokens += int(mask.sum())
                loop.padded_tokens += mask.numel()
                batch = {k: v.to(hw.device, non_blocking=True) for k, v in batch.items()}
                rows = len(batch["input_ids"])
                # Accumulation groups start at each epoch's first batch; the last
                # group of an epoch may be short, so scale by its real size.
                group_start = index - index % accum
                group_size = min(accum, batches_per_epoch - group_start)
                boundary = index - group_start + 1 == group_size
                try:
                    # Data-parallel ranks average gradients only at the group's last batch.
                    with _grad_sync(synced, boundary), hw.autocast():
                        predictions, targets = synced(batch)
                    loss = objective.loss(predictions, targets)
                    objective_value = loss + penalty() if penalty.active else loss
                    with _grad_sync(synced, boundary):
                        hw.scaler.scale(objective_value / group_size).backward()
                except torch.OutOfMemoryError as err:
                    seq = mask.shape[1]
                    oom = guards.oom_error(spec.train.batch_size, seq, hw.precision.value)
                    raise oom from err
                group_loss += loss.detach()
                loop.running_batches += 1
                loop.samples_seen += rows
                log_samples += rows * place.world
                if not boundary:
                    continue

                hw.scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                grad_norm = distributed.full_tensor(grad_norm)  # FSDP: a sharded norm
                skipped = False
                if not hw.scaler.is_enabled() and not torch.isfinite(grad_norm):
                    # One scalar sync per step; fp16's GradScaler does this check itself.
                    if spec.train.on_nonfinite == NonFinite.stop:
                        value = float(group_loss / group_size)
                        epoch_at = (loop.step + 1) / steps_per_epoch
                        last = str(last_saved) if last_saved else None
                        raise guards.nonfinite_error(loop.step + 1, epoch_at, value, last)
                    skipped = True
                    loop.skipped_steps += 1
                    optimizer.zero_grad(set_to_none=True)
                scale = hw.scaler.get_scale() if hw.scaler.is_enabled() else None
                if not skipped:
                    hw.scaler.step(optimizer)
                    hw.scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                if scale is not None and hw.scaler.get_scale() < scale:
                    loop.skipped_steps += 1  # the scaler found inf/nan and skipped the step
                scheduler.step()
                if skipped:
                    loop.running_batches -= group_size  # keep the logged loss finite
                else:
                    running_loss += group_loss
                group_loss = torch.zeros((), device=hw.device)
                loop.step += 1
                loop.epoch, loop.next_batch = epoch, index + 1
                if loop.next_batch == batches_per_epoch:
                    loop.epoch, loop.next_batch = epoch + 1, 0
                if first_step_seconds is None:
                    first_step_seconds = time.perf_counter() - started

                logs = None
                if loop.step % spec.train.log_every == 0 or loop.step == total_steps:
                    now = time.perf_counter()
                    window_loss = distributed.mean(running_loss.clone(), place)
                    logs = {
                        "loss": window_loss.item() / max(loop.running_batches, 1),  # the sync
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm),
                        "samples_per_s": log_samples / max(now - log_clock, 1e-9),
                        "epoch": loop.step / steps_per_epoch,
                        "skipped_steps": float(loop.skipped_steps),
                    }
                    tracker.scalars("train", logs, loop.step)
                    running_loss.zero_()
                    loop.running_batches, log_samples, log_clock = 0, 0, now
                ui.step(loop.step, loop.step / steps_per_epoch, logs)

                epoch_end = index == batches_per_epoch - 1
                last = loop.step >= total_steps
                every = spec.train.eval_every
                due = (every is not None and loop.step % every == 0) or (
                    every is None and epoch_end
                )
                pause = time.perf_counter()
                if val_loader is not None and (due or last):
                    stopped_early = run_evaluation()
                elif val_loader is None and (epoch_end or last):
                    save()
                if spec.train.save_every and loop.step % spec.train.save_every == 0:
                    save_once()
                if distributed.any_rank(interrupt.requested is not None, place):
                    save_once()
                    ui.stop()
                    tracker.close()
                    signum = interrupt.requested or signal.SIGTERM
                    stop = _interrupted(signum, loop, last_saved, run_dir, overrides, main)
                    raise stop
                eval_seconds += time.perf_counter() - pause
                log_clock += time.perf_counter() - pause
                if stopped_early or last:
                    break
            if stopped_early or loop.step >= total_steps:
                break
    train_seconds = time.perf_counter() - loop_clock - eval_seconds
    ui.stop()
    if stopped_early:
        ui.info(
            f"early stopping: {metric_name} did not improve for {stopper.patience}"
            f" evaluation(s); best {stopper.best:.4f}"
        )

    export_dir = run_dir / "model"
    exported_from = "last step"
    best_dir = ckpt_root / loop.best_checkpoint if loop.best_checkpoint else None
    if spec.train.export == Export.best and best_dir is not None and best_dir.is_dir():
        if fsdp:
            sharded.load(best_dir, step_forward, optimizer, None)
        else:
            checkpoint.load_weights(net, best_dir)
        exported_from = f"best checkpoint {best_dir.name}"
    if plan.kind == StrategyKind.lora:
        keep = plan.lora.keep_adapter and main
        net = lora.merged(net, run_dir / "adapter" if keep else None)
        objective = _objective(spec, net, tokenizer, prepared.labels, num_labels, hw)
        step_forward = StepForward(net, objective)
    # FSDP: the full weights, gathered on rank 0 (every rank takes part).
    weights = sharded.full_weights(step_forward, "net.", main) if fsdp else None
    if main:
        net.save_pretrained(export_dir, state_dict=weights)
        tokenizer.save_pretrained(export_dir)

    test_metrics: dict[str, float] = {}
    if prepared.test is not None and all(label != -1 for label in prepared.test.labels):
        test_collate = objective.collator(prepared.test, seed)
        test_loader = batching.eval_loader(
            prepared.test,
            spec.train.eval_batch_size,
            test_collate,
            place.rank,
            place.world,
            even=fsdp,
        )
        test_metrics = evaluate(step_forward, objective, test_loader, hw, place)
        tracker.scalars("test", test_metrics, loop.step)
    samples, tokens, padded = np.sum(
        distributed.gather([loop.samples_seen, loop.real_tokens, loop.padded_tokens], place),
        axis=0,
    ).tolist()

    wall = time.perf_counter() - started
    best_value = stopper.best if val_loader is not None else None
    record = {
        "status": "stopped_early" if stopped_early else "completed",
        "monitor": {"metric": metric_name, "mode": mode.value, "best": best_value},
        "best": loop.best_metrics,
        "final": loop.last_metrics,
        "test": test_metrics,
        "steps": loop.step,
        "epochs": round(loop.step / steps_per_epoch, 4),
        "skipped_steps": loop.skipped_steps,
        "train_samples": samples,
        "train_samples_per_s": samples / max(train_seconds, 1e-9),
        "train_tokens_per_s": tokens / max(train_seconds, 1e-9),
        "padding_fraction": 1 - tokens / max(padded, 1),
        "train_seconds": train_seconds,
        "time_to_first_step_s": first_step_seconds,
        "wall_seconds": wall,
        "resumed_from": str(resume_from) if resume_from else None,
        "trainable_parameters": trainable,
        "frozen_parameters": frozen,
        "device": hw.device.type,
        "processes": place.world,
        "precision": hw.precision.value,
        "compiled": spec.hardware.compile,
        "exported_from": exported_from,
        "labels": prepared.labels,
    }
    metrics_path = run_dir / "metrics.json"
    if main:
        tracking.write_metrics(run_dir, record)
        model_card.write(export_dir, spec, record, overrides)
    # Best and final metrics next to the flattened config: a sweep sorts by
    # either in TensorBoard's HPARAMS tab (`tensorboard --logdir SWEEP_DIR`).
    results = {f"best_{k}": v for k, v in loop.best_metrics.items() if k != "step"}
    results |= {f"final_{k}": v for k, v in loop.last_metrics.items()}
    tracker.hparams(tracking.flat_hparams(spec), results or {"steps": float(loop.step)})
    tracker.close()

    if test_metrics:
        ui.metrics_table("test", test_metrics)
    ui.summary(_summary_rows(record, metric_name, export_dir, metrics_path, ckpt_root, run_dir))
    return RunResult(
        metric_name=metric_name,
        metric=best_value,
        best=loop.best_metrics,
        final=loop.last_metrics,
        steps=loop.step,
        stopped_early=stopped_early,
        run_dir=run_dir,
        model=net,
    )


class StepForward(torch.nn.Module):
    """The objective's forward pass as one module, so DistributedDataParallel can wrap it.

    Some objectives call parts of the model (the masked-LM head runs on masked
    positions only), so DDP wraps this module rather than the model itself.
    """

    def __init__(self, net: torch.nn.Module, objective: Objective) -> None:
        super().__init__()
        self.net = net
        self.objective = objective  # a plain object: the teacher stays out of DDP

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.objective.outputs(batch)


def _data_parallel(forward: StepForward, hw: Hardware, place: distributed.Dist) -> Any:
    """`forward` itself, or wrapped in DistributedDataParallel when several processes train."""
    if not place.enabled:
        return forward
    from torch.nn.parallel import DistributedDataParallel

    ids = [hw.device.index] if hw.device.type == "cuda" else None
    return DistributedDataParallel(forward, device_ids=ids)


def _grad_sync(synced: Any, boundary: bool) -> Any:
    """No gradient all-reduce inside an accumulation group, only at its last batch."""
    if hasattr(synced, "set_requires_gradient_sync"):  # FSDP2
        sharded.set_gradient_sync(synced, boundary)
        return contextlib.nullcontext()
    if boundary or not hasattr(synced, "no_sync"):
        return contextlib.nullcontext()
    return synced.no_sync()


def _rng_of_rank(saved: Any, place: distributed.Dist, ui: RunConsole) -> dict[str, Any]:
    """This rank's RNG state from a checkpoint (a list of them when written by several)."""
    states = saved if isinstance(saved, list) else [saved]
    if len(states) != place.world:
        ui.warn(
            f"resume: the checkpoint was written by {len(states)} process(es), this run has"
            f" {place.world}; data order and dropout differ from an uninterrupted run"
        )
    return states[place.rank % len(states)]


def _objective(
    spec: RunSpec,
    net: torch.nn.Module,
    tokenizer: Any,
    labels: list[str] | None,
    num_labels: int,
    hw: Hardware,
) -> Objective:
    plan = spec.strategy
    if plan.kind == StrategyKind.distill:
        pad_id = tokenizer.pad_token_id or 0
        return distill.build(
            net, plan, spec.task.kind, labels, pad_id, hw.device, spec.hardware.compile
        )
    return build_objective(
        net, spec.task, tokenizer, num_labels, spec.hardware.compile, plan.label_smoothing, labels
    )


def _interrupted(
    signum: int,
    loop: LoopState,
    saved: Path | None,
    run_dir: Path,
    overrides: list[str] | None,
    main: bool = True,
) -> guards.RunInterrupted:
    kept = [o for o in overrides if not o.startswith(("resume=", "hydra.run.dir="))]
    command = " ".join(["ft train", *kept, f"hydra.run.dir={run_dir}", "resume=auto"])
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
    run_dir: Path,
) -> list[tuple[str, str]]:
    rows = [
        ("status", record["status"]),
        ("steps", f"{record['steps']} ({record['epochs']} epochs)"),
        (
            "throughput",
            f"{record['train_samples_per_s']:.1f} samples/s,"
            f" {record['train_tokens_per_s']:.0f} tokens/s,"
            f" {record['padding_fraction']:.1%} padding",
        ),
        ("wall time", f"{record['wall_seconds']:.1f}s"),
    ]
    best = record["monitor"]["best"]
    if best is not None:
        rows.append((f"best {metric_name}", f"{best:.4f} (step {record['best'].get('step')})"))
    rows += [
        ("model", f"{export_dir} ({record['exported_from']})"),
        ("metrics", str(metrics_path)),
        ("checkpoints", str(ckpt_root)),
        ("tensorboard", f"tensorboard --logdir {run_dir / 'tensorboard'}"),
    ]
    return rows
