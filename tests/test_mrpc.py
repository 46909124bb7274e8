"""The packaged MiniLM on real GLUE MRPC (skipped when ../shared is absent)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import MRPC, compose_spec

pytestmark = pytest.mark.slow


def majority_accuracy(path: Path) -> float:
    with open(path, encoding="utf-8-sig") as handle:
        labels = [
            row["Quality"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]
    return max(labels.count(v) for v in set(labels)) / len(labels)


def test_minilm_beats_the_majority_class_on_mrpc_dev(tmp_path: Path) -> None:
    if not (MRPC / "train.tsv").is_file():
        pytest.skip("../shared/data/glue/MRPC is absent")
    from ft_cli.training.engine import train

    spec = compose_spec(
        [
            "+recipe=minilm_mrpc",
            f"data.path={MRPC}",
            # A higher rate on fewer, shorter steps with the embeddings and 2 bottom layers
            # frozen: 23 s alone on 2 cores (against 115 to 120 s for the recipe's
            # settings), dev accuracy 0.718 / 0.716 and F1 0.827 / 0.803 for seeds 42 / 1
            # (0.725 / 0.733 after 100 steps, 0.755 after 160); evaluated once, at the end.
            "optimizer.lr=2e-4",
            "train.batch_size=16",
            "train.max_steps=70",
            "data.max_length=96",
            "train.log_every=50",
            "strategy=freeze_layers",
            "train.eval_every=1000",
        ]
    )
    result = train(spec, run_dir=tmp_path / "run")
    record = json.loads((result.run_dir / "metrics.json").read_text())
    baseline = majority_accuracy(MRPC / "dev.tsv")
    assert record["steps"] == 70
    assert record["best"]["accuracy"] > baseline + 0.02, (record["best"], baseline)
    assert record["best"]["f1"] > 0.8
