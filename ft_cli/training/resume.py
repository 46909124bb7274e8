"""Which checkpoint a run resumes from, and what changed since it was written."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.rundir import checkpoint

AUTO = "auto"
# Keys whose change makes the checkpoint a different experiment, not a continuation.
GUARDED = ("model.", "task.", "data.")
# Keys that may differ freely between a run and its resume.
IGNORED = ("resume", "resume_force", "output_dir", "overwrite", "logger.")


def target_dir(resume: str | None, run_dir: Path) -> Path:
    """The run dir a run writes to: its own, or the resumed checkpoint's run."""
    if resume is None or resume == AUTO:
        return run_dir
    path = Path(resume)
    if (path / "checkpoints").is_dir():
        return path
    if (path / checkpoint.MANIFEST).is_file() or path.name.startswith("step-"):
        return run_dir_of(path)
    return run_dir  # not a checkpoint: find_checkpoint says so


def find_checkpoint(
    resume: str, run_dir: Path, warn: Callable[[str], None]
) -> tuple[Path | None, list[Path]]:
    """The checkpoint to resume from (None for `auto` when there is none), and the
    checkpoints of the run that cannot be used (moved aside, never deleted, when the
    run claims its dir). Reads only.

    Args:
        resume: `auto` (newest valid checkpoint of `run_dir`) or a path to a
            checkpoint folder or to a run dir.
        run_dir: the run dir the run writes to (`target_dir`).
        warn: prints a warning line per unusable checkpoint.
    """
    valid, unusable = checkpoint.survey(run_dir / "checkpoints", warn)
    if resume == AUTO:
        return (valid[-1] if valid else None), unusable
    path = Path(resume)
    if (path / "checkpoints").is_dir():  # a run dir
        if not valid:
            raise FtError(f"resume={resume}: the run dir has no valid checkpoint to resume from")
        return valid[-1], unusable
    if not path.is_dir():
        raise FtError(
            f"resume={resume}: no such checkpoint or run dir; use resume=auto or the path of"
            " RUN_DIR/checkpoints/step-NNNNNNNN"
        )
    ok, why = checkpoint.is_valid(path)
    if not ok:
        raise FtError(f"resume={resume}: not a valid checkpoint ({why})")
    return path, unusable


def run_dir_of(checkpoint_dir: Path) -> Path:
    """A checkpoint lives in RUN_DIR/checkpoints/step-N: its run keeps writing there."""
    return checkpoint_dir.parent.parent


def data_hash(split: EncodedSplit) -> str:
    """A fingerprint of the tokenized training data (text, tokenizer, max_length, labels)."""
    digest = hashlib.sha256()
    own = getattr(split, "update_digest", None)
    if own is not None:  # a split not of token ids (images): it says what identifies it
        own(digest)
        return digest.hexdigest()
    for ids in split.input_ids:
        digest.update(array("i", ids).tobytes())
        digest.update(b"|")
    digest.update(repr(split.labels).encode())
    return digest.hexdigest()


def config_changes(saved_yaml: str, current_yaml: str) -> list[str]:
    """`key: old -> new` for every leaf that differs between two resolved specs."""
    saved = _flatten(OmegaConf.to_container(OmegaConf.create(saved_yaml)))
    current = _flatten(OmegaConf.to_container(OmegaConf.create(current_yaml)))
    changes = []
    for key in sorted(saved.keys() | current.keys()):
        if key.startswith(IGNORED):
            continue
        if saved.get(key) != current.get(key):
            changes.append(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}")
    return changes


def _flatten(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def check_drift(
    changes: list[str], saved_hash: str, current_hash: str, force: bool, warn: Callable[[str], None]
) -> None:
    """Print what changed; refuse a changed model, task or data unless forced."""
    if saved_hash and saved_hash != current_hash:
        changes = [*changes, "data: the tokenized training data differs"]
    if not changes:
        return
    warn("resuming with a changed config: " + "; ".join(changes))
    guarded = [c for c in changes if c.startswith(GUARDED) or c.startswith("data:")]
    if guarded and not force:
        raise FtError(
            "resume: the model, task or data changed since the checkpoint ("
            + "; ".join(guarded)
            + "); that is a new run, not a continuation: drop resume, or add resume_force=true"
        )
