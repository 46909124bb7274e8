"""Fine-tuning strategies, one module per strategy, each a `base.Strategy` with its hooks.

`STRATEGIES` maps a strategy name (`strategy=NAME`, `strategy.kind`) to its
module as plain data: the config schema reads the names without importing
torch, and `for_config` imports a strategy's module only when a run uses it.
Shared machinery: `layers` (layer groups, freezing, gradual unfreezing),
`regularize` (weight penalties), `report` (the per-group table). A new strategy
is a module here defining `STRATEGY`, one line in `STRATEGIES`, and its
`configs/strategy/NAME.yaml`.
"""

from __future__ import annotations

import importlib
from typing import Any

STRATEGIES: dict[str, str] = {
    "full": "full",
    "freeze_backbone": "freeze_backbone",
    "freeze_layers": "freeze_layers",
    "gradual_unfreeze": "gradual_unfreeze",
    "llrd": "llrd",
    "lora": "lora",
    "l2sp": "l2sp",
    "distill": "distill",
}


def for_config(cfg: Any) -> Any:
    """The strategy object (`base.Strategy`) of a `StrategyConfig`."""
    name = getattr(cfg.kind, "value", cfg.kind)
    module = importlib.import_module(f"ft_cli.strategies.{STRATEGIES[name]}")
    return module.STRATEGY(cfg)
