"""What every run logger does; each backend overrides what it records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# How a run ended, as the loggers record it.
COMPLETED, FAILED, INTERRUPTED = "completed", "failed", "interrupted"


def setting(default: Any, text: str) -> Any:
    """A field of a logger's `Settings`, with the help text the config reference shows."""
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class SweepJob:
    """A run inside a sweep: its jobs share one MLflow experiment / W&B group, `name`."""

    name: str
    job: str  # this job's own name: its number and overrides


@dataclass(frozen=True)
class RunInfo:
    """What a logger needs to open (or reopen) its run."""

    run_dir: Path
    name: str  # the tracked run's display name
    params: dict[str, Any]  # the run spec flattened to `group.key`
    sweep: SweepJob | None
    resumed_step: int | None  # the checkpoint's step when resuming, else None
    state: dict[str, Any]  # this logger's record from the run's first start ({} if none)


class RunLogger:
    """One tracking backend; a method a backend has no use for does nothing."""

    name = "logger"

    def scrub(self, text: str) -> str:
        """`text` (an error of this logger's) with any credential it might quote hidden."""
        return text

    def state(self) -> dict[str, Any]:
        """What reopens the same tracked run on resume (kept in RUN_DIR/loggers.json)."""
        return {}

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        pass

    def text(self, tag: str, text: str) -> None:
        pass

    def results(self, values: dict[str, float], step: int) -> None:
        """The run's best and final metrics (`best/accuracy`, `final/loss`, ...)."""

    def artifacts(self, files: dict[str, Path]) -> None:
        """Files of the run (name in the tracker -> path), logged once at the end."""

    def where(self) -> str:
        """Where to look at the run (the run summary's row for this logger)."""
        return ""

    def close(self, status: str) -> None:
        pass
