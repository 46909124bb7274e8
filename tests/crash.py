"""What a crash leaves in a run dir, for the tests of resuming."""

from __future__ import annotations

import shutil
from pathlib import Path


def cut_after(run_dir: Path, step: int) -> None:
    """Leave `run_dir` as a crash right after checkpoint `step` would have: every later
    checkpoint, the export and metrics.json gone (TensorBoard keeps the later events)."""
    for ckpt in (run_dir / "checkpoints").glob("step-*"):
        if int(ckpt.name.split("-")[1]) > step:
            shutil.rmtree(ckpt)
    shutil.rmtree(run_dir / "model")
    (run_dir / "metrics.json").unlink()
