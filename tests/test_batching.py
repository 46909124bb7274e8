"""Training batch order: every example once per epoch, reproducible, length-grouped."""

from __future__ import annotations

import random

import pytest

from ft_cli.data.batching import ShuffledBatches, length_sorted_batches
from ft_cli.data.encoded import EncodedSplit

_rng = random.Random(0)
LENGTHS = [_rng.randint(5, 120) for _ in range(1000)]


@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_every_example_once_per_epoch(lengths) -> None:
    sampler = ShuffledBatches(1000, 32, seed=7, lengths=lengths)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 32
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(1000))
        assert all(len(b) == 32 for b in batches if len(b) != 1000 % 32)


@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_order_is_a_function_of_seed_and_epoch(lengths) -> None:
    def order(seed: int, epoch: int) -> list[list[int]]:
        sampler = ShuffledBatches(1000, 32, seed=seed, lengths=lengths)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1, 2) == order(1, 2)
    assert order(1, 2) != order(1, 3)
    assert order(1, 2) != order(2, 2)


def padding(batches: list[list[int]]) -> float:
    padded = sum(max(LENGTHS[i] for i in b) * len(b) for b in batches)
    return 1 - sum(LENGTHS) / padded


def test_grouping_by_length_cuts_padding() -> None:
    grouped = ShuffledBatches(1000, 32, seed=0, lengths=LENGTHS)
    plain = ShuffledBatches(1000, 32, seed=0)
    assert padding(list(grouped)) < 0.1 < padding(list(plain))


def test_eval_batches_are_sorted_by_length_and_complete() -> None:
    split = EncodedSplit(
        input_ids=[[1] * n for n in LENGTHS], token_type_ids=None, labels=[0] * 1000
    )
    batches = length_sorted_batches(split, 64)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS)
