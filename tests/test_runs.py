"""`ft runs`: the sweep summary, best first, failed jobs listed with their error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import TINY
from test_cli import ft

from ft_cli.errors import FtError
from ft_cli.rundir import records


@pytest.mark.slow
def test_a_sweep_ends_with_its_summary_and_ft_runs_names_the_best(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = ft(
        "train",
        "-m",
        *TINY,
        "optimizer.lr=3e-3",
        "train.max_steps=1,6,0",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 1  # one job failed, the others ran
    assert "best first" in result.stdout
    summary = json.loads((sweep / "summary.json").read_text())["runs"]
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
        record = {
            "status": status,
            "monitor": {"metric": "loss", "mode": mode, "best": best},
            "final": {"loss": best},
            "steps": 3,
            "wall_seconds": 1.0,
        }
        (folder / "metrics.json").write_text(json.dumps(record))


def test_runs_rank_by_their_metric_mode_and_keep_unfinished_ones(tmp_path: Path) -> None:
    write_run(tmp_path / "a", "completed", 0.5)
    write_run(tmp_path / "b", "stopped_early", 0.2)
    write_run(tmp_path / "c", None, None)  # still running: no metrics.json yet
    (tmp_path / "b" / "checkpoints" / "step-00000003").mkdir(parents=True)
    rows = records.summarise(tmp_path)
    assert [(r.job, r.status) for r in rows] == [
        ("b", "stopped early"),
        ("a", "done"),
        ("c", "running"),
    ]
    assert rows[0].overrides == "optimizer.lr=1"
    for row in rows:
        row.mode = "max"
    assert [r.job for r in records.ranked(rows)][:2] == ["a", "b"]


def test_no_runs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FtError, match="no ft runs under"):
        records.summarise(tmp_path)
    result = ft("runs", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("ft: error: ft runs: ")


def write_seeded(folder: Path, overrides: str, best: dict[str, float]) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"# ft train {overrides}\nmodel: {{}}\n")
    record = {
        "status": "completed",
        "steps": 3,
        "wall_seconds": 1.0,
        "monitor": {"metric": "accuracy", "mode": "max", "best": best["accuracy"]},
        "best": {**best, "step": 3},
        "final": best,
    }
    (folder / "metrics.json").write_text(json.dumps(record))


def test_runs_that_differ_only_in_their_seed_get_numpy_equal_statistics(
    tmp_path: Path, capsys
) -> None:
    import numpy as np

    from ft_cli import cli
    from ft_cli.rundir import seeds

    accuracy = {"a": [0.81, 0.74, 0.79, 0.70], "b": [0.66, 0.69]}
    f1 = [0.87, 0.83, 0.86, 0.80]
    for lr, values in accuracy.items():
        for seed, value in enumerate(values):
            best = {"accuracy": value} | ({"f1": f1[seed]} if lr == "a" else {})
            write_seeded(tmp_path / f"{lr}{seed}", f"optimizer.lr={lr} train.seed={seed}", best)
    write_seeded(tmp_path / "alone", "optimizer.lr=c train.seed=0", {"accuracy": 0.9})
    groups = seeds.seed_groups(records.summarise(tmp_path))
    assert [g.overrides for g in groups] == ["optimizer.lr=a", "optimizer.lr=b"]  # best mean first
    for group, values in zip(groups, accuracy.values(), strict=True):
        stats = group.stats["best accuracy"]
        assert stats["n"] == len(values) and sorted(group.seeds) == [
            str(i) for i in range(len(values))
        ]
        assert stats["mean"] == pytest.approx(np.mean(values))
        assert stats["std"] == pytest.approx(np.std(values, ddof=1))
        assert (stats["min"], stats["max"]) == (min(values), max(values))
    assert groups[0].stats["final f1"]["std"] == pytest.approx(np.std(f1, ddof=1))

    with pytest.raises(SystemExit) as done:
        cli.main(["runs", str(tmp_path)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "seed statistics" in out and f"{np.mean(accuracy['a']):.4f}" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["runs"]) == 7
    assert summary["seed_groups"][1]["stats"]["best accuracy"]["mean"] == pytest.approx(0.675)
    with open(tmp_path / "summary.csv", newline="") as handle:
        lines = {line["job"]: line for line in csv.DictReader(handle)}
    assert lines["b1"]["seed_group"] == "2" and lines["b1"]["group_runs"] == "2"
    assert float(lines["a0"]["group_best_std"]) == pytest.approx(np.std(accuracy["a"], ddof=1))
    assert lines["alone"]["seed_group"] == ""
