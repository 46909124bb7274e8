"""Multi-task fine-tuning: several tasks, each with its own data and head, one encoder.

Each task is prepared, headed, optimised and scored by its own task module;
this one only combines them: the data of all tasks (`data.mixing` draws each
batch from one of them), one model whose task models share the encoder
(`models.multitask`), a loss routed to the batch's task and scaled by its
weight, and metrics per task (`NAME/METRIC`) plus their mean, `score`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ft_cli import tasks
from ft_cli.config.schema import DataConfig, ModelConfig, TaskConfig
from ft_cli.data import mixing
from ft_cli.data.dataset import SPLITS, PreparedData
from ft_cli.errors import FtError
from ft_cli.models.multitask import ENCODER, MultiTaskNet
from ft_cli.tasks.base import Task
from ft_cli.tasks.objective import Batch, Objective


def _part(task: str, err: FtError) -> FtError:
    return FtError(f"task.tasks.{task}: {err}")


class MultiTask(Task):
    name = "multitask"
    exportable = False
    not_exported = "a multi-task run: pick one of its tasks with --task NAME"
    pipeline_tag = None
    uses_labels = False
    named_labels = False

    def prepare(self, cfg: DataConfig, task: TaskConfig, tokenizer: Any, seed: int) -> Any:
        parts: dict[str, PreparedData] = {}
        for name, sub in task.tasks.items():
            try:
                parts[name] = tasks.get(sub.kind).prepare(sub.data, sub, tokenizer, seed)
            except FtError as err:
                raise _part(name, err) from err
        names = list(parts)
        splits = {s: [getattr(p, s) for p in parts.values()] for s in SPLITS}
        some = {
            s: mixing.TaskSplits(names, found) if any(p is not None for p in found) else None
            for s, found in splits.items()
        }
        return PreparedData(
            train=some["train"],
            validation=some["validation"],
            test=some["test"],
            labels={name: p.labels for name, p in parts.items()},
            source={f"{name}/{s}": v for name, p in parts.items() for s, v in p.source.items()},
        )

    def settle(self, task: TaskConfig, prepared: Any, key: str = "task.") -> TaskConfig:
        settled = {}
        for index, (name, sub) in enumerate(task.tasks.items()):
            own = PreparedData(prepared.train.parts[index], None, None, prepared.labels[name], {})
            settled[name] = tasks.get(sub.kind).settle(sub, own, f"task.tasks.{name}.")
        return dataclasses.replace(task, tasks=settled)

    def build_model(
        self,
        cfg: ModelConfig,
        task: TaskConfig,
        labels: Any,
        vocab: int,
        dropout: float | None,
        meta: bool,
    ) -> tuple[nn.Module, set[str]]:
        models, new = {}, set()
        for name, sub in task.tasks.items():
            kind = tasks.get(sub.kind)
            net, fresh = kind.build_model(cfg, sub, labels[name], vocab, dropout, meta)
            models[name] = net
            new |= {f"tasks.{name}.{param}" for param in fresh}
        return MultiTaskNet(models), new

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        tokenizer: Any,
        labels: Any,
        compile_model: bool,
        label_smoothing: float,
    ) -> Any:
        return MultiTaskObjective(net, task, tokenizer, labels, compile_model, label_smoothing)

    def save(
        self,
        net: nn.Module,
        tokenizer: Any,
        folder: Path,
        weights: Any,
        task: TaskConfig,
        labels: Any,
    ) -> None:
        assert isinstance(net, MultiTaskNet)
        manifest = {
            "tasks": {
                name: {"kind": sub.kind, "labels": labels[name], "weight": sub.weight}
                for name, sub in task.tasks.items()
            },
            "encoder": ENCODER,
        }
        net.save_pretrained(folder, tokenizer, manifest)

    def record(self, task: TaskConfig, labels: Any) -> dict[str, Any]:
        own = {
            name: tasks.get(sub.kind).record(sub, labels[name]) for name, sub in task.tasks.items()
        }
        weights = {name: part["class_weights"] for name, part in own.items() if part}
        return {"class_weights": weights} if weights else {}

    def check_predictable(self) -> None:
        raise FtError("a multi-task model predicts per task: pass --task NAME")


class MultiTaskObjective(Objective):
    """Each batch goes to its task's objective; the loss is scaled by the task's weight."""

    uses_part_of_model = True  # a batch leaves the other tasks' heads without gradients

    def __init__(
        self,
        net: nn.Module,
        task: TaskConfig,
        tokenizer: Any,
        labels: Any,
        compile_model: bool,
        label_smoothing: float,
    ) -> None:
        self.task, self.num_labels, self.pad_id = "multitask", 0, tokenizer.pad_token_id or 0
        self.settings = task
        self.names = list(task.tasks)
        models = net.tasks  # through a LoRA wrapper too
        self.parts = [
            tasks.get(sub.kind).objective(
                models[name], sub, tokenizer, labels[name], compile_model, label_smoothing
            )
            for name, sub in task.tasks.items()
        ]
        self.weights = [sub.weight for sub in task.tasks.values()]
        self.main = [tasks.info(sub.kind).metrics[0] for sub in task.tasks.values()]
        self.scored = [tasks.info(sub.kind).targets != "tokens" for sub in task.tasks.values()]

    @property
    def pad_multiple(self) -> int:  # type: ignore[override]
        return self.parts[0].pad_multiple

    @pad_multiple.setter
    def pad_multiple(self, value: int) -> None:
        for part in self.parts:
            part.pad_multiple = value

    def collator(self, split: Any, seed: int) -> mixing.TaskCollator:
        return mixing.TaskCollator(
            [
                part.collator(rows, mixing.task_seed(seed, index)) if rows is not None else None
                for index, (part, rows) in enumerate(zip(self.parts, split.parts, strict=True))
            ]
        )

    def set_epoch(self, collate: Any, epoch: int) -> None:
        for part, own in zip(self.parts, collate.parts, strict=True):
            if own is not None:
                part.set_epoch(own, epoch)

    def train_loader(
        self,
        split: Any,
        collate: Any,
        batch_size: int,
        seed: int,
        group_by_length: bool,
        rank: int,
        world: int,
    ) -> tuple[Any, Any]:
        t = self.settings
        return mixing.train_loader(
            split,
            collate,
            batch_size,
            seed,
            group_by_length,
            t.mixing,
            t.temperature,
            [s.share for s in t.tasks.values()],
            rank,
            world,
        )

    def eval_loader(
        self, split: Any, collate: Any, batch_size: int, rank: int, world: int, even: bool
    ) -> Any:
        return mixing.eval_loader(split, collate, batch_size, rank, world)

    def outputs(self, batch: Batch) -> tuple[Any, Any]:
        """(the task's predictions, (task index, the task's targets))."""
        index = int(batch.pop(mixing.TASK_KEY))
        predictions, targets = self.parts[index].outputs(batch)
        return predictions, (index, targets)

    def loss(self, predictions: Any, targets: Any) -> torch.Tensor:
        index, own = targets
        return self.weights[index] * self.parts[index].loss(predictions, own)

    def new_metrics(self, split: Any = None) -> MultiTaskMetrics:
        return MultiTaskMetrics(
            self.names, [p.new_metrics() for p in self.parts], self.main, self.scored
        )


class MultiTaskMetrics:
    """Each task's metrics as NAME/METRIC, and `score`: the mean of the scored tasks' first."""

    def __init__(
        self, names: list[str], parts: list[Any], main: list[str], scored: list[bool]
    ) -> None:
        self.names, self.parts, self.main, self.scored = names, parts, main, scored
        self.seen = [False] * len(parts)

    def update(self, predictions: Any, targets: Any) -> None:
        index, own = targets
        self.parts[index].update(predictions, own)
        self.seen[index] = True

    def merge(self, others: list[MultiTaskMetrics]) -> MultiTaskMetrics:
        for index, part in enumerate(self.parts):
            part.merge([other.parts[index] for other in others])
            self.seen[index] = self.seen[index] or any(o.seen[index] for o in others)
        return self

    def compute(self) -> dict[str, float]:
        values: dict[str, float] = {}
        scores = []
        for name, part, seen, main, scored in zip(
            self.names, self.parts, self.seen, self.main, self.scored, strict=True
        ):
            if not seen:
                continue
            own = part.compute()
            values |= {f"{name}/{metric}": value for metric, value in own.items()}
            if scored:
                scores.append(own[main])
        values["score"] = sum(scores) / len(scores) if scores else float("nan")
        return values


TASK = MultiTask()
