"""Run dirs are owned: one writer at a time, and a run already there is never lost.

- A lock file (`.ft.lock`: process id, host, start time) keeps a second writer
  out; a lock whose process is gone (same host) is stale and taken over.
- A run dir that already holds a run is refused unless the user resumes it
  (`resume=...`) or starts over with `overwrite=true`, which moves the old run
  to `RUN_DIR.previous-N` first.
- Nothing is written until the caller has validated the spec, the data and
  the resume point and calls `claim`; checkpoints resume cannot use are moved
  to `checkpoints/unusable/`, never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ft_cli import host
from ft_cli.errors import FtError

LOCK = ".ft.lock"
UNUSABLE = "unusable"
# What a run writes; any of them means the dir holds a run ft must not mix with another.
RUN_FILES = ("config.yaml", "metrics.json", "model", "checkpoints", "tensorboard")


class RunDirRefused(FtError):
    """The run dir belongs to another run or writer: nothing may be written into it."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (tells a reused pid apart), where /proc has it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _holder(lock: Path) -> dict | None:
    """The lock's record; None while it is empty (its writer was killed between creating and
    writing it). Anything else that is not a record ft writes is refused as damaged."""
    try:
        text = lock.read_text()
    except OSError:
        return None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    valid = isinstance(record, dict) and isinstance(record.get("host"), str)
    if not valid or isinstance(record.get("pid"), bool) or not isinstance(record.get("pid"), int):
        raise RunDirRefused(
            f"run dir {lock.parent}: its lock file {lock} is damaged (not the record of pid and"
            " host that ft writes); if no ft process uses this run dir, delete the lock file"
        )
    return record


def _is_stale(holder: dict | None, lock: Path) -> bool:
    if holder is None:  # killed between creating and writing the lock
        try:
            return time.time() - lock.stat().st_mtime > 10
        except OSError:
            return True
    if holder.get("host") != socket.gethostname():
        return False  # cannot look at another machine's processes
    pid = int(holder.get("pid", -1))
    if not host.alive(pid):
        return True
    started = holder.get("process_start")
    return started is not None and _process_start(pid) not in (None, started)


@contextlib.contextmanager
def locked(run_dir: Path, warn: Callable[[str], None], enabled: bool = True) -> Iterator[None]:
    """Hold the run dir's lock for the length of the block (rank 0 alone under torchrun)."""
    if not enabled:
        yield
        return
    lock = run_dir / LOCK
    _acquire(run_dir, lock, warn)
    try:
        yield
    finally:
        with contextlib.suppress(RunDirRefused):  # a lock damaged meanwhile is left in place
            holder = _holder(lock)
            if holder is not None and holder.get("pid") == os.getpid():
                lock.unlink(missing_ok=True)


def _acquire(run_dir: Path, lock: Path, warn: Callable[[str], None]) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise disk_error(err, "the run dir") from err
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_start": _process_start(os.getpid()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if not _is_stale(holder, lock):
                raise _busy(run_dir, lock, holder) from None
            warn(f"{lock}: its process {holder and holder.get('pid')} is gone; taking it over")
            lock.unlink(missing_ok=True)
            continue
        except OSError as err:
            raise disk_error(err, "the run dir") from err
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:  # a full disk: the lock is not left behind, half written
            lock.unlink(missing_ok=True)
            err.filename = err.filename or str(lock)
            raise disk_error(err, "the run dir") from err
        return
    raise _busy(run_dir, lock, _holder(lock))


def _busy(run_dir: Path, lock: Path, holder: dict | None) -> RunDirRefused:
    who = (
        f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})"
        if holder
        else "another process"
    )
    return RunDirRefused(
        f"run dir {run_dir} is in use by {who}; wait for it, or pick another run dir"
        f" (hydra.run.dir=DIR); if no such process runs, delete {lock}"
    )


def holds_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in RUN_FILES)


def describe(run_dir: Path) -> str:
    """'completed, 120 steps'-style words for the run in a dir."""
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return "a run"
    status, steps = record.get("status", "unknown"), record.get("steps")
    return f"a run ({status}{f', {steps} steps' if steps is not None else ''})"


def check_reuse(run_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to train into a dir that holds a run unless resumed or overwritten."""
    if overwrite and resume is not None:
        raise FtError(
            f"overwrite=true and resume={resume}: give one (resume continues the run,"
            " overwrite starts over)"
        )
    if resume is None and not overwrite and holds_run(run_dir):
        raise RunDirRefused(
            f"run dir {run_dir} already holds {describe(run_dir)}; continue it with resume=auto,"
            f" start over with overwrite=true (the old run is moved to {aside_name(run_dir)}),"
            " or pick another run dir"
        )


def aside_name(run_dir: Path) -> Path:
    number = 1
    while run_dir.with_name(f"{run_dir.name}.previous-{number}").exists():
        number += 1
    return run_dir.with_name(f"{run_dir.name}.previous-{number}")


def claim(
    run_dir: Path,
    files: dict[str, str],
    overwrite: bool,
    unusable: list[Path],
    info: Callable[[str], None],
) -> Claimed:
    """The first writes of a validated run: move what must be kept aside, then write `files`.
    What it returns lets `release` undo them if the run fails to start."""
    claimed = Claimed(run_dir, {entry.name for entry in run_dir.iterdir()}, None)
    try:
        if overwrite and holds_run(run_dir):
            aside = aside_name(run_dir)
            aside.mkdir()
            for entry in run_dir.iterdir():
                if entry.name != LOCK:
                    os.replace(entry, aside / entry.name)
            claimed.aside = aside
            info(f"overwrite=true: the previous run is now in {aside}")
        for folder in unusable:
            moved = _unique(folder.parent / UNUSABLE / folder.name.removeprefix(".tmp-"))
            moved.parent.mkdir(exist_ok=True)
            os.replace(folder, moved)
            info(f"resume: {folder.name} cannot be used; moved to {moved}")
        for name, text in files.items():
            target = run_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    except OSError as err:
        raise disk_error(err, "the run dir") from err
    return claimed


@dataclass
class Claimed:
    """What a claim found in the run dir, and where an overwritten run was moved."""

    run_dir: Path
    before: set[str]  # the run dir's entries before the claim
    aside: Path | None


def release(claimed: Claimed, info: Callable[[str], None]) -> None:
    """Undo a claim whose run did not start (a logger refused): the files it and the start
    wrote are removed and an overwritten run comes back, so the same command can run again."""
    run_dir = claimed.run_dir
    keep = {LOCK} | (set() if claimed.aside is not None else claimed.before)
    for entry in run_dir.iterdir():
        if entry.name not in keep:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    if claimed.aside is not None:
        for entry in claimed.aside.iterdir():
            os.replace(entry, run_dir / entry.name)
        claimed.aside.rmdir()
        info(f"the run did not start: the previous run is back in {run_dir}")


def _unique(path: Path) -> Path:
    candidate, number = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.name}-{number}")
        number += 1
    return candidate


def disk_error(err: OSError, what: str) -> FtError:
    """A read-only, full or forbidden path as one line that names it."""
    where = err.filename or what
    reason = err.strerror or type(err).__name__
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return FtError(
            f"cannot write {where}: {reason}; free some space, or pick a run dir on"
            " another disk with hydra.run.dir=DIR"
        )
    return FtError(
        f"cannot write {where}: {reason}; pick a writable run dir with hydra.run.dir=DIR"
    )
