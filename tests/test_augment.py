"""Augmentation: what each one changes (and never), determinism, and evaluation untouched."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY, compose_spec

from ft_cli.augment import hidden, tokens
from ft_cli.config.schema import AugmentConfig
from ft_cli.data.batching import Collator
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError

SHARE = 0.2


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from ft_cli.paths import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path("pkg:ft_cli/assets/tiny_bert", "model"))


@pytest.fixture(scope="module")
def pairs(tokenizer) -> EncodedSplit:
    """300 sentence pairs of 10-60 distinct word ids each, so every move shows."""
    generator = torch.Generator().manual_seed(0)
    words = [i for i in range(tokenizer.vocab_size) if i not in tokenizer.all_special_ids]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    ids, types = [], []
    for _ in range(300):
        first, second = (int(torch.randint(5, 30, (1,), generator=generator)) for _ in range(2))
        chosen = torch.randperm(len(words), generator=generator)[: first + second].tolist()
        body = [words[i] for i in chosen]
        ids.append([cls, *body[:first], sep, *body[first:], sep])
        types.append([0] * (first + 2) + [1] * (second + 1))
    return EncodedSplit(ids, types, [i % 2 for i in range(300)])


def collated(
    split: EncodedSplit,
    tokenizer,
    cfg: AugmentConfig,
    epoch: int = 0,
    indices: list[int] | None = None,
):
    plain = Collator(split, tokenizer.pad_token_id, regression=False)
    augmenting = tokens.AugmentingCollator(plain, cfg, 7, tokenizer, add_rows=False)
    augmenting.set_epoch(epoch)
    rows = indices if indices is not None else list(range(len(split)))
    return plain(rows), augmenting(rows)


def editable_count(batch, tokenizer) -> int:
    special = torch.tensor(tokenizer.all_special_ids)
    return int((batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], special)).sum())


def special_layout(batch, tokenizer) -> list[list[int]]:
    """Each row's special tokens and segment ids at them, in order: what no augmentation moves."""
    special = set(tokenizer.all_special_ids) - {tokenizer.mask_token_id}
    rows = []
    for ids, types, mask in zip(
        batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], strict=True
    ):
        real = [
            (int(i), int(t))
            for i, t, m in zip(ids, types, mask, strict=True)
            if m and int(i) in special
        ]
        rows.append(real)
    return rows


@pytest.mark.parametrize("kind", ["token_mask", "token_delete", "token_swap", "span_cutoff"])
def test_token_augmentations_change_their_share_and_leave_special_tokens_and_padding(
    kind: str, pairs: EncodedSplit, tokenizer
) -> None:
    before, after = collated(pairs, tokenizer, AugmentConfig(**{kind: SHARE}))
    editable = editable_count(before, tokenizer)
    assert special_layout(after, tokenizer) == special_layout(before, tokenizer)
    ids, was = after["input_ids"], before["input_ids"]
    pad = tokenizer.pad_token_id
    # Padding stays padding, at the end of each row, outside attention.
    for row in range(len(ids)):
        length = int(before["attention_mask"][row].sum())
        assert (ids[row, length:] == pad).all() and not after["attention_mask"][row, length:].any()
    if kind == "token_mask":
        changed = int((ids == tokenizer.mask_token_id).sum())
        assert bool(((ids != was) <= (ids == tokenizer.mask_token_id)).all())
    elif kind == "token_delete":
        changed = editable - editable_count(after, tokenizer)
        kept = [
            set(r[m.bool()].tolist()) for r, m in zip(ids, after["attention_mask"], strict=True)
        ]
        originals = [
            set(r[m.bool()].tolist()) for r, m in zip(was, before["attention_mask"], strict=True)
        ]
        assert all(k <= o for k, o in zip(kept, originals, strict=True))  # only removals
    elif kind == "token_swap":
        changed = int((ids != was).sum())
        assert sorted(ids.flatten().tolist()) == sorted(was.flatten().tolist())
    else:
        hidden_tokens = before["attention_mask"].bool() & ~after["attention_mask"].bool()
        changed = int(hidden_tokens.sum())
        assert torch.equal(ids, was)
    assert changed / editable == pytest.approx(SHARE, abs=0.025)


def test_augmentation_is_a_function_of_seed_epoch_and_row(pairs: EncodedSplit, tokenizer) -> None:
    cfg = AugmentConfig(token_mask=0.3, token_delete=0.1, token_swap=0.2, span_cutoff=0.1)
    _, alone = collated(pairs, tokenizer, cfg, epoch=2, indices=[5])
    _, among = collated(pairs, tokenizer, cfg, epoch=2, indices=[40, 5, 17])
    width = int(alone["attention_mask"][0].sum()) + 1
    assert torch.equal(alone["input_ids"][0, :width], among["input_ids"][1, :width])
    assert torch.equal(
        alone["attention_mask"][0], among["attention_mask"][1, : alone["attention_mask"].shape[1]]
    )
    _, next_epoch = collated(pairs, tokenizer, cfg, epoch=3, indices=[5])
    assert not torch.equal(alone["input_ids"], next_epoch["input_ids"])


def tiny_classifier(tokenizer):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from ft_cli.paths import resolve_path

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(
        resolve_path("pkg:ft_cli/assets/tiny_bert", "model"), num_labels=2
    )
    return AutoModelForSequenceClassification.from_config(config)


def test_embedding_noise_is_bounded_and_spares_special_tokens_and_padding(
    pairs: EncodedSplit, tokenizer
) -> None:
    net = tiny_classifier(tokenizer).train()
    augment = hidden.HiddenAugment(net, AugmentConfig(embedding_noise=5.0), 7, tokenizer)
    batch = Collator(pairs, tokenizer.pad_token_id, regression=False)(list(range(8)))
    rows = {"augment_rows": torch.arange(8), "augment_epoch": torch.tensor(0)}
    augment.arm({**batch, **rows})
    noise = augment.noise(torch.Size((8, batch["input_ids"].shape[1], 32)))
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    quiet = special | ~batch["attention_mask"].bool()
    assert not noise[quiet].any() and noise[~quiet].abs().min() > 0
    for row in range(8):
        words = int((~quiet[row]).sum())
        bound = 5.0 / math.sqrt(words * 32)
        assert noise[row].abs().max() <= bound
        assert noise[row].abs().max() > 0.9 * bound  # uniform: the bound is nearly reached
    # The hook adds it in training and nothing in eval mode.
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    embeddings = net.get_input_embeddings()
    augment.arm({**batch, **rows})
    noisy = embeddings(inputs["input_ids"])
    assert torch.allclose(noisy - embeddings.weight[inputs["input_ids"]], noise, atol=1e-6)
    net.eval()
    augment.arm({**batch, **rows})
    assert torch.equal(embeddings(inputs["input_ids"]), embeddings.weight[inputs["input_ids"]])


def test_mixup_mixes_the_classifier_input_and_the_loss(pairs: EncodedSplit, tokenizer) -> None:
    from ft_cli.tasks.objective import Objective

    net = tiny_classifier(tokenizer).train()
    net.config.hidden_dropout_prob = 0.0
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    inner = Objective(net, "classification", 2, tokenizer.pad_token_id, False)
    augment = hidden.HiddenAugment(net, AugmentConfig(mixup=0.4), 7, tokenizer)
    objective = hidden.AugmentedObjective(inner, augment)
    batch = Collator(pairs, tokenizer.pad_token_id, regression=False)(list(range(8)))
    seen: list[torch.Tensor] = []
    net.classifier.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    logits, labels = objective.outputs(
        {**batch, "augment_rows": torch.arange(8), "augment_epoch": torch.tensor(0)}
    )
    assert augment.mix is not None
    lam, partner = augment.mix
    pooled = net.bert(**{k: v for k, v in batch.items() if k != "labels"}).pooler_output
    assert torch.allclose(seen[0], lam * pooled + (1 - lam) * pooled[partner], atol=1e-5)
    expected = lam * torch.nn.functional.cross_entropy(logits, labels) + (
        1 - lam
    ) * torch.nn.functional.cross_entropy(logits, labels[partner])
    assert torch.allclose(objective.loss(logits, labels), expected)
    # Evaluation batches carry no rows: nothing is mixed.
    net.eval()
    objective.outputs(dict(batch))
    assert augment.mix is None and torch.allclose(seen[-1], pooled, atol=1e-5)


def test_evaluation_batches_and_metrics_are_never_augmented() -> None:
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.hardware.parallel import Backend
    from ft_cli.training import engine, setup

    every = [
        "augment=token_mask",
        "augment.token_delete=0.2",
        "augment.token_swap=0.2",
        "augment.span_cutoff=0.2",
        "augment.embedding_noise=5",
        "augment.mixup=0.4",
    ]
    built = []
    for extra in ([], every):
        spec = compose_spec([*TINY, *extra])
        hw = setup_hardware(spec.hardware)
        ready = setup.build(spec, setup.Purpose.train, Backend(), hw)
        batches = list(ready.val_loader)
        built.append(
            (
                batches,
                engine.evaluate(ready.forward, ready.objective, ready.val_loader, hw),
                next(iter(ready.loader)),
            )
        )
    (plain_batches, plain_metrics, plain_train), (aug_batches, aug_metrics, aug_train) = built
    for a, b in zip(plain_batches, aug_batches, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert aug_metrics == plain_metrics
    assert not torch.equal(plain_train["input_ids"], aug_train["input_ids"])  # training is


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=mlm", "augment=token_mask"], "augment: task=mlm is not augmented"),
        (
            ["task=token_classification", "data=demo_ner", "augment=token_swap"],
            "augment.token_swap: would move words away from their tags",
        ),
        (["augment=mixup", "strategy=distill"], "augment.mixup: the teacher's targets"),
        (["augment.token_mask=1"], "augment.token_mask=1 must be in [0, 1)"),
        (["augment.mixup=-1"], "augment.mixup=-1 must be at least 0"),
    ],
)
def test_augmentations_that_would_break_targets_are_refused(
    overrides: list[str], message: str
) -> None:
    import re

    from ft_cli.config.schema import check_spec

    with pytest.raises(FtError, match=re.escape(message)):
        check_spec(compose_spec([*TINY, *overrides]))
