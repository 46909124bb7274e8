"""Per-task loss and evaluation metrics (computed with torchmetrics)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.nn import functional as F

from ft_cli.config.schema import (
    EarlyStoppingConfig,
    Mode,
    TaskSettings,
    default_mode,
    valid_metrics,
)
from ft_cli.errors import FtError
from ft_cli.tasks import info


def task_loss(
    task: str,
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    # Computed in fp32: the logits may come out of autocast in bf16/fp16.
    if info(task).targets == "score":
        return F.mse_loss(logits.float().squeeze(-1), labels.float())
    return F.cross_entropy(
        logits.float(), labels, weight=class_weights, label_smoothing=label_smoothing
    )


class EvalMetrics:
    """Accumulates predictions over an evaluation pass and computes the task's metrics.

    Predictions are kept (one value per row) so that the parts evaluated by
    several processes merge into exactly the single-process result.
    """

    def __init__(self, task: str, num_labels: int) -> None:
        self.task, self.num_labels = task, num_labels
        self.predictions: list[torch.Tensor] = []
        self.confidences: list[torch.Tensor] = []  # classes: each row's top probability
        self.labels: list[torch.Tensor] = []
        self.loss_sum = 0.0
        self.count = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.detach().float().cpu(), labels.cpu()
        self.loss_sum += float(task_loss(self.task, logits, labels)) * len(labels)
        self.count += len(labels)
        regression = info(self.task).targets == "score"
        self.predictions.append(logits.squeeze(-1) if regression else logits.argmax(-1))
        if not regression:
            self.confidences.append(logits.softmax(-1).amax(-1))
        self.labels.append(labels.float() if regression else labels)

    def merge(self, others: list[EvalMetrics]) -> EvalMetrics:
        for other in others:
            self.predictions += other.predictions
            self.confidences += other.confidences
            self.labels += other.labels
            self.loss_sum += other.loss_sum
            self.count += other.count
        return self

    def compute(self) -> dict[str, float]:
        collection = self._metrics()
        if self.predictions:
            collection.update(torch.cat(self.predictions), torch.cat(self.labels))
        values = {name: float(v) for name, v in collection.compute().items()}
        if self.confidences:  # expected calibration error, equal-mass bins
            from ft_cli.tasks import confidence

            guesses, truth = torch.cat(self.predictions), torch.cat(self.labels)
            right = guesses == truth
            found = confidence.binned(torch.cat(self.confidences), right)
            values["ece"] = confidence.ece_of(found)
        values["loss"] = self.loss_sum / max(1, self.count)
        return values

    def _metrics(self) -> Any:
        # Imported here, at the first evaluation: torchmetrics takes about 2 s
        # to import, which would otherwise delay the first training step.
        import torchmetrics

        # Merged explicitly (see merge), never synced by torchmetrics itself.
        options = {"sync_on_compute": False}
        if info(self.task).targets == "score":
            # Spearman keeps every prediction until compute(): fine for an eval split.
            warnings.filterwarnings("ignore", message="Metric `SpearmanCorrcoef` will save")
            metrics = {
                "pearson": torchmetrics.PearsonCorrCoef(**options),
                "spearman": torchmetrics.SpearmanCorrCoef(**options),
                "mse": torchmetrics.MeanSquaredError(**options),
            }
        elif self.num_labels == 2:
            # Binary F1 and MCC of the positive class (label id 1), as GLUE reports them.
            metrics = {
                "accuracy": torchmetrics.Accuracy(task="binary", **options),
                "f1": torchmetrics.F1Score(task="binary", **options),
                "mcc": torchmetrics.MatthewsCorrCoef(task="binary", **options),
            }
        else:
            classes = {"task": "multiclass", "num_classes": self.num_labels, **options}
            metrics = {
                "accuracy": torchmetrics.Accuracy(**classes),
                "f1": torchmetrics.F1Score(average="macro", **classes),
                "mcc": torchmetrics.MatthewsCorrCoef(**classes),
            }
        return torchmetrics.MetricCollection(metrics)


def monitored(task: TaskSettings, cfg: EarlyStoppingConfig) -> tuple[str, Mode]:
    """The metric that picks the best checkpoint (and early-stops), and its direction."""
    valid = valid_metrics(task)
    metric = cfg.metric or valid[0]
    if metric not in valid:
        raise FtError(
            f"train.early_stopping.metric: '{metric}' is not a {task.kind} metric;"
            f" valid metrics: {', '.join(valid)}"
        )
    mode = cfg.mode or default_mode(metric)
    return metric, mode


class EarlyStopping:
    """Tracks the best value of the monitored metric and evaluations since it improved."""

    def __init__(self, mode: Mode, patience: int, min_delta: float) -> None:
        self.mode, self.patience, self.min_delta = mode, patience, min_delta
        self.best: float | None = None
        self.bad_evals = 0

    def update(self, value: float) -> bool:
        """Record an evaluation; True when it is a new best."""
        if self.best is None or self._better(value, self.best):
            self.best, self.bad_evals = value, 0
            return True
        self.bad_evals += 1
        return False

    def _better(self, value: float, best: float) -> bool:
        if self.mode == Mode.max:
            return value > best + self.min_delta
        return value < best - self.min_delta

    @property
    def should_stop(self) -> bool:
        return self.bad_evals >= self.patience
