"""What ends a sweep, whatever launched its jobs: the summary table and its files.

A Hydra callback runs in the process that started the sweep, after every job
has returned, whether the jobs ran in this process (basic launcher), in worker
processes (joblib) or on a cluster (submitit). Job outcomes are read back from
the run dirs, never from memory the jobs shared with this process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from ft_cli.errors import FtError

# The rows of the sweep that ended last in this process (the CLI's exit code reads them).
finished: list[Any] = []


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from ft_cli.commands import runs
        from ft_cli.rundir import records, summary

        finished.clear()
        sweep_dir = Path(str(config.hydra.sweep.dir))
        from ft_cli.hardware import distributed

        try:
            rows = records.summarise(sweep_dir)
            if distributed.from_env().is_main:  # under torchrun, every process ends a sweep
                summary.write_summary(sweep_dir, rows)
                runs.print_table(rows, f"sweep {sweep_dir}: {len(rows)} job(s), best first")
        except (FtError, OSError) as err:  # a summary never fails the sweep
            print(f"ft: error: sweep summary: {err}")
            return
        finished.extend(rows)


def failed_jobs(rows: list[Any]) -> list[str]:
    """One line per failed job: its folder and error."""
    return [f"job {row.job}: {row.error or 'failed'}" for row in rows if row.status == "failed"]
