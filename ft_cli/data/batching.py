"""Batches for training and evaluation: index order, then dynamic padding.

Training order is a pure function of (seed, epoch), so any epoch can be
rebuilt without replaying the ones before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from ft_cli.data.encoded import EncodedSplit


def padded_width(longest: int, multiple: int, cap: int) -> int:
    """A batch's length: `longest` rounded up to a multiple of `multiple`, but not past
    `cap` (the split's longest row, so never past data.max_length); never shorter."""
    return max(longest, min(-(-longest // multiple) * multiple, cap))


class Collator:
    """Pads a list of row indices of one split into a batch of tensors.

    `multiple` > 1 pads each batch to a multiple of that many tokens: fewer
    distinct shapes, so fewer kernels compiled and cached per shape (oneDNN's
    primitive cache grows with every new one) and less allocator fragmentation.
    """

    def __init__(
        self,
        split: EncodedSplit,
        pad_id: int,
        regression: bool,
        multiple: int = 1,
        windows: bool = False,
    ) -> None:
        self.split = split
        self.pad_id = pad_id
        self.label_dtype = torch.float32 if regression else torch.long
        self.multiple = multiple
        self.windows = windows  # add each row's index ("window"): scored by its input row
        self.cap = max(split.lengths(), default=0) if multiple > 1 else 0

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = [self.split.input_ids[i] for i in indices]
        width = padded_width(max(len(r) for r in rows), self.multiple, self.cap)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for j, row in enumerate(rows):
            input_ids[j, : len(row)] = torch.tensor(row)
            attention[j, : len(row)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if self.split.token_type_ids is not None:
            types = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(indices):
                row_types = self.split.token_type_ids[i]
                types[j, : len(row_types)] = torch.tensor(row_types)
            batch["token_type_ids"] = types
        batch["labels"] = torch.tensor(
            [self.split.labels[i] for i in indices], dtype=self.label_dtype
        )
        if self.windows:
            batch["window"] = torch.tensor(indices)
        return batch


class ShuffledBatches:
    """Training batches of indices, reshuffled each epoch from (seed, epoch).

    Deriving the order from the epoch number alone makes any epoch's order
    reproducible without replaying earlier ones. With `lengths`, batches are
    grouped by length: the shuffled order is cut into pools of
    `POOL_BATCHES` batches, each pool is sorted by length and cut into
    batches, and the batches are shuffled again. Every example still comes
    once per epoch, but a batch holds rows of similar length, so dynamic
    padding adds few pad tokens.
    """

    POOL_BATCHES = 64

    def __init__(
        self, size: int, batch_size: int, seed: int, lengths: list[int] | None = None
    ) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.lengths = lengths
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; iteration begins at batch `start` (a resumed epoch)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        """Batches in a whole epoch."""
        return math.ceil(self.size / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.start :])

    def batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.lengths is None:
            return _chunks(order, self.batch_size)
        pool = self.batch_size * self.POOL_BATCHES
        batches: list[list[int]] = []
        for start in range(0, self.size, pool):
            members = sorted(order[start : start + pool], key=self.lengths.__getitem__)
            batches += _chunks(members, self.batch_size)
        # The short last batch goes anywhere, like the others.
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffle]


class RankShard:
    """One rank's part of each global batch (data-parallel training).

    The global batches are exactly those one process would train on with the
    global batch size; rank r takes the r-th of `world` near-equal contiguous
    parts. A global batch with fewer rows than ranks (a short last batch) is
    skipped, so every rank always has rows to run.
    """

    def __init__(self, batches: ShuffledBatches, rank: int, world: int) -> None:
        self.inner, self.rank, self.world = batches, rank, world
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.start = start

    def __len__(self) -> int:
        tail = self.inner.size % self.inner.batch_size
        return len(self.inner) - (1 if 0 < tail < self.world else 0)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.start :])

    def batches(self) -> list[list[int]]:
        """This rank's part of each global batch of the epoch."""
        parts = []
        for batch in (b for b in self.inner.batches() if len(b) >= self.world):
            base, extra = divmod(len(batch), self.world)
            begin = self.rank * base + min(self.rank, extra)
            parts.append(batch[begin : begin + base + (1 if self.rank < extra else 0)])
        return parts


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[s : s + size] for s in range(0, len(items), size)]


def length_sorted_batches(split: EncodedSplit, batch_size: int) -> list[list[int]]:
    """Evaluation batches of similar lengths: little padding, same metrics."""
    lengths = split.lengths()
    order = sorted(range(len(split)), key=lengths.__getitem__)
    return _chunks(order, batch_size)


Collate = Callable[[list[int]], dict[str, torch.Tensor]]


def train_loader(
    split: EncodedSplit,
    batch_size: int,
    seed: int,
    collate: Collate,
    group_by_length: bool,
    rank: int = 0,
    world: int = 1,
    workers: int = 0,
) -> tuple[torch.utils.data.DataLoader, ShuffledBatches | RankShard]:
    """Batches of `batch_size` rows per process; `world` processes share each global batch.

    `workers` > 0: that many processes build the batches (decoding images); each
    epoch's iterator starts them afresh, with the collator's epoch already set.
    """
    lengths = split.lengths() if group_by_length else None
    sampler: ShuffledBatches | RankShard
    sampler = ShuffledBatches(len(split), batch_size * world, seed, lengths)
    if world > 1:
        sampler = RankShard(sampler, rank, world)
    # A private generator: otherwise each new iterator draws its seed from the
    # global RNG, and a resumed epoch would shift the dropout masks.
    loader = torch.utils.data.DataLoader(
        split,
        batch_sampler=sampler,
        collate_fn=collate,
        generator=torch.Generator(),
        num_workers=workers,
    )
    return loader, sampler


def eval_loader(
    split: EncodedSplit,
    batch_size: int,
    collate: Collate,
    rank: int = 0,
    world: int = 1,
    even: bool = False,
    workers: int = 0,
) -> torch.utils.data.DataLoader:
    """Length-sorted batches; with several processes each takes every `world`-th batch.

    `even` (FSDP, whose ranks gather weights together in every forward): every
    rank gets as many batches as the busiest one, topped up with repeats of
    the first batch; `loader.real_batches` says how many count.
    """
    every = length_sorted_batches(split, batch_size)
    batches = every[rank::world]
    real = len(batches)
    if even:
        batches += [every[0]] * (math.ceil(len(every) / world) - real)
    loader = torch.utils.data.DataLoader(
        split,
        batch_sampler=batches,
        collate_fn=collate,
        generator=torch.Generator(),
        num_workers=workers,
    )
    loader.real_batches = real
    return loader
