"""Batches of several tasks' data: every batch holds rows of one task.

Which task each batch of an epoch comes from is a pure function of
(seed, epoch), like the order of one task's rows (`batching`), so a resumed
run draws exactly the batches an uninterrupted one would. Each task's rows
form an endless stream of its own shuffled epochs; the batches a task gets
in an epoch continue its stream where the last epoch stopped, so over a run
every row is seen about equally often whatever the mixing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ft_cli.config.schema import Mixing
from ft_cli.data import batching
from ft_cli.data.encoded import EncodedSplit

Item = tuple[int, int]  # (task index, row index in that task's split)
TASK_KEY = "task"  # the batch entry that names its task (a 0-d tensor)


def task_seed(seed: int, index: int) -> int:
    """The seed of task `index`'s row order; task 0 draws as a single-task run would."""
    return seed + 1_000_003 * index


@dataclass
class TaskSplits(torch.utils.data.Dataset):
    """One split of every task (None where a task has none), in task order."""

    names: list[str]
    parts: list[EncodedSplit | None]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts if p is not None)

    def __getitem__(self, item: Item) -> Item:
        return item  # the collator gathers rows by (task, index)

    @property
    def input_ids(self) -> list[list[int]]:
        return [ids for p in self.parts if p is not None for ids in p.input_ids]

    @property
    def labels(self) -> list[Any]:
        return [label for p in self.parts if p is not None for label in p.labels]

    def sizes(self) -> dict[str, int]:
        return {n: len(p) for n, p in zip(self.names, self.parts, strict=True) if p is not None}


def shares(
    mixing: Mixing, rows: Sequence[int], temperature: float, weights: Sequence[float]
) -> list[float]:
    """Each task's probability of supplying a batch."""
    if mixing == Mixing.proportional:
        raw = [float(n) for n in rows]
    elif mixing == Mixing.temperature:
        raw = [n ** (1.0 / temperature) for n in rows]
    elif mixing == Mixing.weights:
        raw = [float(w) for w in weights]
    else:
        raw = [1.0] * len(rows)
    total = sum(raw)
    return [r / total for r in raw]


def batch_counts(probabilities: Sequence[float], total: int) -> list[int]:
    """`total` batches split by the probabilities, each count within one of its exact share."""
    exact = [p * total for p in probabilities]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


class MixedBatches:
    """Training batches of several tasks; each epoch has as many as all tasks together.

    `counts[i]` batches of each epoch come from task i. Their order is a
    shuffle drawn from (seed, epoch), or task after task in turn (round_robin).
    """

    def __init__(self, parts: list[Any], counts: list[int], seed: int, interleave: bool) -> None:
        self.parts, self.counts, self.seed = parts, counts, seed
        self.interleave = interleave
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return sum(self.counts)

    def order(self, epoch: int) -> list[int]:
        """The task of each batch of `epoch`."""
        if self.interleave:
            left = list(self.counts)
            order: list[int] = []
            for task in itertools.cycle(range(len(left))):
                if not any(left):
                    return order
                if left[task]:
                    order.append(task)
                    left[task] -= 1
        tasks = np.repeat(np.arange(len(self.counts)), self.counts)
        if len(self.counts) == 1:
            return tasks.tolist()
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(tasks).tolist()

    def task_batches(self, task: int, epoch: int) -> list[list[int]]:
        """Task `task`'s batches in `epoch`: the next `counts[task]` of its stream."""
        part, count = self.parts[task], self.counts[task]
        first, per_pass = epoch * count, len(part)
        batches: list[list[int]] = []
        for passed in range(first // per_pass, (first + count - 1) // per_pass + 1):
            part.set_epoch(passed)
            batches += part.batches()
        skip = first - (first // per_pass) * per_pass
        return batches[skip : skip + count]

    def batches(self, epoch: int) -> list[list[Item]]:
        streams = [iter(self.task_batches(t, epoch)) for t in range(len(self.parts))]
        return [[(task, row) for row in next(streams[task])] for task in self.order(epoch)]

    def __iter__(self) -> Iterator[list[Item]]:
        return iter(self.batches(self.epoch)[self.start :])


class TaskCollator:
    """Collates a batch of one task with that task's collator and records the task."""

    def __init__(self, collators: list[Any]) -> None:
        self.parts = collators

    def __call__(self, items: list[Item]) -> dict[str, torch.Tensor]:
        task = items[0][0]
        batch = self.parts[task]([row for _, row in items])
        batch[TASK_KEY] = torch.tensor(task)
        return batch


def train_loader(
    split: TaskSplits,
    collate: TaskCollator,
    batch_size: int,
    seed: int,
    group_by_length: bool,
    mixing: Mixing,
    temperature: float,
    weights: Sequence[float],
    rank: int = 0,
    world: int = 1,
) -> tuple[Any, MixedBatches]:
    """Mixed training batches of `batch_size` rows per process. With several processes
    every rank draws the same task at each step and takes its part of that task's
    global batch, as `batching.train_loader` does for one task."""
    parts: list[Any] = []
    for index, rows in enumerate(split.parts):
        assert rows is not None  # every task has a train split
        lengths = rows.lengths() if group_by_length else None
        part = batching.ShuffledBatches(
            len(rows), batch_size * world, task_seed(seed, index), lengths
        )
        parts.append(batching.RankShard(part, rank, world) if world > 1 else part)
    sizes = [len(rows) for rows in split.parts if rows is not None]
    probabilities = shares(mixing, sizes, temperature, weights)
    counts = batch_counts(probabilities, sum(len(p) for p in parts))
    if mixing == Mixing.proportional:
        counts = [len(p) for p in parts]  # exactly one pass over each task per epoch
    sampler = MixedBatches(parts, counts, seed, interleave=mixing == Mixing.round_robin)
    loader = torch.utils.data.DataLoader(
        split, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator()
    )
    return loader, sampler


def eval_loader(
    split: TaskSplits, collate: TaskCollator, batch_size: int, rank: int = 0, world: int = 1
) -> Any:
    """Length-sorted batches of each task in turn; each process takes every `world`-th."""
    every = [
        [(task, row) for row in batch]
        for task, rows in enumerate(split.parts)
        if rows is not None
        for batch in batching.length_sorted_batches(rows, batch_size)
    ]
    loader = torch.utils.data.DataLoader(
        split, batch_sampler=every[rank::world], collate_fn=collate, generator=torch.Generator()
    )
    loader.real_batches = len(every[rank::world])
    return loader
