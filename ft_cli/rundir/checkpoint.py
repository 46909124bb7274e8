"""Crash-safe checkpoints: safetensors weights plus optimizer/scheduler/scaler/loop state.

A checkpoint is written into a temporary folder beside its final place, every
file is fsynced, a manifest (sizes and SHA-256 of every file, and the step) is
written last, and only then is the folder renamed into place. A folder without
a manifest that matches its files is not a checkpoint: resume skips it.
Retention deletes old checkpoints only after the new one is committed and
never the best. Nothing is unpickled on load beyond `weights_only=True`.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from ft_cli import host
from ft_cli.errors import FtError

WEIGHTS = "model.safetensors"
STATE = "trainer_state.pt"
INFO = "checkpoint.json"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, in types that `weights_only=True` loads."""
    version, python_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def estimated_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor)
    )
    return weights + moments + (1 << 20)


def check_disk_space(root: Path, needed: int) -> None:
    free = shutil.disk_usage(root).free
    if free < needed * 1.1:
        raise FtError(
            f"not enough disk space for a checkpoint in {root}: about {_size(needed * 1.1)}"
            f" needed, {_size(free)} free; free some space (the previous checkpoint is"
            " kept) or set output_dir / hydra.run.dir to a larger disk"
        )


def _size(count: float) -> str:
    """Bytes in the unit that keeps three significant digits (0.95 MiB, 1.20 GiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= 0.1 * scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count:.0f} bytes"


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    loop: dict[str, Any],
    rng: Any = None,
) -> Path:
    """Commit checkpoint `step` under `root` atomically; returns its folder.

    `rng`: the RNG states to keep (a list, one per rank, in data-parallel
    runs); by default this process's.
    """
    tmp = begin(root, step, estimated_bytes(model, optimizer))
    try:
        save_model(model, str(tmp / WEIGHTS))
    except OSError as err:
        _write_failed(err, root, tmp, step)
        raise
    return commit(
        root, tmp, step, {"optimizer": optimizer.state_dict()}, scheduler, scaler, loop, rng
    )


def begin(root: Path, step: int, needed_bytes: int) -> Path:
    """A fresh temporary folder for checkpoint `step`, once the disk has room for it."""
    root.mkdir(parents=True, exist_ok=True)
    check_disk_space(root, needed_bytes)
    tmp = root / f"{TMP_PREFIX}{checkpoint_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def commit(
    root: Path,
    tmp: Path,
    step: int,
    optimizer_state: dict[str, Any],
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    loop: dict[str, Any],
    rng: Any = None,
) -> Path:
    """Write the training state into `tmp` (weights already there), fsync, manifest, rename."""
    final = root / checkpoint_name(step)
    try:
        state = {
            **optimizer_state,
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state() if rng is None else rng,
            "loop": loop,
        }
        torch.save(state, tmp / STATE)
        (tmp / INFO).write_text(json.dumps(_jsonable(loop), indent=2) + "\n")
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            name = path.relative_to(tmp).as_posix()
            files[name] = {"bytes": path.stat().st_size, "sha256": host.sha256(path)}
        manifest = tmp / MANIFEST
        manifest.write_text(json.dumps({"step": step, "files": files}, indent=2) + "\n")
        with open(manifest, "rb") as handle:
            os.fsync(handle.fileno())
        if final.exists():
            _delete(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except OSError as err:
        _write_failed(err, root, tmp, step)
        raise
    return final


def _write_failed(err: OSError, root: Path, tmp: Path, step: int) -> None:
    """Drop the half-written folder; a full disk becomes a one-line error."""
    shutil.rmtree(tmp, ignore_errors=True)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        raise FtError(
            f"the disk filled up while writing checkpoint {checkpoint_name(step)} in {root}; the"
            " previous checkpoint is intact: free some space and resume with resume=auto"
        ) from err


def _jsonable(loop: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in loop.items() if isinstance(v, (int, float, str, bool, type(None)))}


def is_valid(checkpoint: Path) -> tuple[bool, str]:
    """Whether a checkpoint folder is complete and unchanged, and if not, why."""
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        return False, "no manifest (an interrupted write?)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as err:
        return False, f"unreadable manifest ({err})"
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file() or path.stat().st_size != expected["bytes"]:
            return False, f"{name} is missing or has the wrong size"
        if host.sha256(path) != expected["sha256"]:
            return False, f"{name} does not match its hash"
    return True, ""


def survey(root: Path, warn: Any = print) -> tuple[list[Path], list[Path]]:
    """(valid checkpoints oldest first, folders resume cannot use) under `root`; reads only.

    Unusable: committed checkpoints that fail their manifest, and the
    temporary folders of interrupted writes (their weights may be whole).
    """
    if not root.is_dir():
        return [], []
    valid, unusable = [], []
    for path in sorted(p for p in root.glob("step-*") if p.is_dir()):
        ok, why = is_valid(path)
        if ok:
            valid.append(path)
        else:
            warn(f"skipping checkpoint {path}: {why}")
            unusable.append(path)
    for path in sorted(p for p in root.glob(f"{TMP_PREFIX}step-*") if p.is_dir()):
        warn(f"skipping {path}: the leftover of an interrupted checkpoint write")
        unusable.append(path)
    return valid, unusable


def newest_valid(root: Path, warn: Any = print) -> Path | None:
    """The newest committed checkpoint that passes its manifest; warns about the rest."""
    for path in sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True):
        ok, why = is_valid(path)
        if ok:
            return path
        warn(f"skipping checkpoint {path}: {why}")
    return None


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The non-weight state of a checkpoint, loaded without unpickling arbitrary objects."""
    import pickle

    try:
        return torch.load(checkpoint / STATE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's advice here would be to load it unsafely
        raise FtError(
            f"resume: cannot load {checkpoint / STATE} safely (it holds pickled objects that"
            " could run code, refused); it is not a checkpoint ft wrote, or it was tampered with"
        ) from err
    except Exception as err:  # a truncated file, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FtError(
            f"resume: cannot load {checkpoint / STATE} safely ({first}); it is not a checkpoint"
            " ft wrote, or it was tampered with"
        ) from err


def load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    load_model(model, str(checkpoint / WEIGHTS))


def prune_checkpoints(root: Path, keep: int, protect: Path | None) -> None:
    """Delete all but the newest `keep` checkpoints, never `protect` (the best)."""
    checkpoints = sorted(p for p in root.glob("step-*") if p.is_dir())
    doomed = checkpoints[: max(0, len(checkpoints) - keep)]
    for path in doomed:
        if protect is None or path.resolve() != protect.resolve():
            _delete(path)


def _delete(path: Path) -> None:
    """Rename out of the step-* namespace first, so a kill mid-delete leaves no half checkpoint."""
    doomed = path.with_name(f"{TMP_PREFIX}deleting-{path.name}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
