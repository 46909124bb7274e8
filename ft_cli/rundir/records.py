"""A run dir read back as a row of `ft runs`: status, monitored metric, best and final
values, steps, wall time and the overrides it was launched with.

Every run dir ft writes holds `metrics.json` and its overrides
(`.hydra/overrides.yaml`, or the first line of `config.yaml`); that is all this
module reads. A sweep's rows can be ranked and written to `summary.csv` and
`summary.json`.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ft_cli.errors import FtError

STATUS = {
    "completed": "done",
    "stopped_early": "stopped early",
    "pruned": "pruned",  # a search's trial stopped it (ft_cli.training.pruning)
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
    # A search of several objectives: each value, its mode, and whether no other run of
    # the sweep beats it on every objective at once (the Pareto front).
    objectives: dict[str, float] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    pareto: bool | None = None


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
            try:
                return shlex.split(first[0][len("# ft train") :])
            except ValueError:  # an older header, written unquoted
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
    scored = {k: _mapping(v) for k, v in _mapping(record.get("objectives")).items()}
    scored = {k: v for k, v in scored.items() if _number(v.get("value")) is not None}
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
        objectives={k: float(v["value"]) for k, v in scored.items()},
        modes={k: "min" if v.get("mode") == "min" else "max" for k, v in scored.items()},
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
    mark_pareto_front(rows)
    return rows


def mark_pareto_front(rows: list[RunRow]) -> None:
    """Set `pareto` on the finished runs scored on the same objectives: on the front or not."""
    from ft_cli.rundir import pareto

    scored = [r for r in rows if r.objectives and r.status in ("done", "stopped early")]
    if not scored or any(r.modes != scored[0].modes for r in scored):
        return
    names = list(scored[0].modes)
    points = [[row.objectives[name] for name in names] for row in scored]
    front = set(pareto.front(points, [scored[0].modes[name] for name in names]))
    for index, row in enumerate(scored):
        row.pareto = index in front


def shared_overrides(rows: list[RunRow]) -> set[str]:
    """The overrides every run shares: they say nothing about the differences (shown once)."""
    tokens = [set(row.overrides.split()) for row in rows]
    return set.intersection(*tokens) if len(rows) > 1 else set()
