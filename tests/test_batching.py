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


@pytest.mark.parametrize("multiple", [1, 8, 16])
def test_padded_width_only_pads_and_never_passes_the_longest_row(multiple) -> None:
    from ft_cli.data.batching import padded_width

    for cap in (5, 32, 100, 128):
        for longest in range(1, cap + 1):
            width = padded_width(longest, multiple, cap)
            assert longest <= width <= max(cap, longest)  # never truncates
            assert width % multiple == 0 or width == cap  # a multiple, unless the cap stops it
            assert width - longest < multiple


def test_padded_batches_hold_the_same_rows_and_mask_the_rest() -> None:
    import torch

    from ft_cli.data.batching import Collator
    from ft_cli.tasks.mlm import MaskingCollator, MaskingRule
    from ft_cli.tasks.tagging import IGNORE, TaggedCollator

    random.seed(0)
    ids = [[2] + [random.randint(5, 50) for _ in range(n)] + [3] for n in (3, 9, 20, 26)]
    types = [[0] * len(r) for r in ids]
    split = EncodedSplit(input_ids=ids, token_type_ids=types, labels=[0, 1, 0, 1])
    plain, padded = Collator(split, 0, False), Collator(split, 0, False, multiple=8)
    a, b = plain([0, 1]), padded([0, 1])
    assert a["input_ids"].shape[1] == 11 and b["input_ids"].shape[1] == 16
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(b[key][:, :11], a[key]) and not b[key][:, 11:].any()
    assert padded([2, 3])["input_ids"].shape[1] == 28  # capped at the split's longest row
    # Token tasks pad their labels with the ignored id, masked LM only masks real tokens.
    words = EncodedSplit(
        input_ids=ids,
        token_type_ids=types,
        labels=[[1] * len(r) for r in ids],
        word_starts=[[True] * len(r) for r in ids],
    )
    tagged = TaggedCollator(words, 0, multiple=8)([0, 1])
    assert tagged["labels"].shape[1] == 16 and (tagged["labels"][:, 11:] == IGNORE).all()
    rule = MaskingRule(
        probability=0.5,
        mask_replace_prob=0.8,
        random_replace_prob=0.1,
        whole_word=False,
        mask_id=4,
        vocab_size=60,
        special_ids=torch.tensor([0, 2, 3]),
    )
    masked = MaskingCollator(split, 0, rule, seed=1, multiple=8)([0, 1, 2, 3])
    width = masked["input_ids"].shape[1]
    real = masked["attention_mask"].view(-1)[masked["mlm_positions"]]
    assert width == 28 and len(masked["mlm_positions"]) > 0 and real.all()


def test_pairs_and_choices_are_padded_to_a_multiple_too() -> None:
    import torch

    from ft_cli.tasks.multiple_choice import ChoiceCollator, ChoiceSplit
    from ft_cli.tasks.seq2seq import Seq2SeqCollator

    sources = [[5] * n for n in (3, 9, 20)]
    targets = [[6] * n for n in (2, 5, 11)]
    pairs = EncodedSplit(input_ids=sources, token_type_ids=None, labels=targets)
    plain, padded = Seq2SeqCollator(pairs, 0)([0, 1]), Seq2SeqCollator(pairs, 0, 8)([0, 1])
    assert plain["input_ids"].shape[1] == 9 and padded["input_ids"].shape[1] == 16
    assert plain["labels"].shape[1] == 5 and padded["labels"].shape[1] == 8
    assert torch.equal(padded["input_ids"][:, :9], plain["input_ids"])
    assert not padded["attention_mask"][:, 9:].any() and (padded["labels"][:, 5:] == -100).all()
    widest = Seq2SeqCollator(pairs, 0, 8)([1, 2])  # capped at the split's longest of each
    assert widest["input_ids"].shape[1] == 20 and widest["labels"].shape[1] == 11
    choices = [[[7] * a, [8] * b] for a, b in ((3, 4), (9, 2), (13, 1))]
    longest = [max(row, key=len) for row in choices]
    split = ChoiceSplit(input_ids=longest, token_type_ids=None, labels=[0, 1, 0])
    split.choice_ids = choices
    a, b = ChoiceCollator(split, 0)([0, 1]), ChoiceCollator(split, 0, 8)([0, 1])
    assert a["input_ids"].shape == (2, 2, 9) and b["input_ids"].shape == (2, 2, 13)
    assert (
        torch.equal(b["input_ids"][..., :9], a["input_ids"])
        and not b["attention_mask"][..., 9:].any()
    )
