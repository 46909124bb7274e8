"""Tasks: what each task reads, predicts, optimises and reports, one module per task.

`TASKS` maps a task name (`task=NAME`, `task.kind`) to its module and metric
names, as plain data: the config schema reads it without importing torch, and
`get` imports a task's module only when a run needs it. A new task is a module
here with a `TASK` object (see `base.Task`), one line in `TASKS`, and its
`configs/task/NAME.yaml`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskInfo:
    module: str  # ft_cli.tasks.<module>, which defines TASK
    metrics: tuple[str, ...]  # its evaluation metrics; the first is monitored by default


TASKS: dict[str, TaskInfo] = {
    "classification": TaskInfo("classification", ("accuracy", "f1", "mcc", "loss")),
    "regression": TaskInfo("regression", ("pearson", "spearman", "mse", "loss")),
    # Entity-level (IOB2 chunks, as seqeval counts them); accuracy is per word.
    "token_classification": TaskInfo(
        "token_classification", ("f1", "precision", "recall", "accuracy", "loss")
    ),
    # Images from folders or files, through transformers' image classifiers.
    "image_classification": TaskInfo("image_classification", ("accuracy", "f1", "mcc", "loss")),
    "mlm": TaskInfo("masked_lm", ("loss", "perplexity", "accuracy")),
    # Several tasks on one encoder: `score` is the mean of each task's first metric
    # (mlm tasks aside); each task's own metrics come as NAME/METRIC.
    "multitask": TaskInfo("multitask", ("score",)),
}


def get(kind: Any) -> Any:
    """The task object (`base.Task`) for a task name or `TaskKind`."""
    name = getattr(kind, "value", kind)
    return importlib.import_module(f"ft_cli.tasks.{TASKS[name].module}").TASK
