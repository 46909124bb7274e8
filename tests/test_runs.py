"""`ft runs`: the sweep summary, best first, failed jobs listed with their error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import TINY
from test_cli import ft

from ft_cli.commands import runs
from ft_cli.errors import FtError


@pytest.mark.slow
def test_a_sweep_ends_with_its_summary_and_ft_runs_names_the_best(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = ft(
        "train", "-m", *TINY, "optimizer.lr=3e-3", "train.max_steps=1,6,0",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1  # one job failed, the others ran
    assert "best first" in result.stdout
    summary = json.loads((sweep / "summary.json").read_text())
    statuses = sorted(row["status"] for row in summary)
    assert statuses == ["done", "done", "failed"]
    failed = next(row for row in summary if row["status"] == "failed")
    assert "train.max_steps=0 must be at least 1" in failed["error"]
    assert failed["overrides"].endswith("train.max_steps=0")
    with open(sweep / "summary.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3

    done = [json.loads((sweep / j / "metrics.json").read_text()) for j in ("0", "1")]
    expected = max((0, 1), key=lambda j: (done[j]["monitor"]["best"], -j))
    best = ft("runs", str(sweep), "--best", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    assert best.stdout.strip() == str(sweep / str(expected))


def write_run(folder: Path, status: str | None, best: float | None, mode: str = "min") -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("# ft train optimizer.lr=1\nmodel: {}\n")
    if status is not None:
        record = {"status": status, "monitor": {"metric": "loss", "mode": mode, "best": best},
                  "final": {"loss": best}, "steps": 3, "wall_seconds": 1.0}  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps(record))


def test_runs_rank_by_their_metric_mode_and_keep_unfinished_ones(tmp_path: Path) -> None:
    write_run(tmp_path / "a", "completed", 0.5)
    write_run(tmp_path / "b", "stopped_early", 0.2)
    write_run(tmp_path / "c", None, None)  # still running: no metrics.json yet
    (tmp_path / "b" / "checkpoints" / "step-00000003").mkdir(parents=True)
    rows = runs.summarise(tmp_path)
    assert [(r.job, r.status) for r in rows] == [
        ("b", "stopped early"),
        ("a", "done"),
        ("c", "running"),
    ]
    assert rows[0].overrides == "optimizer.lr=1"
    for row in rows:
        row.mode = "max"
    assert [r.job for r in runs.ranked(rows)][:2] == ["a", "b"]


def test_no_runs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FtError, match="no ft runs under"):
        runs.summarise(tmp_path)
    result = ft("runs", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("ft: error: ft runs: ")
