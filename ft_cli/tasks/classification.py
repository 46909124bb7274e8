"""Sequence classification: one class per row (or pair) of text."""

from __future__ import annotations

from typing import Any

from ft_cli.config.schema import DataConfig, TaskConfig
from ft_cli.errors import FtError
from ft_cli.tasks import class_weights
from ft_cli.tasks.base import Task


class Classification(Task):
    name = "classification"
    confusion_matrix = True

    def label_names(
        self, task: TaskConfig, cfg: DataConfig, train: Any, hub_names: list[str] | None
    ) -> list[str] | None:
        if task.labels:
            return [str(label) for label in task.labels]
        if hub_names:
            return hub_names
        values = {v for v in train[cfg.label_column] if v is not None}
        if all(isinstance(v, (int, bool)) for v in values):
            return [str(v) for v in sorted(values)]
        return sorted(str(v) for v in values)

    def check_labels(self, labels: list[str] | None, task: TaskConfig) -> None:
        if len(labels or []) >= 2:
            return
        found = ", ".join(labels or [])
        if task.labels:
            raise FtError(
                f"task.labels=[{found}] lists one class; classification needs two or more"
            )
        raise FtError(
            f"data.label_column: the train split has {len(labels or [])} distinct label(s)"
            f" ({found}); classification needs at least 2"
        )

    def targets(
        self, values: list[Any], labels: list[str] | None, split: str, column: str
    ) -> list[Any]:
        assert labels is not None
        ids = {name: i for i, name in enumerate(labels)}
        result: list[int] = []
        for row, value in enumerate(values):
            label_id = ids.get(str(value))
            if label_id is None:
                raise FtError(
                    f"data.label_column: label {value!r} in column '{column}' of the {split}"
                    f" split (row {row}) is not in the label set [{', '.join(labels)}]; fix the"
                    " data or list every class in task.labels"
                )
            result.append(label_id)
        return result

    def settle(self, task: TaskConfig, prepared: Any, key: str = "task.") -> TaskConfig:
        return class_weights.settled(task, prepared.labels, prepared.train.labels, key)

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        values, auto = super().head(labels)
        return {**values, "problem_type": "single_label_classification"}, auto

    def predictions(self, predictor: Any, rows: list[dict]) -> list[dict[str, Any]]:
        """Each row's class: the most probable, or with a tuned decision threshold
        (`task.threshold`, kept in the model's config) the positive class (id 1) when its
        probability reaches the threshold."""
        found = super().predictions(predictor, rows)
        threshold = getattr(getattr(predictor.net, "config", None), "ft_threshold", None)
        labels = predictor.labels
        if threshold is None or labels is None or len(labels) != 2:
            return found
        for columns in found:
            chosen = labels[1] if columns[f"probability_{labels[1]}"] >= threshold else labels[0]
            columns["predicted_label"] = chosen
            columns["predicted_probability"] = columns[f"probability_{chosen}"]
        return found

    def prediction(
        self, logits: Any, labels: list[str] | None, extra: Any, lists: bool
    ) -> dict[str, Any]:
        assert labels is not None
        probs = self.pooled(logits, extra).softmax(-1).tolist()
        best = max(range(len(probs)), key=probs.__getitem__)
        columns = {"predicted_label": labels[best], "predicted_probability": probs[best]}
        for name, p in zip(labels, probs, strict=True):
            columns[f"probability_{name}"] = p
        return columns


TASK = Classification()
