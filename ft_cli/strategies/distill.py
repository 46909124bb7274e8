"""Knowledge distillation: a frozen teacher's soft targets added to the task loss.

Classification: `(1 - a) * CE(student, labels) + a * T^2 * KL(teacher_T || student_T)`,
both softmaxes at temperature T (the T^2 keeps the gradient scale of the soft
term independent of T). Regression: `(1 - a) * MSE(student, labels) + a *
MSE(student, teacher)`. The teacher runs in eval mode without gradients; its
logits can be kept per training example, as they never change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ft_cli.config.schema import ModelConfig, RunSpec, StrategyConfig, TaskKind
from ft_cli.data.batching import Collate, Collator
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.models import model
from ft_cli.strategies.base import Strategy
from ft_cli.tasks import metrics
from ft_cli.tasks.objective import Batch, Objective


def load_teacher(cfg: StrategyConfig, task: TaskKind, labels: list[str] | None) -> nn.Module:
    teacher_cfg = cfg.teacher
    if not teacher_cfg.name_or_path and not teacher_cfg.from_run:
        raise FtError(
            "strategy=distill needs a teacher: set strategy.teacher.from_run=RUN_DIR or"
            " strategy.teacher.name_or_path=MODEL"
        )
    if task in (TaskKind.mlm, TaskKind.token_classification):
        raise FtError("strategy=distill supports task=classification and task=regression")
    source = ModelConfig(name_or_path=teacher_cfg.name_or_path or "", from_run=teacher_cfg.from_run)
    try:
        folder = Path(model.resolved_name(source))
        shipped = model.shipped_code(folder) if folder.is_dir() else []
        config = None if shipped else model.load_config(source)
    except FtError as err:  # name the teacher's keys, not the student's
        raise FtError(str(err).replace("model.", "strategy.teacher.", 1)) from err
    if config is None:  # a teacher is only read, never trusted with code of its own
        raise FtError(
            f"strategy.teacher: '{folder}' ships its own model code ({', '.join(shipped)}); a"
            " distillation teacher never runs shipped code: distill from a model without it"
        )
    expected = 1 if task == TaskKind.regression else len(labels or [])
    if config.num_labels != expected:
        raise FtError(
            f"strategy.teacher: the teacher has {config.num_labels} outputs, the task has"
            f" {expected}; distill from a model trained on the same labels"
        )
    names = [config.id2label[i] for i in range(config.num_labels)]
    if labels is not None and set(names) == set(labels) and names != labels:
        raise FtError(
            f"strategy.teacher: its labels are ordered {names}, the task's {labels};"
            " set task.labels to the teacher's order"
        )
    teacher = model.load_classifier(source)
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


class RowCollator(Collator):
    """Batches that also carry each row's index, the key of the teacher cache."""

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = super().__call__(indices)
        batch["row_index"] = torch.tensor(indices)
        return batch


class DistillObjective(Objective):
    def __init__(
        self,
        net: nn.Module,
        teacher: nn.Module,
        task: TaskKind,
        num_labels: int,
        pad_id: int,
        cfg: StrategyConfig,
        compile_model: bool,
    ) -> None:
        super().__init__(net, task, num_labels, pad_id, compile_model, cfg.label_smoothing)
        self.net, self.teacher = net, teacher
        self.alpha, self.temperature = cfg.distill_alpha, cfg.temperature
        self.cache: dict[int, torch.Tensor] | None = {} if cfg.cache_teacher else None
        self.teacher_logits: torch.Tensor | None = None

    def collator(self, split: EncodedSplit, seed: int) -> Collate:
        return RowCollator(split, self.pad_id, self.task == TaskKind.regression, self.pad_multiple)

    def outputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        rows = batch.pop("row_index").tolist()
        labels = batch.pop("labels")
        logits = self.forward(**batch).logits
        self.teacher_logits = self._teacher(rows, batch) if self.net.training else None
        return logits, labels

    def _teacher(self, rows: list[int], batch: Batch) -> torch.Tensor:
        if self.cache is not None and all(r in self.cache for r in rows):
            return torch.stack([self.cache[r] for r in rows]).to(batch["input_ids"].device)
        with torch.no_grad():
            logits = self.teacher(**batch).logits.float()
        if self.cache is not None:
            for row, value in zip(rows, logits.cpu(), strict=True):
                self.cache[row] = value
        return logits

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        task_loss = metrics.task_loss(self.task, logits, targets, self.label_smoothing)
        if self.teacher_logits is None:
            return task_loss
        return (1 - self.alpha) * task_loss + self.alpha * self.soft_loss(logits)

    def soft_loss(self, logits: torch.Tensor) -> torch.Tensor:
        assert self.teacher_logits is not None
        student, teacher = logits.float(), self.teacher_logits
        if self.task == TaskKind.regression:
            return F.mse_loss(student, teacher)
        t = self.temperature
        return (
            F.kl_div(
                F.log_softmax(student / t, dim=-1),
                F.log_softmax(teacher / t, dim=-1),
                log_target=True,
                reduction="batchmean",
            )
            * t
            * t
        )


def build(
    net: nn.Module,
    cfg: StrategyConfig,
    task: TaskKind,
    labels: list[str] | None,
    pad_id: int,
    device: torch.device,
    compile_model: bool,
) -> DistillObjective:
    teacher = load_teacher(cfg, task, labels).to(device)
    num_labels = len(labels) if labels else 1
    return DistillObjective(net, teacher, task, num_labels, pad_id, cfg, compile_model)


class Distill(Strategy):
    """strategy=distill: the task loss plus a frozen teacher's soft targets."""

    def objective(self, net: nn.Module, spec: RunSpec, tokenizer: Any,
                  labels: list[str] | None, device: Any) -> Objective:  # fmt: skip
        pad_id = tokenizer.pad_token_id or 0
        return build(net, self.cfg, spec.task.kind, labels, pad_id, device, spec.hardware.compile)


STRATEGY = Distill
