"""The benchmark script runs end to end on the tiny model (figures are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MRPC, REPO


def test_compare_hf_quick_on_the_tiny_model(tmp_path: Path) -> None:
    if not (MRPC / "train.tsv").is_file():
        pytest.skip("../shared/data/glue/MRPC is absent")
    pytest.importorskip("accelerate")
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable, str(REPO / "bench" / "compare_hf.py"), "--quick", "--tiny",
            "--max-steps", "3", "--max-train-samples", "128", "--max-eval-samples", "64",
            "--data", str(MRPC), "--json", str(out),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ft / HF" in result.stdout and "MFU vs bf16 peak" in result.stdout
    record = json.loads(out.read_text())
    for side in ("ft", "hf"):
        row = record["table"][side]
        assert row["train samples/s"] > 0
        assert 0 <= row["padding (%)"] < 100
        assert row["peak RSS (MiB)"] > 0
        assert record["runs"][side][0]["train_samples"] == 3 * 32
