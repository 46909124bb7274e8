"""Everything a run needs, built from its spec in one place: `ft train`, `ft explain`
and `ft eval` call `build`, so their data, model, step counts and optimizer groups
can never disagree.

- `Purpose.train`: pretrained (or `model.from_run`) weights on the device, the
  strategy applied, loaders, optimizer and schedule.
- `Purpose.explain`: the same on PyTorch's meta device (shapes only, no
  weights read), for a given number of planned processes.
- `Purpose.evaluate`: a trained model as exported (no strategy: adapters are
  merged, a teacher is not needed), its task objective and data.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch

from ft_cli import augment, strategies, tasks
from ft_cli.config.schema import RunSpec, StrategyConfig, run_data
from ft_cli.data import dataset
from ft_cli.data.encoded import EncodedSplit
from ft_cli.hardware import allocator, distributed, kernels
from ft_cli.hardware.device import Hardware
from ft_cli.hardware.distributed import Dist
from ft_cli.hardware.parallel import Backend
from ft_cli.strategies import layers as strategy
from ft_cli.strategies import regularize
from ft_cli.strategies.base import Strategy
from ft_cli.tasks.objective import Objective, build_objective
from ft_cli.training import optim


class Purpose(str, Enum):
    train = "train"
    explain = "explain"
    evaluate = "evaluate"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


class StepForward(torch.nn.Module):
    """The objective's forward pass as one module, so DistributedDataParallel can wrap it.

    Some objectives call parts of the model (the masked-LM head runs on masked
    positions only), so DDP wraps this module rather than the model itself.
    """

    def __init__(self, net: torch.nn.Module, objective: Objective) -> None:
        super().__init__()
        self.net = net
        self.objective = objective  # a plain object: the teacher stays out of DDP

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.objective.outputs(batch)


@dataclass
class StepPlan:
    """How many batches and optimizer steps the run takes (per process)."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int


@dataclass
class RunSetup:
    spec: RunSpec
    tokenizer: Any
    prepared: dataset.PreparedData
    labels: list[str] | None
    net: torch.nn.Module
    new_names: set[str]  # parameters not from the checkpoint (the new head)
    hooks: Strategy
    applied: strategy.AppliedStrategy
    objective: Objective
    forward: StepForward
    collate: Any = None  # the training collator (train, explain)
    loader: Any = None
    sampler: Any = None
    val_loader: Any = None
    steps: StepPlan | None = None
    optimizer: Any = None
    scheduler: Any = None
    unfreeze_at: list[int] | None = None
    penalty: regularize.Penalty | None = None

    @property
    def num_labels(self) -> int:
        return len(self.labels) if self.labels is not None else 1


def build(
    spec: RunSpec,
    purpose: Purpose,
    backend: Backend,
    hw: Hardware,
    place: Dist = distributed.SINGLE,
    prepared: dataset.PreparedData | None = None,
) -> RunSetup:
    """Build the run's pieces in the order training needs them (seeds included).

    Args:
        spec: the run spec.
        purpose: what the pieces are for (train, explain, evaluate).
        backend: the parallel backend (shards the model before the optimizer).
        hw: device and precision.
        place: this process's rank and the number of processes (explain: planned).
        prepared: data already prepared (evaluation of a file); None: the spec's.
    """
    seed_everything(spec.train.seed)
    kind = tasks.get(spec.task.kind)
    tokenizer = kind.processor(spec.model)
    for data in run_data(spec).values():
        kind.check_inputs(spec.model, data)
    if prepared is None:
        # Rank 0 fills the token cache, the others read it (only real process groups wait).
        first = place if purpose == Purpose.train else distributed.SINGLE
        with distributed.main_first(first):
            prepared = kind.prepare(spec.data, spec.task, tokenizer, spec.train.seed)
    spec = dataclasses.replace(spec, task=kind.settle(spec.task, prepared))
    labels = prepared.labels
    seed_everything(spec.train.seed)  # the head's init does not depend on the data size
    plan = spec.strategy if purpose != Purpose.evaluate else StrategyConfig()
    hooks = strategies.for_config(plan)
    net, new_names = kind.build_model(
        spec.model,
        spec.task,
        labels,
        kind.vocab_size(tokenizer),
        plan.dropout,
        meta=purpose == Purpose.explain,
    )
    if spec.hardware.fast_paths and not spec.hardware.compile:  # inductor fuses its own
        kernels.speed_up(net)  # before wrapping: LoRA's own dropouts are plain too
    if spec.hardware.keep_freed_memory and purpose == Purpose.train and hw.device.type == "cpu":
        allocator.keep_freed_memory()
    net = hooks.wrap(net)
    if purpose != Purpose.explain:
        net = net.to(hw.device)
    applied = strategy.apply_strategy(net, plan)
    if purpose == Purpose.train:
        objective = hooks.objective(net, spec, tokenizer, labels, hw.device)
    else:  # the task's own objective: no teacher to load, nothing compiled
        objective = build_objective(net, spec.task, tokenizer, False, labels=labels)
    objective.pad_multiple = spec.train.pad_to_multiple_of
    objective.configure(spec.data)
    if purpose != Purpose.evaluate:
        objective = augment.for_training(objective, net, spec.augment, spec.train.seed, tokenizer)
    forward = StepForward(net, objective)
    ready = RunSetup(
        spec, tokenizer, prepared, labels, net, new_names, hooks, applied, objective, forward
    )
    ready.val_loader = eval_loader(ready, prepared.validation, place, backend)
    if purpose == Purpose.evaluate:
        return ready
    if purpose == Purpose.train:
        backend.shard(forward, net)  # before the optimizer: it must hold the sharded parameters
    _add_training(ready, place)
    return ready


def eval_loader(ready: RunSetup, rows: EncodedSplit | None, place: Dist, backend: Backend) -> Any:
    """Length-sorted evaluation batches of `rows`, split over the processes."""
    if rows is None:
        return None
    collate = ready.objective.collator(rows, ready.spec.train.seed)
    size, even = ready.spec.train.eval_batch_size, backend.even_eval_batches
    return ready.objective.eval_loader(rows, collate, size, place.rank, place.world, even)


def _add_training(ready: RunSetup, place: Dist) -> None:
    spec, t = ready.spec, ready.spec.train
    seed = t.seed
    plain = ready.objective.train_collator(ready.prepared.train, seed)
    ready.collate = augment.training_collator(plain, spec.augment, seed, ready.tokenizer)
    if ready.collate is not plain or getattr(plain, "augments", False):
        ready.objective.inputs_vary()
    ready.loader, ready.sampler = ready.objective.train_loader(
        ready.prepared.train,
        ready.collate,
        t.batch_size,
        seed,
        t.group_by_length,
        place.rank,
        place.world,
    )
    batches = len(ready.sampler)
    per_epoch = math.ceil(batches / t.grad_accum)
    total = t.max_steps or per_epoch * t.epochs
    ready.steps = StepPlan(batches, per_epoch, total, math.ceil(total / per_epoch))
    plan, net = spec.strategy, ready.net
    include_frozen = ready.hooks.include_frozen
    ready.optimizer = optim.build_optimizer(net, spec.optimizer, plan.lr_decay, include_frozen)
    ready.unfreeze_at = strategy.unfreeze_steps(ready.applied, per_epoch, total)
    ready.scheduler = optim.build_scheduler(
        ready.optimizer, spec.schedule, total, ready.unfreeze_at, plan.rewarm_steps
    )
    ready.penalty = regularize.Penalty(net, plan, ready.new_names)
