"""The hooks through which a strategy changes a run, so the engine names none of them.

The plain strategy trains every parameter of the model as loaded, with the
task's objective, and exports the trained model. A strategy module overrides
what it changes: which layer groups are frozen (and when they open), a wrapper
around the model (LoRA), its own objective (distillation), what is exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ft_cli.config.schema import RunSpec, StrategyConfig
from ft_cli.strategies.layers import AppliedStrategy
from ft_cli.tasks.objective import Objective, build_objective


class Strategy:
    """Full fine-tuning: the hooks every other strategy starts from."""

    include_frozen = False  # optimizer groups also hold parameters frozen at the start
    picks_layers = False  # freezes by encoder layer: the model needs a layer stack
    wraps_model = False  # its wrapper freezes the base model itself (no freezing by group)
    anchored = False  # the l2sp penalty pulls the pretrained weights toward their start
    partial_checkpoints = False  # checkpoints hold part of the model (adapters)
    fsdp_refusal: str | None = None  # why hardware.distributed=fsdp cannot run it

    def __init__(self, cfg: StrategyConfig) -> None:
        self.cfg = cfg

    def wrap(self, net: nn.Module) -> nn.Module:
        """The model the run trains, built from the loaded one."""
        return net

    def freeze(self, applied: AppliedStrategy, net: nn.Module) -> None:
        """Mark the frozen layer groups or parameter names (and when groups open)."""

    def objective(
        self, net: nn.Module, spec: RunSpec, tokenizer: Any, labels: list[str] | None, device: Any
    ) -> Objective:
        return build_objective(
            net, spec.task, tokenizer, spec.hardware.compile, self.cfg.label_smoothing, labels
        )

    def export(self, net: nn.Module, run_dir: Path, main: bool) -> nn.Module:
        """The model to export, from the trained one."""
        return net
