"""`ft runs PATH`: one table for a sweep (or any folder of runs), best first.

The rows are read by `ft_cli.rundir.records`; the summary also goes to
`summary.csv` and `summary.json` in PATH.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ft_cli.errors import FtError
from ft_cli.rundir import seeds, summary
from ft_cli.rundir.records import (
    RunRow,
    shared_overrides,
    summarise,
)


def print_table(rows: list[RunRow], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    shared = shared_overrides(rows)
    tokens = [row.overrides.split() for row in rows]
    if shared:
        title += f"\nshared overrides: {' '.join(t for t in tokens[0] if t in shared)}"
    # A search of several objectives: a column each, and its Pareto front marked.
    objectives = list(dict.fromkeys(name for row in rows for name in row.modes))
    front = any(row.pareto is not None for row in rows)
    table = Table(title=title, title_justify="left")
    columns = ["job", "overrides", "status", "metric", "best", "final", "steps", "wall s"]
    columns += [f"{name} ({rows_mode(rows, name)})" for name in objectives]
    columns += ["pareto"] if front else []
    for column in columns:
        right = column not in ("job", "overrides", "status", "metric", "pareto")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for index, row in enumerate(rows):
        style = "bold green" if index == 0 and row.best is not None else None
        if front:  # the front stands out, not the best on the monitored metric
            style = "bold green" if row.pareto else None
        status = row.status if not row.error else f"{row.status}: {row.error}"
        wall = "-" if row.wall_seconds is None else f"{row.wall_seconds:.1f}"
        varying = " ".join(_short(t) for t in row.overrides.split() if t not in shared)
        cells = [
            row.job,
            varying,
            status,
            row.metric or "-",
            number(row.best),
            number(row.final),
            "-" if row.steps is None else str(row.steps),
            wall,
            *(_objective(row.objectives.get(name)) for name in objectives),
        ]
        cells += [{True: "front", False: "", None: "-"}[row.pareto]] if front else []
        table.add_row(*cells, style=style)
    Console().print(table)
    if front:
        on_front = [row.job for row in rows if row.pareto]
        print(f"Pareto front ({', '.join(objectives)}): {', '.join(on_front)}")
    groups = seeds.seed_groups(rows)
    if groups:
        print_groups(groups, shared)


def rows_mode(rows: list[RunRow], name: str) -> str:
    """The mode (max or min) the runs record for objective `name`."""
    return next(row.modes[name] for row in rows if name in row.modes)


def _objective(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _short(override: str) -> str:
    """`optimizer.lr=3.0710573677e-05` shown as `optimizer.lr=3.071e-05` (files keep all digits)."""
    key, sep, value = override.partition("=")
    if sep and re.fullmatch(r"-?\d+\.\d{5,}(e-?\d+)?", value):
        return f"{key}={float(value):.4g}"
    return override


def main(args: list[str]) -> int:
    """`ft runs PATH [--best]`; returns the exit code."""
    best_only = "--best" in args
    paths = [a for a in args if a != "--best"]
    if len(paths) != 1 or any(a.startswith("-") for a in paths):
        raise FtError("usage: ft runs PATH [--best]  (PATH: a sweep dir or a folder of runs)")
    root = Path(paths[0])
    rows = summarise(root)
    if best_only:
        if rows[0].best is None:
            raise FtError(f"ft runs: no run under '{root}' has a monitored metric yet")
        print(rows[0].run_dir)
        return 0
    csv_path, json_path = summary.write_summary(root, rows)
    print_table(rows, f"{len(rows)} run(s) in {root}, best first")
    print(f"written: {csv_path}, {json_path}")
    return 0


def print_groups(groups: list[seeds.SeedGroup], shared: set[str]) -> None:
    """One table row per group and metric of the best checkpoints: n, mean +- std, min, max."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="seed statistics (runs that differ only in train.seed; best checkpoint;"
        " std with n - 1)",
        title_justify="left",
    )
    for column in ("group", "overrides", "runs", "metric", "mean", "std", "min", "max"):
        right = column in ("runs", "mean", "std", "min", "max")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for index, group in enumerate(groups, start=1):
        varying = " ".join(t for t in group.overrides.split() if t not in shared) or "-"
        names = [n for n in group.stats if n.startswith("best ")]
        for position, name in enumerate(names):
            stats = group.stats[name]
            std = "-" if math.isnan(stats["std"]) else f"{stats['std']:.4f}"
            head = (str(index), varying, str(group.runs)) if position == 0 else ("", "", "")
            table.add_row(
                *head,
                name.removeprefix("best "),
                f"{stats['mean']:.4f}",
                std,
                f"{stats['min']:.4f}",
                f"{stats['max']:.4f}",
            )
    Console().print(table)
