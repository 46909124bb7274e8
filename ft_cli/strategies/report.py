"""What trains, and how fast: per layer group counts and learning rates.

Printed when a run starts, written to strategy.json and to TensorBoard, so the
effect of a strategy is visible before the first step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch stays unimported for `table_rows` (a remembered `ft explain`)
    import torch
    from torch import nn

    from ft_cli.strategies.layers import AppliedStrategy


def strategy_record(
    kind: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    applied: AppliedStrategy,
    unfreeze_steps: list[int],
) -> dict[str, Any]:
    from ft_cli.strategies.layers import group_names, groups_of

    # The peak rates: the scheduler has already scaled "lr" for warmup.
    peak = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    lr_of = {
        id(p): rate
        for g, rate in zip(optimizer.param_groups, peak, strict=True)
        for p in g["params"]
    }
    groups = {
        name: {"trainable": 0, "frozen": 0, "lr": set()} for name in group_names(applied.num_layers)
    }
    group_of = groups_of(model)
    for name, param in model.named_parameters():
        row = groups[group_of[name]]
        row["trainable" if param.requires_grad else "frozen"] += param.numel()
        if id(param) in lr_of:
            row["lr"].add(lr_of[id(param)])
    rows = []
    for name, row in groups.items():
        rates = sorted(row["lr"])
        rows.append(
            {
                "group": name,
                "trainable": row["trainable"],
                "frozen": row["frozen"],
                "lr": rates[0] if len(rates) == 1 else (rates or None),
            }
        )
    return {
        "kind": kind,
        "groups": rows,
        "optimizer_groups": [
            {
                "name": g.get("name", str(i)),
                "lr": rate,
                "weight_decay": g["weight_decay"],
                "parameters": sum(p.numel() for p in g["params"]),
            }
            for i, (g, rate) in enumerate(zip(optimizer.param_groups, peak, strict=True))
        ],
        "unfreeze_steps": unfreeze_steps,
    }


def table_rows(record: dict[str, Any]) -> list[list[str]]:
    """Top (head) first, as a model is usually drawn."""
    rows = []
    for row in reversed(record["groups"]):
        lr = row["lr"]
        shown = "-" if lr is None else (f"{lr:.2e}" if isinstance(lr, float) else "mixed")
        rows.append([row["group"], f"{row['trainable']:,}", f"{row['frozen']:,}", shown])
    return rows


def write(run_dir: Path, record: dict[str, Any]) -> Path:
    path = run_dir / "strategy.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
