"""An ensemble saved as a small manifest, `ensemble.json`: members and how to combine them.

No weights are copied: members are referred to by path, relative to the
manifest's folder (the tree moves as one), and the combination is plain
numbers (weights, or the stacking meta-model's coefficients).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ft_cli import paths
from ft_cli.ensembles.combine import Combiner
from ft_cli.errors import FtError

FILE = "ensemble.json"
FORMAT = "ft-ensemble/1"


@dataclass
class Manifest:
    folder: Path
    member_paths: list[Path]
    combiner: Combiner
    task: str
    labels: list[str] | None


def read(folder: Path) -> Manifest | None:
    """The ensemble saved in `folder`, or None when it holds none."""
    path = folder / FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT!r}")
        combination = record["combination"]
        combiner = Combiner(combination["method"], record["task"] == "regression",
                            combination.get("weights"), combination.get("coef"),
                            combination.get("bias"))  # fmt: skip
        members = [folder / item for item in record["members"]]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise FtError(f"{path} is damaged ({err}); write it again with ft ensemble") from err
    missing = [str(m) for m in members if not m.is_dir()]
    if missing:
        raise FtError(f"{path}: member(s) {', '.join(missing)} no longer exist")
    return Manifest(folder, members, combiner, record["task"], record.get("labels"))


def write(folder: Path, members: list[Path], combiner: Combiner, task: str,
          labels: list[str] | None, validation: dict[str, Any], command: str) -> Path:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "format": FORMAT,
        "command": command,
        "task": task,
        "labels": labels,
        "members": [os.path.relpath(m.resolve(), folder.resolve()) for m in members],
        "combination": combiner.to_dict(),
        "validation": validation,
    }
    path = folder / FILE
    if not paths.write_atomic(path, json.dumps(record, indent=2) + "\n"):
        raise FtError(f"--output {folder}: cannot write {FILE} there (read-only or full)")
    return path
