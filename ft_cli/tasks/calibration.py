"""Calibrated probabilities for tasks of one class per row: temperature scaling fit on the
validation split, expected calibration error with adaptive bins, and a decision
threshold tuned for binary tasks.

The temperature is folded into the model's last linear layer (its weights and bias
divided by T: the logits are then the calibrated ones), so `ft eval`, `ft predict`,
`ft serve` and the ONNX export all return calibrated probabilities with nothing more
to carry; the prediction of each row (the largest logit) does not change. The fit
and the threshold are recorded in `model/calibration.json` and the run's
metrics.json; the threshold also in the model's config (`ft_threshold`), where
prediction reads it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ft_cli.errors import FtError
from ft_cli.tasks.confidence import adaptive_ece

TEMPERATURE_RANGE = (0.05, 20.0)
THRESHOLD_METRICS = ("f1", "mcc", "accuracy")
RECORD = "calibration.json"


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    logits, labels = logits.detach().float(), labels.detach()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    # Rows the model already separates pull T towards 0 without end: a bound keeps the
    # probabilities of new rows from collapsing to 0 and 1.
    return float(log_t.detach().exp().clamp(*TEMPERATURE_RANGE))


def output_layer(net: nn.Module, num_labels: int) -> nn.Linear:
    """The model's last linear layer with a logit per class: what produces the logits."""
    found = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not found:
        raise FtError(
            f"task.calibration: no linear layer of {num_labels} outputs ends this model; its"
            " logits cannot be scaled"
        )
    return found[-1]


def fold_temperature(net: nn.Module, temperature: float, num_labels: int) -> None:
    """Divide the output layer's weights and bias by `temperature` (logits / T)."""
    layer = output_layer(net, num_labels)
    with torch.no_grad():
        layer.weight.div_(temperature)
        if layer.bias is not None:
            layer.bias.div_(temperature)


def parse_threshold(value: str | None, key: str = "task.threshold") -> tuple[float | None, str]:
    """(a fixed threshold, or None; the metric `auto` tunes for, or "")."""
    if value is None:
        return None, ""
    text = str(value).strip().lower()
    if text.startswith("auto"):
        metric = text.partition(":")[2] or "f1"
        if metric not in THRESHOLD_METRICS:
            raise FtError(
                f"{key}={value}: auto tunes for one of {', '.join(THRESHOLD_METRICS)}"
                " (task.threshold=auto:mcc); plain auto means F1"
            )
        return None, metric
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not 0.0 < number < 1.0:
        raise FtError(
            f"{key}={value}: give a probability between 0 and 1 (0.3), or auto (F1 on"
            " validation), or auto:mcc / auto:accuracy"
        )
    return number, ""


def tune_threshold(probs: torch.Tensor, labels: torch.Tensor, metric: str) -> tuple[float, float]:
    """(the positive-class probability threshold that maximises `metric` on these rows,
    the metric there): every distinct probability is tried, the lowest best one kept."""
    from torchmetrics.functional.classification import (
        binary_accuracy,
        binary_f1_score,
        binary_matthews_corrcoef,
    )

    score = {"f1": binary_f1_score, "mcc": binary_matthews_corrcoef, "accuracy": binary_accuracy}
    positive = probs[:, 1].float()
    best, at = -math.inf, 0.5
    for threshold in torch.unique(positive).tolist():
        decided = (positive >= threshold).long()  # as prediction decides: at or above
        value = float(score[metric](decided, labels))
        if value > best:
            best, at = value, threshold
    return at, best


def wanted(spec: Any) -> bool:
    """Whether the run asks for calibration or a threshold."""
    return spec.task.calibration.value != "none" or spec.task.threshold is not None


def summary(record: dict[str, Any]) -> str:
    """One line about a calibration's fit."""
    line = (
        f"calibration on {record['rows']} validation rows: temperature"
        f" {record['temperature']:.3f}, ECE {record['ece_before']:.4f} ->"
        f" {record['ece_after']:.4f},"
        f" NLL {record['nll_before']:.4f} -> {record['nll_after']:.4f}"
    )
    if "threshold" in record:
        line += f", decision threshold {record['threshold']:.3f}"
    return line


def check(spec: Any) -> None:
    """Refuse calibration or a threshold the task cannot use (before training)."""
    from ft_cli import tasks

    task = spec.task
    if wanted(spec) and tasks.info(task.kind).targets != "classes":
        raise FtError(
            f"task.calibration / task.threshold: task={task.kind} has no class per row;"
            " calibration is for classification (text, images, audio)"
        )
    parse_threshold(task.threshold)


def calibrate_run(
    folder: str, overrides: list[str] | None = None, spec: Any = None
) -> dict[str, Any]:
    """Fit a run's calibration on its validation split and fold it into its model: the
    temperature (task.calibration=temperature), then the threshold (task.threshold).
    `spec`: the run's own (the training that just ended), else its record's."""
    from ft_cli.training import evaluating

    ready = evaluating.setup(folder, overrides or [], spec=spec)
    spec, labels = ready.spec, ready.labels or []
    check(spec)
    logits, truth = _validation_logits(ready)
    record: dict[str, Any] = {"rows": len(truth)}
    before = logits.softmax(-1)
    record["ece_before"] = adaptive_ece(before, truth)
    record["nll_before"] = float(F.cross_entropy(logits, truth))
    record["accuracy"] = float((before.argmax(-1) == truth).float().mean())
    net = ready.forward.net
    if ready.found.export is None or ready.found.checkpoint is not None:
        raise FtError(
            f"{folder}: calibration rewrites a finished run's model/ folder; this names a"
            " checkpoint"
        )
    model_dir = Path(ready.found.export)
    previous = _read(model_dir)
    temperature = 1.0
    if spec.task.calibration.value == "temperature":
        temperature = fit_temperature(logits, truth)
        fold_temperature(net, temperature, len(labels))
        logits = logits / temperature
    after = logits.softmax(-1)
    record["temperature"] = temperature * previous.get("temperature", 1.0)
    record["ece_after"] = adaptive_ece(after, truth)
    record["nll_after"] = float(F.cross_entropy(logits, truth))
    fixed, metric = parse_threshold(spec.task.threshold)
    if metric:
        if len(labels) != 2:
            raise FtError(f"task.threshold=auto: the task has {len(labels)} classes, not two")
        fixed, value = tune_threshold(after, truth, metric)
        record[f"threshold_{metric}"] = value
    if fixed is not None:
        record["threshold"] = fixed
        net.config.ft_threshold = fixed
    _save(net, model_dir, record)
    return record


def _validation_logits(ready: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from ft_cli.training import evaluating

    found, truth = [], []
    for _, logits, labels in evaluating.batches(ready, 64):
        found.append(logits.float().cpu())
        truth.append(labels.cpu())
    if not found:
        raise FtError("task.calibration: the run has no validation rows to fit on")
    return torch.cat(found), torch.cat(truth)


def _read(model_dir: Path) -> dict[str, Any]:
    path = model_dir / RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(net: nn.Module, model_dir: Path, record: dict[str, Any]) -> None:
    """The model's weights and config with the calibration, then its record (written
    beside and renamed into place: a crash leaves the previous files whole)."""
    import os
    import tempfile

    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=".calibrating-"))
    net.save_pretrained(staging)
    for path in staging.iterdir():
        os.replace(path, model_dir / path.name)
    staging.rmdir()
    (model_dir / RECORD).write_text(json.dumps(record, indent=1) + "\n")
