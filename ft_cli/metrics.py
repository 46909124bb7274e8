"""Per-task loss and evaluation metrics (computed with torchmetrics)."""

from __future__ import annotations

import warnings

import torch
from torch.nn import functional as F

from ft_cli.errors import FtError
from ft_cli.schema import LOWER_IS_BETTER, TASK_METRICS, EarlyStoppingConfig, Mode, TaskKind


def task_loss(
    task: TaskKind, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    # Computed in fp32: the logits may come out of autocast in bf16/fp16.
    if task == TaskKind.regression:
        return F.mse_loss(logits.float().squeeze(-1), labels.float())
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


class EvalMetrics:
    """Accumulates predictions over an evaluation pass and computes the task's metrics."""

    def __init__(self, task: TaskKind, num_labels: int) -> None:
        # Imported here, at the first evaluation: torchmetrics takes about 2 s
        # to import, which would otherwise delay the first training step.
        import torchmetrics

        self.task = task
        if task == TaskKind.regression:
            # Spearman keeps every prediction until compute(): fine for an eval split.
            warnings.filterwarnings("ignore", message="Metric `SpearmanCorrcoef` will save")
            metrics = {
                "pearson": torchmetrics.PearsonCorrCoef(),
                "spearman": torchmetrics.SpearmanCorrCoef(),
                "mse": torchmetrics.MeanSquaredError(),
            }
        elif num_labels == 2:
            # Binary F1 and MCC of the positive class (label id 1), as GLUE reports them.
            metrics = {
                "accuracy": torchmetrics.Accuracy(task="binary"),
                "f1": torchmetrics.F1Score(task="binary"),
                "mcc": torchmetrics.MatthewsCorrCoef(task="binary"),
            }
        else:
            metrics = {
                "accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=num_labels),
                "f1": torchmetrics.F1Score(
                    task="multiclass", num_classes=num_labels, average="macro"
                ),
                "mcc": torchmetrics.MatthewsCorrCoef(task="multiclass", num_classes=num_labels),
            }
        self.metrics = torchmetrics.MetricCollection(metrics)
        self.loss_sum = 0.0
        self.count = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.detach().float().cpu(), labels.cpu()
        self.loss_sum += float(task_loss(self.task, logits, labels)) * len(labels)
        self.count += len(labels)
        if self.task == TaskKind.regression:
            self.metrics.update(logits.squeeze(-1), labels.float())
        else:
            self.metrics.update(logits.argmax(-1), labels)

    def compute(self) -> dict[str, float]:
        values = {name: float(v) for name, v in self.metrics.compute().items()}
        values["loss"] = self.loss_sum / max(1, self.count)
        return values


def monitored(task: TaskKind, cfg: EarlyStoppingConfig) -> tuple[str, Mode]:
    """The metric that picks the best checkpoint (and early-stops), and its direction."""
    valid = TASK_METRICS[task]
    metric = cfg.metric or valid[0]
    if metric not in valid:
        raise FtError(
            f"train.early_stopping.metric: '{metric}' is not a {task.value} metric;"
            f" valid metrics: {', '.join(valid)}"
        )
    mode = cfg.mode or (Mode.min if metric in LOWER_IS_BETTER else Mode.max)
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
