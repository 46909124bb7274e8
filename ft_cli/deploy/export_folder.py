"""What an export folder is and who owns it: its record, its hashes, and its staging.

`ft export` writes a folder only when it is missing, empty, or an earlier ft
export (recognised by its record, `onnx.json`); with `--overwrite` it may
replace that export and nothing else. The record names the weights it was
made from (run, checkpoint step, a content hash) and the hash of every file
it wrote, so `ft predict --backend onnxruntime` and `ft serve` can refuse a
damaged, swapped or stale graph before loading it.

An export is built in a hidden staging folder beside its target, marked with
the process that owns it; a staging folder whose process is gone (a killed
export) is removed by the next export in the same place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from ft_cli import host
from ft_cli.errors import FtError

RECORD = "onnx.json"
FORMAT = "ft-onnx/2"
OLD_FORMATS = ("ft-onnx/1",)  # no hashes: recognised (may be replaced) but never loaded
STAGING_MARK = ".ft-export-staging"
# The files an export of the first format wrote (it listed none).
OLD_FILES = (
    "model.onnx",
    "model.int8.onnx",
    "onnx.json",
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "merges.txt",
    "vocab.json",
    "added_tokens.json",
)


def weight_files(found: Any) -> list[Path]:
    """The safetensors files that hold a trained model's weights (a checkpoint's first)."""
    folder = found.checkpoint if found.checkpoint is not None else found.export
    if folder is None:
        return []
    return sorted(folder.glob("*.safetensors"))


def weights_identity(found: Any) -> dict[str, Any]:
    """Which weights a trained model is: run, checkpoint step, task and a content hash."""
    files = weight_files(found)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{host.sha256(path)}\n".encode())
    step = None
    if found.checkpoint is not None:
        step = int(found.checkpoint.name.rsplit("-", 1)[-1])
    return {
        "run": str(found.home.resolve()),
        "checkpoint_step": step,
        "task": found.task,
        "files": [p.name for p in files],
        "sha256": digest.hexdigest() if files else None,
    }


def describe(weights: dict[str, Any]) -> str:
    step = weights.get("checkpoint_step")
    where = f"checkpoint step {step}" if step is not None else "the final model"
    return where + (f" of task {weights['task']}" if weights.get("task") else "")


def read_record(folder: Path) -> dict[str, Any] | None:
    """An export folder's record, or None when the folder holds none ft wrote."""
    path = folder / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or record.get("format") not in (FORMAT, *OLD_FORMATS):
        return None
    return record


def own_files(folder: Path, record: dict[str, Any]) -> set[str]:
    """The files an earlier export wrote there, by its record."""
    if record.get("format") == FORMAT and isinstance(record.get("hashes"), dict):
        return {*record["hashes"], RECORD}
    return set(OLD_FILES)


def check_target(target: Path, overwrite: bool) -> bool:
    """Refuse a target ft export did not write; True when an earlier export is replaced."""
    if target.exists() and not target.is_dir():
        raise FtError(f"--output {target} is a file; name a new or empty folder")
    if not target.exists():
        return False  # --overwrite with nothing there yet writes it, as a first export does
    try:
        entries = sorted(target.iterdir())
    except OSError as err:
        raise FtError(f"--output {target}: cannot read it ({err.strerror})") from err
    if not entries:
        return False
    record = read_record(target)
    if record is None:
        raise FtError(
            f"--output {target} holds files ft export did not write ({entries[0].name}, ...);"
            " name a new or empty folder"
        )
    strangers = [e.name for e in entries if e.name not in own_files(target, record) or e.is_dir()]
    if strangers:
        raise FtError(
            f"{target} holds an earlier export and files it did not write ({strangers[0]});"
            " move them away or name another folder with --output"
        )
    if not overwrite:
        weights = record.get("weights") or {}
        raise FtError(
            f"{target} already holds an ONNX export ({describe(weights)}); replace it with"
            " --overwrite, or name another folder with --output"
        )
    return True


def begin_staging(target: Path) -> Path:
    """A hidden folder beside `target`, marked as this process's, to build the export in."""
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        staging.chmod(0o755)  # mkdtemp's folder is private; the export is an ordinary one
        mark = {"pid": os.getpid(), "host": socket.gethostname()}
        (staging / STAGING_MARK).write_text(json.dumps(mark))
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def clean_stale_staging(parent: Path, name: str) -> list[Path]:
    """Remove staging folders of exports to `name` whose process is gone; the removed."""
    removed = []
    for folder in sorted(parent.glob(f".{name}-*")):
        mark = folder / STAGING_MARK
        if not folder.is_dir() or not mark.is_file():
            continue
        try:
            owner = json.loads(mark.read_text())
            pid, machine = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if machine == socket.gethostname() and not host.alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def seal(staging: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Hash every file built in `staging` into the record and write it there."""
    (staging / STAGING_MARK).unlink()
    hashes = {p.name: host.sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
    record = {**record, "format": FORMAT, "hashes": hashes}
    (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def move_into_place(staging: Path, target: Path, replace: bool) -> None:
    """Rename the built export to `target`; an earlier export there is set aside first and
    removed only once the new one is in place."""
    if not replace:
        staging.rename(target)
        return
    aside = begin_staging(target)  # marked: a kill from here on leaves it for the next export
    os.rename(target, aside / "previous")
    staging.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


def verify(folder: Path, name: str, found: Any) -> dict[str, Any]:
    """The record of the export in `folder` after checking that `name` is the file it wrote
    and that it was made from `found`'s weights; one line naming the mismatch otherwise."""
    again = f"export it again: ft export {found.home} --overwrite"
    record = read_record(folder)
    if record is None:
        raise FtError(f"{folder / RECORD} is missing or damaged: it is no ft export; {again}")
    if record["format"] != FORMAT:
        raise FtError(f"{folder} was exported by an older ft that recorded no hashes; {again}")
    hashes = record.get("hashes") or {}
    if name not in hashes:
        raise FtError(f"{folder}: the export's record lists no {name}; {again}")
    path = folder / name
    if not path.is_file():
        raise FtError(f"{path} is missing; {again}")
    if host.sha256(path) != hashes[name]:
        raise FtError(f"{path} does not match the hash in {RECORD} (damaged or replaced); {again}")
    made_from = record.get("weights") or {}
    current = weights_identity(found)
    if made_from.get("sha256") != current["sha256"]:
        raise FtError(
            f"{folder} was exported from other weights ({describe(made_from)} of"
            f" {made_from.get('run', 'another run')}) than {found.home} holds now; {again}"
        )
    return record
