"""Knowledge distillation: a frozen teacher's soft targets added to the task loss.

Several teachers (a list of runs, a sweep dir, a saved ensemble) act as one:
their logits are averaged, so one student learns what the ensemble predicts.

`(1 - a) * task loss + a * soft term`, the soft term the task's (`Task.soft_loss`):
classification `T^2 * KL(teacher_T || student_T)`, both softmaxes at temperature
T (the T^2 keeps the gradient scale of the soft term independent of T);
regression `MSE(student, teacher)`; question answering the KL of the start and
of the end distributions over a window's positions. The teacher runs in eval
mode without gradients; its logits can be kept per training example, as they
never change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ft_cli.config.schema import ModelConfig, RunSpec, StrategyConfig
from ft_cli.data.batching import Collate
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.models import model, outputs
from ft_cli.strategies.base import Strategy
from ft_cli.tasks.objective import Batch, Objective


def teacher_sources(cfg: StrategyConfig) -> list[ModelConfig]:
    """Each teacher's model: one hub id or folder, one run, or every run of a sweep dir,
    an ensemble folder or the from_runs list."""
    teacher = cfg.teacher
    if not teacher.name_or_path and not teacher.from_run and not teacher.from_runs:
        raise FtError(
            "strategy=distill needs a teacher: set strategy.teacher.from_run=RUN_DIR (or a sweep"
            " dir), strategy.teacher.from_runs=[RUN,...] or strategy.teacher.name_or_path=MODEL"
        )
    if teacher.name_or_path:
        return [ModelConfig(name_or_path=teacher.name_or_path)]
    runs = list(teacher.from_runs) + ([teacher.from_run] if teacher.from_run else [])
    if len(runs) == 1 and _holds_runs(Path(runs[0])):
        from ft_cli.ensembles import members

        runs = [str(path) for path in members.run_dirs(runs)]
    return [ModelConfig(name_or_path="", from_run=run) for run in runs]


def _holds_runs(path: Path) -> bool:
    """A sweep dir or an ensemble folder rather than one run."""
    from ft_cli.ensembles import manifest

    if not path.is_dir() or (path / "config.json").is_file() or (path / "model").is_dir():
        return False
    return (path / manifest.FILE).is_file() or any(path.glob("*/metrics.json"))


class Teachers(nn.Module):
    """Several frozen teachers as one: their logits averaged (computed in fp32)."""

    def __init__(self, teachers: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(teachers)

    def forward(self, **batch: torch.Tensor) -> Any:
        from types import SimpleNamespace

        logits = torch.stack([outputs.logits_of(t(**batch)).float() for t in self.members])
        return SimpleNamespace(logits=logits.mean(0))


def load_teachers(
    cfg: StrategyConfig, task: str, labels: list[str] | None, student_inputs: Any = None
) -> nn.Module:
    """The frozen teacher, or several as one module whose logits are their mean."""
    from ft_cli import tasks

    if not tasks.info(task).distilled:
        names = tasks.named(lambda info: info.distilled)
        raise FtError(f"strategy=distill supports task={', '.join(names[:-1])} and {names[-1]}")
    teachers = [load_teacher(s, task, labels, student_inputs) for s in teacher_sources(cfg)]
    return teachers[0] if len(teachers) == 1 else Teachers(teachers)


def _check_inputs(source: ModelConfig, task: str, student: Any) -> None:
    """Teachers read the student's inputs: its token ids, or its pixels."""
    from ft_cli import tasks

    kind = tasks.get(task)
    if not kind.same_inputs(kind.processor(source), student):
        what = kind.inputs.noun
        raise FtError(
            f"strategy.teacher: {model.resolved_name(source)} prepares its {what} otherwise than"
            " the student (vocabulary, or image size and normalisation); distill from teachers"
            " that read the student's inputs"
        )


def load_teacher(
    source: ModelConfig, task: str, labels: list[str] | None, student_inputs: Any = None
) -> nn.Module:
    from ft_cli import tasks

    try:
        folder = Path(model.resolved_name(source))
        shipped = model.shipped_code(folder) if folder.is_dir() else []
        config = None if shipped else model.load_config(source)
        if config is not None and student_inputs is not None:
            _check_inputs(source, task, student_inputs)
    except FtError as err:  # name the teacher's keys, not the student's
        raise FtError(str(err).replace("model.", "strategy.teacher.", 1)) from err
    if config is None:  # a teacher is only read, never trusted with code of its own
        raise FtError(
            f"strategy.teacher: '{folder}' ships its own model code ({', '.join(shipped)}); a"
            " distillation teacher never runs shipped code: distill from a model without it"
        )
    expected = tasks.get(task).teacher_width(labels)
    if config.num_labels != expected:
        raise FtError(
            f"strategy.teacher: the teacher {folder} has {config.num_labels} outputs, the task has"
            f" {expected}; distill from a model trained on the same labels"
        )
    names = [config.id2label[i] for i in range(config.num_labels)]
    if labels is not None and set(names) == set(labels) and names != labels:
        raise FtError(
            f"strategy.teacher: {folder}'s labels are ordered {names}, the task's {labels};"
            " set task.labels to the teacher's order"
        )
    teacher = model.load_classifier(source, tasks.get(task).head(labels)[1])
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


class RowIndexed:
    """A collator whose batches also carry each row's index, the key of the teacher cache."""

    def __init__(self, inner: Collate) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)  # set_epoch, augments, split of the inner one
        if name == "augmented_with":  # a collator that augments its own inputs: still indexed
            return self._augmented_with
        return found

    def _augmented_with(self, cfg: Any) -> RowIndexed:
        changed = self.inner.augmented_with(cfg)
        return self if changed is self.inner else RowIndexed(changed)

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.inner(indices)
        batch["row_index"] = torch.tensor(indices)
        return batch


class DistillObjective:
    """The task's own objective (collators, loaders, metrics), with the teacher's soft
    targets added to its loss on training batches."""

    def __init__(self, inner: Objective, teacher: nn.Module, cfg: StrategyConfig) -> None:
        from ft_cli import tasks

        self.inner, self.teacher = inner, teacher
        self.kind = tasks.get(inner.task)  # its soft term
        self.alpha, self.temperature = cfg.distill_alpha, cfg.temperature
        self.cache: dict[int, torch.Tensor] | None = {} if cfg.cache_teacher else None
        self.teacher_logits: torch.Tensor | None = None
        self.padding: torch.Tensor | None = None  # the training batch's pad tokens

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "pad_multiple":  # a batching setting of the task's collators
            setattr(self.inner, name, value)
        else:
            super().__setattr__(name, value)

    def collator(self, split: EncodedSplit, seed: int) -> Collate:
        return RowIndexed(self.inner.collator(split, seed))

    def train_collator(self, split: Any, seed: int) -> Collate:
        return RowIndexed(self.inner.train_collator(split, seed))

    def inputs_vary(self) -> None:
        self.cache = None  # each epoch's inputs differ: the teacher must see them anew

    def outputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        rows = batch.pop("row_index").tolist()
        logits, labels = self.inner.outputs(batch)  # takes the labels out of the batch
        training = self.inner.forward.training
        self.teacher_logits = self._teacher(rows, batch) if training else None
        mask = batch.get("attention_mask")
        self.padding = ~mask.bool() if training and mask is not None and mask.dim() == 2 else None
        return logits, labels

    def _teacher(self, rows: list[int], batch: Batch) -> torch.Tensor:
        device = next(iter(batch.values())).device
        # Outputs per token (a span head's) are kept at a row's own length, and padded
        # to the length of the batch it comes back in (the task's loss masks padding).
        if self.cache is not None and all(r in self.cache for r in rows):
            kept = [self.cache[r] for r in rows]
            if kept[0].dim() > 1:
                width = batch["attention_mask"].shape[-1]
                kept = [F.pad(k, (0, 0, 0, width - len(k))) for k in kept]
            return torch.stack(kept).to(device)
        with torch.no_grad():
            logits = outputs.logits_of(self.teacher(**batch)).float()
        if self.cache is not None:
            per_token = logits.dim() > 2
            lengths = batch["attention_mask"].sum(-1).tolist() if per_token else None
            for j, (row, value) in enumerate(zip(rows, logits.cpu(), strict=True)):
                self.cache[row] = value[: lengths[j]].clone() if lengths else value
        return logits

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        task_loss = self.inner.loss(logits, targets)
        if self.teacher_logits is None:
            return task_loss
        return (1 - self.alpha) * task_loss + self.alpha * self.soft_loss(logits)

    def soft_loss(self, logits: torch.Tensor) -> torch.Tensor:
        assert self.teacher_logits is not None
        student, teacher = logits.float(), self.teacher_logits
        padding = self.padding
        if padding is not None and teacher.dim() > 2 and teacher.shape[:2] == padding.shape:
            # Outputs per token: a pad position teaches nothing (the teacher is set to
            # agree with the student there), as the task's own loss ignores it.
            teacher = torch.where(padding[..., None], student.detach(), teacher)
        return self.kind.soft_loss(student, teacher, self.temperature)


class Distill(Strategy):
    """strategy=distill: the task loss plus a frozen teacher's soft targets."""

    def objective(
        self, net: nn.Module, spec: RunSpec, tokenizer: Any, labels: list[str] | None, device: Any
    ) -> Any:
        inner = super().objective(net, spec, tokenizer, labels, device)
        teacher = load_teachers(self.cfg, spec.task.kind, labels, tokenizer).to(device)
        return DistillObjective(inner, teacher, self.cfg)


STRATEGY = Distill
