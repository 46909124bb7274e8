"""What a data check found: findings (a kind, a split, one summary line, the rows by
index), each split's figures, and what was not checked; written as `data_check.json`,
shown as a table, and as a section of `ft report`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The kinds `data.checks=strict` refuses to train with; the others inform.
BLOCKING = ("duplicates", "leak", "conflicts", "empty")
SHOWN_ROWS = 5  # rows a summary line names before "..."


@dataclass
class Finding:
    kind: str  # duplicates, near_duplicates, leak, contained, conflicts, empty, short, ...
    split: str
    summary: str  # one line
    rows: list[Any] = field(default_factory=list)  # indices, [i, j] pairs or groups

    @property
    def blocking(self) -> bool:
        return self.kind in BLOCKING


@dataclass
class DataCheck:
    task: str
    findings: list[Finding] = field(default_factory=list)
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # figures per split
    not_checked: list[str] = field(default_factory=list)

    def add(self, kind: str, split: str, summary: str, rows: list[Any]) -> None:
        self.findings.append(Finding(kind, split, f"{split}: {summary}", rows))

    def lines(self) -> list[str]:
        """One line per finding, then what was not checked."""
        found = [f.summary for f in self.findings] or [
            "no duplicates, leaks, conflicts or empty rows found"
        ]
        return found + [f"not checked: {why}" for why in self.not_checked]

    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    def text(self) -> str:
        """data_check.json's text."""
        return json.dumps(asdict(self), indent=1) + "\n"

    def write(self, path: Path) -> Path:
        path.write_text(self.text(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> DataCheck:
        found = json.loads(path.read_text(encoding="utf-8"))
        found["findings"] = [Finding(**f) for f in found.get("findings", [])]
        return cls(**found)

    def figure_rows(self) -> list[list[str]]:
        """[split, what, value] of each split's figures (rows, labels, sizes, truncation)."""
        shown = []
        for split, figures in self.splits.items():
            for what, value in figures.items():
                if isinstance(value, dict):
                    value = ", ".join(
                        f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}"
                        for k, v in value.items()
                    )
                shown.append([split, what, str(value)])
        return shown


def rows_named(rows: list[Any]) -> str:
    """The first few rows of a finding, as its summary line names them."""
    shown = ", ".join(str(r) for r in rows[:SHOWN_ROWS])
    return shown + (", ..." if len(rows) > SHOWN_ROWS else "")


def count(number: int, noun: str) -> str:
    """'1 row', '3 rows'."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"
