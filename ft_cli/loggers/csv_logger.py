"""RUN_DIR/metrics.csv: a row per logged step and split, a column per scalar."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass

from ft_cli.loggers.base import RunInfo, RunLogger, setting

FIXED = ["step", "time"]


@dataclass
class Settings:
    enabled: bool = setting(
        False, "RUN_DIR/metrics.csv: one row per logged step, a column a scalar."
    )


def open_logger(settings: Settings, info: RunInfo) -> RunLogger:
    return CsvLogger(info)


class CsvLogger(RunLogger):
    name = "csv"

    def __init__(self, info: RunInfo) -> None:
        self.path = info.run_dir / "metrics.csv"
        self.columns, self.rows = list(FIXED), []
        if info.resumed_step is not None and self.path.exists():
            # Rows after the checkpoint were trained again: keep the earlier ones only.
            with self.path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                self.columns = list(reader.fieldnames or FIXED)
                self.rows = [r for r in reader if int(r["step"]) <= info.resumed_step]
        self._rewrite()

    def where(self) -> str:
        return str(self.path)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        row = {"step": str(step), "time": f"{time.time():.3f}"}
        row |= {f"{prefix}/{name}": repr(float(value)) for name, value in values.items()}
        self.rows.append(row)
        new = [key for key in row if key not in self.columns]
        if new:  # a new column: the header changes, so the file is written anew
            self.columns += new
            self._rewrite()
        else:
            with self.path.open("a", newline="") as handle:
                csv.DictWriter(handle, self.columns).writerow(row)

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)
