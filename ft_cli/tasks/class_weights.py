"""Class weights of the classification loss: `task.class_weights` made into numbers."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from ft_cli.config.schema import TaskConfig
from ft_cli.errors import FtError

IGNORED = -100  # token classification: sub-tokens without a target


def resolve(
    task: TaskConfig, labels: list[str], train_targets: list[Any], key: str = "task."
) -> list[float] | None:
    """One weight per class in label order; None when the loss is unweighted.

    `balanced`: n / (classes x count of the class) over the train split's
    targets (token classification: its labelled sub-tokens), so every class
    weighs as much in the loss as the others in total.
    """
    given = task.class_weights
    if given is None:
        return None
    if given == "balanced":
        return _balanced(labels, train_targets, key)
    if hasattr(given, "items"):
        unknown = [str(name) for name in given if str(name) not in labels]
        if unknown:
            raise FtError(
                f"{key}class_weights: label {unknown[0]!r} is not a class of this task;"
                f" its classes: {', '.join(labels)}"
            )
        named = {str(name): float(w) for name, w in given.items()}
        return [named.get(name, 1.0) for name in labels]
    values = [float(w) for w in given]
    if len(values) != len(labels):
        raise FtError(
            f"{key}class_weights lists {len(values)} weight(s) for {len(labels)} classes"
            f" ({', '.join(labels)}); give one per class in that order, or {{label: weight}}"
        )
    return values


def _balanced(labels: list[str], targets: list[Any], key: str) -> list[float]:
    flat = (
        [t for row in targets for t in row] if targets and isinstance(targets[0], list) else targets
    )
    counts = Counter(t for t in flat if t != IGNORED)
    missing = [labels[i] for i in range(len(labels)) if counts[i] == 0]
    if missing:
        raise FtError(
            f"{key}class_weights=balanced: class {missing[0]!r} has no rows in the train split;"
            " give the weights as a list or {label: weight} instead"
        )
    total = sum(counts.values())
    return [total / (len(labels) * counts[i]) for i in range(len(labels))]


def settled(
    task: TaskConfig, labels: list[str] | None, train_targets: list[Any], key: str = "task."
) -> TaskConfig:
    """The task settings with class_weights as one number per class."""
    if task.class_weights is None or labels is None:
        return task
    return dataclasses.replace(task, class_weights=resolve(task, labels, train_targets, key))


def by_label(task: TaskConfig, labels: list[str] | None) -> dict[str, float] | None:
    """{label: weight} of settled settings, for the run's record and the model card."""
    if task.class_weights is None or labels is None:
        return None
    return dict(zip(labels, task.class_weights, strict=True))
