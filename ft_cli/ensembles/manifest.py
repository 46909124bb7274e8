"""An ensemble saved as a small manifest, `ensemble.json`: members and how to combine them.

No weights are copied: members are referred to by path, relative to the
manifest's folder (the tree moves as one), and the combination is plain
numbers (weights, or the stacking meta-model's coefficients).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ft_cli import paths, tasks
from ft_cli.ensembles.combine import METHODS, Combiner
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
    """The ensemble saved in `folder`, or None when it holds none; every number and shape
    in it is checked, since a manifest is a file anyone may edit."""
    path = folder / FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if record.get("format") != FORMAT:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT!r}")
        members = [folder / item for item in _strings(record["members"], "members")]
        labels = record.get("labels")
        if labels is not None:
            labels = _strings(labels, "labels")
        task = record["task"]
        if task not in tasks.named(lambda info: bool(info.ensembles)):
            combined = " or ".join(tasks.named(lambda info: bool(info.ensembles)))
            raise ValueError(f"task {task!r}: ensembles combine {combined}")
        scores = tasks.info(task).targets == "score"
        combiner = _combiner(record["combination"], scores, len(members), labels)
        if combiner.method not in tasks.info(task).ensembles:
            raise ValueError(f"method {combiner.method!r} does not combine task {task}")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise FtError(f"{path} is damaged ({err}); write it again with ft ensemble") from err
    missing = [str(m) for m in members if not m.is_dir()]
    if missing:
        raise FtError(f"{path}: member(s) {', '.join(missing)} no longer exist")
    return Manifest(folder, members, combiner, task, labels)


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a non-empty list of strings")
    return list(value)


def _numbers(value: object, key: str, count: int) -> list[float]:
    """`count` finite numbers (JSON's true/false are not numbers here)."""
    if not isinstance(value, list) or len(value) != count:
        raise ValueError(f"{key} must be a list of {count} numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{key} must hold numbers only")
    numbers = [float(v) for v in value]
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{key} holds a value that is not finite")
    return numbers


def _combiner(
    combination: dict, regression: bool, members: int, labels: list[str] | None
) -> Combiner:
    method = combination["method"]
    if method not in METHODS:
        raise ValueError(f"method {method!r}; methods: {', '.join(METHODS)}")
    weights = combination.get("weights")
    if method in ("weighted", "greedy") or (method == "mean" and weights is not None):
        weights = _numbers(weights, "weights", members)
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("weights must be non-negative and not all 0")
    else:
        weights = None
    coef = bias = None
    if method == "stack":
        outputs = 1 if regression else len(labels or [])
        if outputs == 0:
            raise ValueError("a stacked classifier needs its labels")
        rows = combination.get("coef")
        if not isinstance(rows, list) or len(rows) != outputs:
            raise ValueError(f"coef must be {outputs} rows of {members * outputs} numbers")
        coef = [_numbers(row, "coef", members * outputs) for row in rows]
        bias = _numbers(combination.get("bias"), "bias", outputs)
    return Combiner(method, regression, weights, coef, bias)


def check_members(saved: Manifest, loaded: list[Any]) -> None:
    """The members as they are now must still be what the manifest was fit on."""
    first = loaded[0]
    if first.spec.task.kind != saved.task:
        raise FtError(
            f"{saved.folder / FILE}: task {saved.task}, but its members are now"
            f" {first.spec.task.kind}; fit the ensemble again with ft ensemble"
        )
    if saved.labels != first.labels:
        raise FtError(
            f"{saved.folder / FILE}: labels {saved.labels}, but its members predict"
            f" {first.labels}; fit the ensemble again with ft ensemble"
        )


def write(
    folder: Path,
    members: list[Path],
    combiner: Combiner,
    task: str,
    labels: list[str] | None,
    validation: dict[str, Any],
    command: str,
) -> Path:
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
