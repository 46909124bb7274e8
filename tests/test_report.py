"""ft report: valid PNGs, an HTML page that embeds and links them, the right numbers."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from conftest import TINY

from ft_cli import cli
from ft_cli.commands import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_page(root: Path) -> list[Path]:
    """Every PNG is a decodable image, linked by name and embedded byte for byte."""
    import matplotlib.image

    page = (root / "report.html").read_text()
    pngs = sorted(root.glob("*.png"))
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        height, width, _ = matplotlib.image.imread(png).shape
        assert height > 100 and width > 100
        assert f'href="{png.name}"' in page
        assert base64.b64encode(data).decode() in page
    assert len(re.findall(r"<img ", page)) == len(pngs)
    return pngs


@pytest.mark.slow
def test_a_run_report(tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = [
        *TINY,
        "train.epochs=2",
        "train.eval_every=3",
        "train.export=last",
        f"hydra.run.dir={run}",
    ]
    assert cli.run_train(overrides) == 0
    report.write_report(run)
    names = {p.name for p in check_page(run)}
    assert {"train_loss.png", "train_lr.png", "eval_accuracy.png", "confusion_matrix.png"} <= names
    counts, labels = report.confusion_matrix(run)
    assert labels == ["negative", "positive"] and sum(map(sum, counts)) == 48
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert (counts[0][0] + counts[1][1]) / 48 == pytest.approx(final["accuracy"], abs=1e-6)
    assert "done" in (run / "report.html").read_text()


@pytest.mark.slow
def test_a_sweep_report_plots_the_metric_against_what_varied(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    assert (
        cli.run_train(
            [
                "-m",
                *TINY,
                "train.max_steps=4",
                "optimizer.lr=1e-3,1e-2",
                "train.seed=1,2",
                f"hydra.sweep.dir={sweep}",
            ]
        )
        == 0
    )
    assert cli._run_tool("report", [str(sweep), "--no-confusion"]) == 0
    names = {p.name for p in check_page(sweep)}
    assert "sweep_optimizer_lr.png" in names and "confusion_matrix.png" not in names
    assert "seed_spread.png" in names  # two groups of two seeds
    page = (sweep / "report.html").read_text()
    assert "seed statistics" in page and "optimizer.lr=0.01" in page
    rows = json.loads((sweep / "summary.json").read_text())["runs"]
    varied = report.varied_hyperparameters(report.records.summarise(sweep))
    assert sorted(varied) == ["optimizer.lr", "train.seed"]
    assert sorted(y for _, y in varied["optimizer.lr"]) == sorted(r["best"] for r in rows)


def test_report_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert cli._run_tool("report", [str(tmp_path)]) == 2
    assert "no ft runs under" in capsys.readouterr().err
