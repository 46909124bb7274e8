"""Regression: one number per row (or pair) of text (STS-B style scores)."""

from __future__ import annotations

import math
from typing import Any

from ft_cli.errors import FtError
from ft_cli.tasks.base import Task


class Regression(Task):
    name = "regression"
    named_labels = False

    def targets(
        self, values: list[Any], labels: list[str] | None, split: str, column: str
    ) -> list[Any]:
        out: list[float] = []
        for row, value in enumerate(values):
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if math.isnan(number):
                raise FtError(
                    f"data.label_column: value {value!r} in column '{column}' of the {split} split"
                    f" (row {row}) is not a number; task=regression needs float labels"
                )
            out.append(number)
        return out

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        return {"num_labels": 1, "problem_type": "regression"}, "AutoModelForSequenceClassification"

    def prediction(
        self, logits: Any, labels: list[str] | None, extra: Any, lists: bool
    ) -> dict[str, Any]:
        return {"predicted_score": float(self.pooled(logits, extra)[0])}

    def soft_loss(self, student: Any, teacher: Any, temperature: float) -> Any:
        from torch.nn import functional as F

        return F.mse_loss(student, teacher)  # the teacher's scores as targets

    def ensemble_values(self, logits: Any, length: int, width: int) -> Any:
        return logits  # a score, averaged as it is

    def ensemble_logits(self, values: Any) -> Any:
        return values


TASK = Regression()
