"""Pruning: a search's trial hears each evaluation of the monitored metric and may stop
the run when it falls behind the other trials.

The engine knows only the `Trial` protocol below; a sweeper supplies one backed by its
study (Optuna's `report` / `should_prune`). Under torchrun the first process talks to
the trial and every process gets its decision, so all stop at the same step.
"""

from __future__ import annotations

from typing import Any, Protocol

PRUNED = "pruned"  # the run's status in metrics.json, ft runs and the summary


class Trial(Protocol):
    def report(self, value: float, step: int) -> None:
        """The monitored metric after `step` optimizer steps."""

    def should_prune(self) -> bool:
        """Whether the run should stop here (the trial falls behind)."""


class Follower:
    """The trial of a process other than the first under torchrun: it only hears the
    first process's decisions (`decide`), so it is never asked itself."""

    def report(self, value: float, step: int) -> None:
        raise RuntimeError("only the first process reports to a search's trial")

    def should_prune(self) -> bool:
        raise RuntimeError("only the first process asks a search's trial")


def decide(trial: Trial | None, value: float, step: int, place: Any) -> bool:
    """Report `value` to the trial (first process only) and return its decision, the same
    on every process."""
    if trial is None:
        return False
    from ft_cli.hardware import distributed

    decision = False
    if place.is_main:
        trial.report(float(value), step)
        decision = bool(trial.should_prune())
    return bool(distributed.broadcast(decision, place))
