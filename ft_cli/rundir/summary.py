"""A sweep's summary files: summary.csv (a line per run, with its seed group's statistics)
and summary.json."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from ft_cli.rundir import seeds
from ft_cli.rundir.records import RunRow


def write_summary(root: Path, rows: list[RunRow]) -> tuple[Path, Path]:
    """summary.csv (a line per run, with its seed group's statistics) and summary.json
    ({"runs": [...], "seed_groups": [...]})."""
    groups = seeds.seed_groups(rows)
    group_of = {job: (g, i) for i, g in enumerate(groups, start=1) for job in g.jobs}
    lines = [_flat(r) | seeds.csv_columns(*group_of.get(r.job, (None, None))) for r in rows]
    csv_path, json_path = Path(root) / "summary.csv", Path(root) / "summary.json"
    with open(csv_path, "w", newline="") as handle:
        fields = list(dict.fromkeys(key for line in lines for key in line))
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(lines)
    record = {
        "runs": [asdict(r) for r in rows],
        "seed_groups": [asdict(g) | {"runs": g.runs} for g in groups],
    }
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    return csv_path, json_path


def _flat(row: RunRow) -> dict:
    """A run's CSV line: one column per search objective (`objective/NAME`)."""
    line = asdict(row)
    line.pop("modes")
    names = line.pop("objectives")
    return line | {f"objective/{name}": value for name, value in names.items()}
