"""The hooks through which a strategy changes a run, so the engine names none of them.

Freezing, layer-wise lr decay and the weight penalties need nothing beyond the
layer groups (`ft_cli.strategies.layers`) and the optimizer groups; the strategies
below also wrap the model (LoRA), bring their own objective (distillation),
keep frozen parameters in the optimizer to open them later (gradual
unfreezing), or change what is exported (LoRA merges its adapters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ft_cli.config.schema import RunSpec, StrategyConfig, StrategyKind
from ft_cli.strategies import distill, lora
from ft_cli.tasks.objective import Objective, build_objective


class Strategy:
    """The plain hooks: the model as loaded, the task's objective, the model as trained."""

    include_frozen = False  # optimizer groups also hold the parameters frozen at the start

    def __init__(self, cfg: StrategyConfig) -> None:
        self.cfg = cfg

    def wrap(self, net: nn.Module) -> nn.Module:
        """The model the run trains, built from the loaded one."""
        return net

    def objective(self, net: nn.Module, spec: RunSpec, tokenizer: Any,
                  labels: list[str] | None, device: Any) -> Objective:  # fmt: skip
        return build_objective(net, spec.task, tokenizer, spec.hardware.compile,
                               self.cfg.label_smoothing, labels)  # fmt: skip

    def export(self, net: nn.Module, run_dir: Path, main: bool) -> nn.Module:
        """The model to export, from the trained one."""
        return net


class GradualUnfreeze(Strategy):
    include_frozen = True  # they open stage by stage, keeping their optimizer groups


class LoRA(Strategy):
    def wrap(self, net: nn.Module) -> nn.Module:
        return lora.apply_lora(net, self.cfg.lora)

    def export(self, net: nn.Module, run_dir: Path, main: bool) -> nn.Module:
        keep = self.cfg.lora.keep_adapter and main
        return lora.merged(net, run_dir / "adapter" if keep else None)


class Distill(Strategy):
    def objective(self, net, spec, tokenizer, labels, device) -> Objective:
        pad_id = tokenizer.pad_token_id or 0
        return distill.build(
            net, self.cfg, spec.task.kind, labels, pad_id, device, spec.hardware.compile
        )


# The strategies that need more than the plain hooks; every other kind uses Strategy.
HOOKS: dict[StrategyKind, type[Strategy]] = {
    StrategyKind.gradual_unfreeze: GradualUnfreeze,
    StrategyKind.lora: LoRA,
    StrategyKind.distill: Distill,
}


def for_config(cfg: StrategyConfig) -> Strategy:
    return HOOKS.get(cfg.kind, Strategy)(cfg)
