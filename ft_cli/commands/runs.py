"""`ft runs PATH`: one table for a sweep (or any folder of runs), best first.

Every run dir ft writes holds `metrics.json` (status, monitored metric, best
and final values, steps, wall time) and its overrides (`.hydra/overrides.yaml`,
or the first line of `config.yaml`); that is all this module reads. The
summary also goes to `summary.csv` and `summary.json` in PATH.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ft_cli.errors import FtError

STATUS = {
    "completed": "done",
    "stopped_early": "stopped early",
    "failed": "failed",
    "interrupted": "interrupted",
}


@dataclass
class RunRow:
    job: str
    overrides: str
    status: str
    metric: str | None
    mode: str | None
    best: float | None
    final: float | None
    steps: int | None
    wall_seconds: float | None
    run_dir: str
    error: str | None


def find_run_dirs(root: Path) -> list[Path]:
    """Folders below `root` (or root itself) that hold an ft run."""
    marks = {p.parent for name in ("metrics.json", "config.yaml") for p in root.rglob(name)}
    runs = {d for d in marks if (d / "metrics.json").is_file() or (d / "config.yaml").is_file()}
    # A run's own subfolders (checkpoints/step-N) hold no such files; .hydra holds config.yaml.
    return sorted(d for d in runs if d.name != ".hydra")


def recorded_overrides(run_dir: Path) -> list[str]:
    """The overrides a run was launched with (Hydra's record, else config.yaml's header)."""
    hydra_file = run_dir / ".hydra" / "overrides.yaml"
    if hydra_file.is_file():
        from omegaconf import ListConfig, OmegaConf

        try:
            items = OmegaConf.load(hydra_file)
        except Exception as err:
            items = err
        if not isinstance(items, ListConfig):
            raise FtError(f"{hydra_file} is damaged (not a YAML list of overrides)")
        return [str(item) for item in items]
    config = run_dir / "config.yaml"
    if config.is_file():
        first = config.read_text().splitlines()[:1]
        if first and first[0].startswith("# ft train"):
            return first[0][len("# ft train") :].split()
    return []


def read_run(run_dir: Path, root: Path) -> RunRow:
    record: dict = {}
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        record = _read_record(metrics_file)
    status = STATUS.get(str(record.get("status", "")), "running" if not record else "unknown")
    monitor = _mapping(record.get("monitor"))
    metric = monitor.get("metric") if isinstance(monitor.get("metric"), str) else None
    final = _number(_mapping(record.get("final")).get(metric)) if metric else None
    return RunRow(
        job=str(run_dir.relative_to(root)) if run_dir != root else ".",
        overrides=_overrides_text(run_dir),
        status=status,
        metric=metric,
        mode=monitor.get("mode") if monitor.get("mode") in ("min", "max") else None,
        best=_number(monitor.get("best")),
        final=final,
        steps=record.get("steps") if isinstance(record.get("steps"), int) else None,
        wall_seconds=_number(record.get("wall_seconds")),
        run_dir=str(run_dir),
        error=str(record["error"]) if record.get("error") is not None else None,
    )


def _overrides_text(run_dir: Path) -> str:
    try:
        return " ".join(recorded_overrides(run_dir))
    except FtError:
        return "(unreadable .hydra/overrides.yaml)"


def _read_record(path: Path) -> dict:
    """metrics.json as a dict; a damaged one reads as a failed run that says why."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"status": "failed", "error": "metrics.json is not valid JSON"}
    if not isinstance(record, dict):
        return {"status": "failed", "error": "metrics.json holds no record (not a JSON object)"}
    return record


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else None


def ranked(rows: list[RunRow]) -> list[RunRow]:
    """Runs with a best value first, best to worst by their metric's mode; then the rest."""

    def key(row: RunRow) -> tuple[int, float, str]:
        if row.best is None or (isinstance(row.best, float) and math.isnan(row.best)):
            return (1, 0.0, row.job)
        return (0, row.best if row.mode == "min" else -row.best, row.job)

    return sorted(rows, key=key)


def summarise(root: Path) -> list[RunRow]:
    root = Path(root)
    if not root.is_dir():
        raise FtError(f"ft runs: '{root}' is not a folder; pass a sweep dir or a folder of runs")
    rows = ranked([read_run(d, root) for d in find_run_dirs(root)])
    if not rows:
        raise FtError(f"ft runs: no ft runs under '{root}' (no metrics.json or config.yaml)")
    return rows


def write_summary(root: Path, rows: list[RunRow]) -> tuple[Path, Path]:
    """summary.csv (a line per run, with its seed group's statistics) and summary.json
    ({"runs": [...], "seed_groups": [...]})."""
    from ft_cli.commands import seeds

    groups = seeds.seed_groups(rows)
    group_of = {job: (g, i) for i, g in enumerate(groups, start=1) for job in g.jobs}
    lines = [asdict(r) | seeds.csv_columns(*group_of.get(r.job, (None, None))) for r in rows]
    csv_path, json_path = Path(root) / "summary.csv", Path(root) / "summary.json"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    record = {
        "runs": [asdict(r) for r in rows],
        "seed_groups": [asdict(g) | {"runs": g.runs} for g in groups],
    }
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    return csv_path, json_path


def print_table(rows: list[RunRow], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    shared = shared_overrides(rows)
    tokens = [row.overrides.split() for row in rows]
    if shared:
        title += f"\nshared overrides: {' '.join(t for t in tokens[0] if t in shared)}"
    table = Table(title=title, title_justify="left")
    for column in ("job", "overrides", "status", "metric", "best", "final", "steps", "wall s"):
        right = column in ("best", "final", "steps", "wall s")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for index, row in enumerate(rows):
        style = "bold green" if index == 0 and row.best is not None else None
        status = row.status if not row.error else f"{row.status}: {row.error}"
        wall = "-" if row.wall_seconds is None else f"{row.wall_seconds:.1f}"
        varying = " ".join(_short(t) for t in row.overrides.split() if t not in shared)
        table.add_row(
            row.job,
            varying,
            status,
            row.metric or "-",
            number(row.best),
            number(row.final),
            "-" if row.steps is None else str(row.steps),
            wall,
            style=style,
        )
    Console().print(table)
    from ft_cli.commands import seeds

    groups = seeds.seed_groups(rows)
    if groups:
        seeds.print_groups(groups, shared)


def shared_overrides(rows: list[RunRow]) -> set[str]:
    """The overrides every run shares: they say nothing about the differences (shown once)."""
    tokens = [set(row.overrides.split()) for row in rows]
    return set.intersection(*tokens) if len(rows) > 1 else set()


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
    csv_path, json_path = write_summary(root, rows)
    print_table(rows, f"{len(rows)} run(s) in {root}, best first")
    print(f"written: {csv_path}, {json_path}")
    return 0
