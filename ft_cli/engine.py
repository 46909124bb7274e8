"""The one training engine: `train(spec) -> RunResult`.

Read top to bottom: seed, hardware, data, model and strategy, optimizer and
schedule, then one loop: forward under autocast, backward through the scaler,
at the accumulation boundary unscale/clip/step/schedule, then log, evaluate,
early-stop check, checkpoint. Ends with the export of the best (or last) model.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from ft_cli import batching, checkpoint, data, metrics, model, optim, strategy, tracking
from ft_cli.console import RunConsole
from ft_cli.errors import FtError
from ft_cli.hardware import Hardware, setup_hardware
from ft_cli.schema import Export, RunSpec, TaskKind


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


def check_loop_settings(spec: RunSpec) -> None:
    t = spec.train
    positive = {
        "train.batch_size": t.batch_size,
        "train.eval_batch_size": t.eval_batch_size,
        "train.grad_accum": t.grad_accum,
        "train.log_every": t.log_every,
        "data.max_length": spec.data.max_length,
    }
    if t.max_steps is None:
        positive["train.epochs"] = t.epochs
    else:
        positive["train.max_steps"] = t.max_steps
    if t.eval_every is not None:
        positive["train.eval_every"] = t.eval_every
    for key, value in positive.items():
        if value < 1:
            raise FtError(f"{key}={value} must be at least 1")
    if t.keep_checkpoints < 1:
        raise FtError(f"train.keep_checkpoints={t.keep_checkpoints} must be at least 1")
    if not 0 <= spec.data.validation_fraction < 1:
        raise FtError(f"data.validation_fraction={spec.data.validation_fraction} must be in [0, 1)")


def evaluate(
    net: torch.nn.Module,
    loader: Any,
    hw: Hardware,
    task: TaskKind,
    num_labels: int,
) -> dict[str, float]:
    was_training = net.training
    net.eval()
    scores = metrics.EvalMetrics(task, num_labels)
    with torch.no_grad(), hw.autocast():
        for batch in loader:
            batch = {k: v.to(hw.device, non_blocking=True) for k, v in batch.items()}
            labels = batch.pop("labels")
            scores.update(net(**batch).logits, labels)
    net.train(was_training)
    return scores.compute()


def train(spec: RunSpec, run_dir: str | Path, overrides: list[str] | None = None) -> RunResult:
    """Run one training job as the spec says; writes everything under `run_dir`."""
    started = time.perf_counter()
    first_step_seconds: float | None = None  # start-up cost: loading, tokenizing, first step
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_loop_settings(spec)
    task = spec.task.kind
    metric_name, mode = metrics.monitored(task, spec.train.early_stopping)
    header = f"# ft train {' '.join(overrides or [])}\n"
    (run_dir / "config.yaml").write_text(header + OmegaConf.to_yaml(OmegaConf.structured(spec)))

    seed_everything(spec.train.seed)
    hw = setup_hardware(spec.hardware)
    tokenizer = model.load_tokenizer(spec.model)
    prepared = data.prepare(spec.data, spec.task, tokenizer, spec.train.seed)
    num_labels = len(prepared.labels) if prepared.labels is not None else 1
    if task == TaskKind.classification and num_labels < 2:
        raise FtError(
            f"data.label_column: the train split has {num_labels} distinct label(s)"
            f" ({', '.join(prepared.labels or [])}); classification needs at least 2"
        )
    seed_everything(spec.train.seed)  # the head's init does not depend on the data size
    net = model.build_model(spec.model, task, prepared.labels).to(hw.device)
    applied = strategy.apply_strategy(net, spec.strategy)
    # The compiled wrapper shares its parameters with `net`, which is what gets
    # checkpointed and exported.
    forward = torch.compile(net, dynamic=True) if spec.hardware.compile else net
    trainable, frozen = strategy.parameter_counts(net)

    regression = task == TaskKind.regression
    pad_id = tokenizer.pad_token_id or 0
    loader, sampler = batching.train_loader(
        prepared.train,
        spec.train.batch_size,
        spec.train.seed,
        pad_id,
        regression,
        spec.train.group_by_length,
    )
    val_loader = None
    if prepared.validation is not None:
        val_loader = batching.eval_loader(
            prepared.validation, spec.train.eval_batch_size, pad_id, regression
        )
    accum = spec.train.grad_accum
    batches_per_epoch = len(loader)
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    total_steps = spec.train.max_steps or steps_per_epoch * spec.train.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)

    optimizer = optim.build_optimizer(net, spec.optimizer)
    scheduler = optim.build_scheduler(optimizer, spec.schedule, total_steps)
    params = [p for p in net.parameters() if p.requires_grad]
    max_norm = spec.train.max_grad_norm if spec.train.max_grad_norm is not None else math.inf
    stopper = metrics.EarlyStopping(
        mode, spec.train.early_stopping.patience, spec.train.early_stopping.min_delta
    )
    tracker = tracking.Tracker(run_dir)
    ui = RunConsole(total_steps, spec.train.log_every)
    ckpt_root = run_dir / "checkpoints"

    ui.info(
        f"[bold]ft[/] {spec.model.name_or_path} | train {len(prepared.train)} rows,"
        f" validation {len(prepared.validation) if prepared.validation else 0} |"
        f" {hw.device.type} {hw.precision.value} ({hw.reason}) |"
        f" {trainable:,} trainable / {frozen:,} frozen parameters ({spec.strategy.kind.value})"
    )
    ui.info(f"{epochs} epoch(s), {total_steps} optimizer steps, run dir {run_dir}")
    tracker.text("config", "```\n" + OmegaConf.to_yaml(OmegaConf.structured(spec)) + "\n```")

    step = 0
    best_checkpoint: Path | None = None
    best_metrics: dict[str, float] = {}
    last_metrics: dict[str, float] = {}
    stopped_early = False
    samples_seen = 0
    real_tokens = padded_tokens = 0  # non-pad and all tokens fed to the model
    eval_seconds = 0.0  # evaluation and checkpoint time, kept out of the throughput
    running_loss = torch.zeros((), device=hw.device)
    running_batches = 0
    log_samples, log_clock = 0, time.perf_counter()
    epoch = 0

    def save(at_step: int) -> Path:
        trainer_state = {
            "step": at_step,
            "epoch": epoch,
            "best_value": stopper.best,
            "bad_evals": stopper.bad_evals,
            "best_checkpoint": best_checkpoint.name if best_checkpoint else None,
        }
        saved = checkpoint.save_checkpoint(
            ckpt_root, at_step, net, optimizer, scheduler, hw.scaler, trainer_state
        )
        return saved

    def run_evaluation() -> bool:
        """Evaluate, track the best, checkpoint; True when early stopping says stop."""
        nonlocal best_checkpoint, best_metrics, last_metrics
        assert val_loader is not None
        last_metrics = evaluate(forward, val_loader, hw, task, num_labels)
        tracker.scalars("eval", last_metrics, step)
        improved = stopper.update(last_metrics[metric_name])
        saved = save(step)
        if improved:
            best_checkpoint, best_metrics = saved, {**last_metrics, "step": step}
        checkpoint.prune_checkpoints(ckpt_root, spec.train.keep_checkpoints, best_checkpoint)
        title = f"eval: step {step}, epoch {step / steps_per_epoch:.2f}"
        ui.metrics_table(title, last_metrics, metric_name)
        return spec.train.early_stopping.enabled and stopper.should_stop

    ui.start()
    loop_clock = time.perf_counter()
    applied.train_mode(net)
    optimizer.zero_grad(set_to_none=True)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for index, batch in enumerate(loader):
            mask = batch["attention_mask"]  # still on the CPU: counting costs no device sync
            real_tokens += int(mask.sum())
            padded_tokens += mask.numel()
            batch = {k: v.to(hw.device, non_blocking=True) for k, v in batch.items()}
            labels = batch.pop("labels")
            # Accumulation groups start at each epoch's first batch; the last
            # group of an epoch may be short, so scale by its real size.
            group_start = index - index % accum
            group_size = min(accum, batches_per_epoch - group_start)
            with hw.autocast():
                logits = forward(**batch).logits
            loss = metrics.task_loss(task, logits, labels)
            hw.scaler.scale(loss / group_size).backward()
            running_loss += loss.detach()  # stays on the device: no sync per step
            running_batches += 1
            samples_seen += len(labels)
            log_samples += len(labels)
            if index - group_start + 1 < group_size:
                continue

            hw.scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            hw.scaler.step(optimizer)
            hw.scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if first_step_seconds is None:
                first_step_seconds = time.perf_counter() - started

            logs = None
            if step % spec.train.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                logs = {
                    "loss": running_loss.item() / running_batches,  # the one sync per log step
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                    "samples_per_s": log_samples / max(now - log_clock, 1e-9),
                    "epoch": step / steps_per_epoch,
                }
                tracker.scalars("train", logs, step)
                running_loss.zero_()
                running_batches, log_samples, log_clock = 0, 0, now
            ui.step(step, step / steps_per_epoch, logs)

            epoch_end = index == batches_per_epoch - 1
            last = step >= total_steps
            every = spec.train.eval_every
            due = (every is not None and step % every == 0) or (every is None and epoch_end)
            pause = time.perf_counter()
            if val_loader is not None and (due or last):
                stopped_early = run_evaluation()
            elif val_loader is None and (epoch_end or last):
                save(step)
                checkpoint.prune_checkpoints(ckpt_root, spec.train.keep_checkpoints, None)
            eval_seconds += time.perf_counter() - pause
            log_clock += time.perf_counter() - pause
            if stopped_early or last:
                break
        if stopped_early or step >= total_steps:
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
    if spec.train.export == Export.best and best_checkpoint is not None:
        checkpoint.load_weights(net, best_checkpoint)
        exported_from = f"best checkpoint {best_checkpoint.name}"
    net.save_pretrained(export_dir)
    tokenizer.save_pretrained(export_dir)

    test_metrics: dict[str, float] = {}
    if prepared.test is not None and all(label != -1 for label in prepared.test.labels):
        test_loader = batching.eval_loader(
            prepared.test, spec.train.eval_batch_size, pad_id, regression
        )
        test_metrics = evaluate(net, test_loader, hw, task, num_labels)
        tracker.scalars("test", test_metrics, step)

    wall = time.perf_counter() - started
    best_value = stopper.best if val_loader is not None else None
    record = {
        "status": "stopped_early" if stopped_early else "completed",
        "monitor": {"metric": metric_name, "mode": mode.value, "best": best_value},
        "best": best_metrics,
        "final": last_metrics,
        "test": test_metrics,
        "steps": step,
        "epochs": round(step / steps_per_epoch, 4),
        "train_samples": samples_seen,
        "train_samples_per_s": samples_seen / max(train_seconds, 1e-9),
        "train_tokens_per_s": real_tokens / max(train_seconds, 1e-9),
        "padding_fraction": 1 - real_tokens / max(padded_tokens, 1),
        "train_seconds": train_seconds,
        "time_to_first_step_s": first_step_seconds,
        "wall_seconds": wall,
        "trainable_parameters": trainable,
        "frozen_parameters": frozen,
        "device": hw.device.type,
        "precision": hw.precision.value,
        "compiled": spec.hardware.compile,
        "exported_from": exported_from,
        "labels": prepared.labels,
    }
    metrics_path = tracking.write_metrics(run_dir, record)
    results = {f"best_{k}": v for k, v in best_metrics.items() if k != "step"}
    tracker.hparams(tracking.flat_hparams(spec), results or {"steps": float(step)})
    tracker.close()

    if test_metrics:
        ui.metrics_table("test", test_metrics)
    rows = [
        ("status", record["status"]),
        ("steps", f"{step} ({record['epochs']} epochs)"),
        (
            "throughput",
            f"{record['train_samples_per_s']:.1f} samples/s,"
            f" {record['train_tokens_per_s']:.0f} tokens/s,"
            f" {record['padding_fraction']:.1%} padding",
        ),
        ("wall time", f"{wall:.1f}s"),
    ]
    if best_value is not None:
        rows.append((f"best {metric_name}", f"{best_value:.4f} (step {best_metrics.get('step')})"))
    rows += [
        ("model", f"{export_dir} ({exported_from})"),
        ("metrics", str(metrics_path)),
        ("checkpoints", str(ckpt_root)),
        ("tensorboard", f"tensorboard --logdir {run_dir / 'tensorboard'}"),
    ]
    ui.summary(rows)
    return RunResult(
        metric_name=metric_name,
        metric=best_value,
        best=best_metrics,
        final=last_metrics,
        steps=step,
        stopped_early=stopped_early,
        run_dir=run_dir,
        model=net,
    )
