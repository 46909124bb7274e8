"""A search's objectives: what each trial is scored on, and in which direction.

`hydra.sweeper.objectives=[accuracy:max,latency_ms:min]` names a metric the run
evaluates (its value at the best checkpoint, the one exported) or a cost measured on
the exported model after training: `latency_ms` (the median of ten forward passes of
one validation example, on the run's device, after two warm-up passes) and
`parameters` (the exported model's parameter count). The trial's values go into the
run's metrics.json (`objectives`), where `ft runs` and `ft report` read them back.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ft_cli.errors import FtError

COSTS = ("latency_ms", "parameters")  # measured on the exported model, not evaluated
DIRECTIONS = {"max": "maximize", "min": "minimize"}


@dataclass(frozen=True)
class Objective:
    name: str
    mode: str  # max or min

    @property
    def direction(self) -> str:
        return DIRECTIONS[self.mode]

    def __str__(self) -> str:
        return f"{self.name}:{self.mode}"


def parse(items: Any) -> list[Objective]:
    """`["accuracy:max", "latency_ms:min"]` as objectives; a malformed one in one line."""
    found = []
    for item in items or []:
        name, _, mode = str(item).strip().partition(":")
        if not name or mode not in DIRECTIONS:
            raise FtError(
                f"hydra.sweeper.objectives: '{item}' is not NAME:max or NAME:min"
                " (e.g. [accuracy:max,latency_ms:min])"
            )
        found.append(Objective(name.strip(), mode))
    if len({o.name for o in found}) != len(found):
        raise FtError(f"hydra.sweeper.objectives: a name appears twice in {list(items)}")
    return found


def values(wanted: list[Objective], result: Any, spec: Any) -> dict[str, float]:
    """The trial's value of each objective (a run's `RunResult` and its spec)."""
    scores = {**result.final, **result.best}  # the best checkpoint's, which is exported
    measured = [o.name for o in wanted if o.name in COSTS]
    if measured and spec.train.folds > 1:
        raise FtError(
            f"hydra.sweeper.objectives: {measured[0]} is measured on a run's exported model,"
            f" and train.folds={spec.train.folds} exports one per fold; drop it or the folds"
        )
    costs = measure(result.run_dir, spec) if measured else {}
    found = {}
    for objective in wanted:
        value = costs.get(objective.name, scores.get(objective.name))
        if value is None:
            known = sorted({*scores, *COSTS} - {"step"})
            raise FtError(
                f"hydra.sweeper.objectives: the run has no '{objective.name}'; use one of"
                f" {', '.join(known)}"
            )
        found[objective.name] = float(value)
    return found


def measure(run_dir: Path, spec: Any, repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """The exported model's latency on one validation example and its parameter count."""
    import torch

    from ft_cli.training import evaluating

    ready = evaluating.setup(str(run_dir), [], spec=spec)
    batch = ready.objective.collator(ready.rows, 0)([0])
    batch = {k: v.to(ready.hw.device) for k, v in batch.items()}
    ready.forward.eval()
    times = []
    with torch.no_grad(), ready.hw.autocast():
        for index in range(warmup + repeats):
            if ready.hw.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            ready.forward(dict(batch))  # a copy: the objective takes its targets out
            if ready.hw.device.type == "cuda":
                torch.cuda.synchronize()
            if index >= warmup:
                times.append(time.perf_counter() - start)
    parameters = sum(p.numel() for p in ready.forward.parameters())
    return {"latency_ms": 1000 * statistics.median(times), "parameters": float(parameters)}


def record(run_dir: Path, wanted: list[Objective], found: dict[str, float]) -> None:
    """Add the trial's objective values, with their modes, to its metrics.json."""
    from ft_cli.outputs import tracking

    path = Path(run_dir) / "metrics.json"
    entry = json.loads(path.read_text())
    entry["objectives"] = {o.name: {"value": found[o.name], "mode": o.mode} for o in wanted}
    tracking.write_metrics(Path(run_dir), entry)
