"""Checkpoints: safetensors weights plus optimizer/scheduler/scaler/trainer state.

Each checkpoint is written to a temporary folder and renamed into place, so a
crash mid-write never leaves a half checkpoint under a real name. Retention
deletes old checkpoints only after the new one is in place and never the best.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

WEIGHTS = "model.safetensors"
STATE = "trainer_state.pt"
INFO = "checkpoint.json"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def rng_state() -> dict[str, Any]:
    # numpy's state goes in as plain lists/ints so torch.load(weights_only=True) reads it.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    trainer: dict[str, Any],
) -> Path:
    """Write checkpoint `step` under `root`; returns its folder."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / WEIGHTS))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "trainer": trainer,
        },
        tmp / STATE,
    )
    (tmp / INFO).write_text(json.dumps({"step": step, **_jsonable(trainer)}, indent=2) + "\n")
    for path in tmp.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _jsonable(trainer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in trainer.items() if isinstance(v, (int, float, str, bool, type(None)))}


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The non-weight state of a checkpoint, loaded without unpickling arbitrary objects."""
    return torch.load(checkpoint / STATE, map_location="cpu", weights_only=True)


def load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    load_model(model, str(checkpoint / WEIGHTS))


def prune_checkpoints(root: Path, keep: int, protect: Path | None) -> None:
    """Delete all but the newest `keep` checkpoints, never `protect` (the best)."""
    checkpoints = sorted(p for p in root.glob("step-*") if p.is_dir())
    doomed = checkpoints[: max(0, len(checkpoints) - keep)]
    for path in doomed:
        if protect is None or path.resolve() != protect.resolve():
            shutil.rmtree(path)
