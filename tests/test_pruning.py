"""Pruning: a search's trial hears every evaluation and may stop the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, compose_spec


class FakeTrial:
    """Prunes at its `at`-th report; records what it heard."""

    def __init__(self, at: int) -> None:
        self.at, self.heard = at, []

    def report(self, value: float, step: int) -> None:
        self.heard.append((step, value))

    def should_prune(self) -> bool:
        return len(self.heard) >= self.at


@pytest.mark.slow
def test_a_pruned_run_stops_at_that_evaluation_keeps_its_checkpoint_and_says_so(
    tmp_path: Path,
) -> None:
    from ft_cli.training.engine import train

    overrides = ["+recipe=demo", *TINY, "train.max_steps=6", "train.eval_every=2"]
    trial = FakeTrial(at=2)
    result = train(compose_spec(overrides), tmp_path / "run", overrides, trial=trial)
    assert result.pruned and result.steps == 4  # the second evaluation, at step 4
    assert [step for step, _ in trial.heard] == [2, 4]
    assert trial.heard[-1][1] == result.final["accuracy"]  # the monitored metric
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "pruned" and record["steps"] == 4
    assert (tmp_path / "run" / "checkpoints" / "step-00000004").is_dir()
    assert (tmp_path / "run" / "model" / "config.json").is_file()

    from ft_cli.rundir import records

    assert records.read_run(tmp_path / "run", tmp_path).status == "pruned"  # as ft runs shows
    never = FakeTrial(at=10_000)
    full = train(compose_spec(overrides), tmp_path / "full", overrides, trial=never)
    assert not full.pruned and len(never.heard) == full.steps // 2
    status = json.loads((tmp_path / "full" / "metrics.json").read_text())["status"]
    assert status == "completed"
