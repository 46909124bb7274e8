"""Seed statistics: runs that differ only in `train.seed`, summarised per metric.

Small-data fine-tuning moves by points from one seed to the next, so a sweep
over seeds is read as a distribution: for every group of finished runs whose
overrides are equal once `train.seed` is dropped, each metric's number of runs,
mean, sample standard deviation (n - 1 in the denominator), min and max. The
metrics are those of each run's best checkpoint (the exported model), its last
evaluation and its test split, as `metrics.json` records them.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ft_cli.rundir.records import RunRow

SEED_KEY = "train.seed"
FINISHED = ("done", "stopped early")
# metrics.json sections: the best checkpoint's metrics, the last evaluation's, the test split's.
SECTIONS = {"best": "best", "final": "final", "test": "test"}


@dataclass
class SeedGroup:
    overrides: str  # what the group's runs share, seed left out
    jobs: list[str]
    seeds: list[str]
    metric: str | None  # the runs' monitored metric
    mode: str | None
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # "best accuracy" -> stats

    @property
    def runs(self) -> int:
        return len(self.jobs)

    def monitored(self) -> dict[str, float] | None:
        """The stats of the monitored metric at each run's best checkpoint."""
        return self.stats.get(f"best {self.metric}") if self.metric else None


def describe(values: list[float]) -> dict[str, float]:
    """n, mean, sample standard deviation, min and max (std is NaN for one value)."""
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else math.nan,
        "min": min(values),
        "max": max(values),
    }


def split_seed(overrides: str) -> tuple[str, str | None]:
    """(the overrides without the seed, the seed's value or None)."""
    kept, seed = [], None
    for token in overrides.split():
        key, sep, value = token.lstrip("+").partition("=")
        if sep and key == SEED_KEY:
            seed = value
        else:
            kept.append(token)
    return " ".join(kept), seed


def seed_groups(rows: list[RunRow]) -> list[SeedGroup]:
    """Groups of two or more finished runs that differ only in their seed, best mean first."""
    by_rest: dict[str, list[tuple[RunRow, str]]] = {}
    for row in rows:
        rest, seed = split_seed(row.overrides)
        if row.status in FINISHED and seed is not None:
            by_rest.setdefault(rest, []).append((row, seed))
    groups = []
    for rest, members in by_rest.items():
        if len({seed for _, seed in members}) < 2:
            continue
        first = members[0][0]
        group = SeedGroup(
            rest, [r.job for r, _ in members], [s for _, s in members], first.metric, first.mode
        )
        values: dict[str, list[float]] = {}
        for row, _ in members:
            for name, value in _recorded_metrics(Path(row.run_dir)).items():
                values.setdefault(name, []).append(value)
        # A metric missing from some runs (no test split) is described over those that have it.
        group.stats = {name: describe(found) for name, found in values.items()}
        groups.append(group)
    return sorted(groups, key=_rank)


def _rank(group: SeedGroup) -> tuple[int, float, str]:
    stats = group.monitored()
    if stats is None or not math.isfinite(stats["mean"]):
        return (1, 0.0, group.overrides)
    return (0, stats["mean"] if group.mode == "min" else -stats["mean"], group.overrides)


def _recorded_metrics(run_dir: Path) -> dict[str, float]:
    """'best accuracy', 'final f1', 'test loss', ... of one run's metrics.json."""
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    found = {}
    for section, label in SECTIONS.items():
        values = record.get(section) if isinstance(record, dict) else None
        for name, value in (values or {}).items() if isinstance(values, dict) else ():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if name != "step" and number and math.isfinite(value):
                found[f"{label} {name}"] = float(value)
    return found


def csv_columns(group: SeedGroup | None, index: int | None) -> dict[str, object]:
    """A run's seed-group columns in summary.csv: its group and the group's monitored stats."""
    stats = group.monitored() if group is not None else None
    columns: dict[str, object] = {"seed_group": index, "group_runs": group.runs if group else None}
    for name in ("mean", "std", "min", "max"):
        columns[f"group_best_{name}"] = None if stats is None else stats[name]
    return columns
