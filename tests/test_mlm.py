"""Masked-LM pretraining: masking statistics, packing, training, export and the chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_spec, run_train
from safetensors.torch import load_file

from ft_cli.config.schema import DataConfig, Packing, TaskConfig
from ft_cli.data import corpus
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.paths import resolve_path
from ft_cli.tasks import mlm

TINY_BERT = resolve_path("pkg:ft_cli/assets/tiny_bert", "model")
CLS, SEP, PAD, MASK = 2, 3, 0, 4  # tiny_bert's vocab.txt order


def rule(probability: float = 0.15, whole_word: bool = False, vocab: int = 1000):
    return mlm.MaskingRule(
        probability=probability,
        mask_replace_prob=0.8,
        random_replace_prob=0.1,
        whole_word=whole_word,
        mask_id=MASK,
        vocab_size=vocab,
        special_ids=torch.tensor([0, 1, 2, 3, 4]),
    )


def test_masking_rates_and_80_10_10_split_hold_on_100k_tokens() -> None:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (1000, 100), generator=generator)
    masked, labels = mlm.mask_tokens(ids, torch.ones_like(ids), rule(), generator)
    chosen = labels != mlm.IGNORE
    n = int(chosen.sum())
    # Binomial bounds at about 5 standard deviations.
    assert abs(n / ids.numel() - 0.15) < 0.006
    as_mask = int((masked[chosen] == MASK).sum()) / n
    kept = int((masked[chosen] == ids[chosen]).sum()) / n
    assert abs(as_mask - 0.8) < 0.017
    assert abs(kept - 0.1) < 0.013
    assert abs(1 - as_mask - kept - 0.1) < 0.013  # random replacements
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])  # unchosen tokens never change


def test_special_and_pad_tokens_are_never_masked() -> None:
    row = [CLS, 10, 11, 12, SEP, 13, 14, SEP, PAD, PAD]
    ids = torch.tensor([row] * 200)
    attention = (ids != PAD).long()
    generator = torch.Generator().manual_seed(1)
    masked, labels = mlm.mask_tokens(ids, attention, rule(probability=1.0), generator)
    special = torch.isin(ids, torch.tensor([CLS, SEP, PAD]))
    assert (labels[special] == mlm.IGNORE).all()
    assert torch.equal(masked[special], ids[special])
    assert (labels[~special] != mlm.IGNORE).all()  # probability 1: every other token


def test_whole_word_masking_masks_all_pieces_of_a_word_together() -> None:
    # Words: [10 11 12] [13] [14 15] between CLS and SEP.
    row = [CLS, 10, 11, 12, 13, 14, 15, SEP]
    continues = [False, False, True, True, False, False, True, False]
    ids = torch.tensor([row] * 2000)
    flags = torch.tensor([continues] * 2000)
    generator = torch.Generator().manual_seed(2)
    _, labels = mlm.mask_tokens(
        ids, torch.ones_like(ids), rule(0.3, whole_word=True), generator, flags
    )
    chosen = labels != mlm.IGNORE
    for word in ([1, 2, 3], [4], [5, 6]):
        picked = chosen[:, word]
        assert (picked.all(dim=1) | ~picked.any(dim=1)).all()  # all pieces or none
        assert 0.25 < picked[:, 0].float().mean() < 0.35
    assert not chosen[:, [0, 7]].any()
    # Without word boundaries the pieces are chosen independently.
    _, labels = mlm.mask_tokens(ids, torch.ones_like(ids), rule(0.3), generator)
    picked = (labels != mlm.IGNORE)[:, [1, 2, 3]]
    assert not (picked.all(dim=1) | ~picked.any(dim=1)).all()


def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_BERT)


def test_group_texts_blocks_are_exactly_max_length_and_drop_only_the_tail() -> None:
    import datasets

    tokenizer = tiny_tokenizer()
    texts = [f"the {w} is quite great number {i}" for i, w in enumerate(["phone", "lamp"] * 40)]
    dataset = datasets.Dataset.from_dict({"text": texts})
    cfg = DataConfig(max_length=24, text_column="text")
    task = TaskConfig(kind="mlm", packing=Packing.group_texts)
    split = corpus.encode_corpus(cfg, task, tokenizer, dataset, "train")
    assert all(len(row) == 24 for row in split.input_ids)
    assert all(row[0] == CLS and row[-1] == SEP for row in split.input_ids)
    stream = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream += [*ids, SEP]
    inner = [t for row in split.input_ids for t in row[1:-1]]
    block = 22
    assert len(stream) - len(inner) < block  # only the tail is dropped
    assert inner == stream[: len(inner)]


def test_line_by_line_keeps_one_document_per_row() -> None:
    import datasets

    tokenizer = tiny_tokenizer()
    dataset = datasets.Dataset.from_dict(
        {"a": ["short one", "", "a much longer document " * 10], "b": ["x", "y", None]}
    )
    cfg = DataConfig(max_length=16, text_column="a", text_pair_column="b")
    task = TaskConfig(kind="mlm", packing=Packing.line_by_line, whole_word_mask=True)
    split = corpus.encode_corpus(cfg, task, tokenizer, dataset, "train")
    assert len(split) == 4  # two non-blank texts of column a, two of column b
    assert all(row[0] == CLS and row[-1] == SEP and len(row) <= 16 for row in split.input_ids)
    assert split.word_continues is not None
    assert [len(f) for f in split.word_continues] == split.lengths()


def collator_for(rows: list[list[int]], seed: int = 0) -> mlm.MaskingCollator:
    split = EncodedSplit(input_ids=rows, token_type_ids=None, labels=[0] * len(rows))
    return mlm.MaskingCollator(split, PAD, rule(0.3), seed)


def test_masks_are_fresh_each_epoch_and_reproducible() -> None:
    rows = [[CLS, *range(10, 40), SEP] for _ in range(8)]
    collate = collator_for(rows)
    collate.set_epoch(0)
    first = collate(list(range(8)))["input_ids"]
    again = collate(list(range(8)))["input_ids"]
    collate.set_epoch(1)
    second = collate(list(range(8)))["input_ids"]
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    other_seed = collator_for(rows, seed=1)
    other_seed.set_epoch(0)
    assert not torch.equal(first, other_seed(list(range(8)))["input_ids"])


def test_collator_targets_are_the_masked_positions() -> None:
    rows = [[CLS, *range(10, 10 + n), SEP] for n in (5, 20, 12)]
    collate = collator_for(rows)
    batch = collate([0, 1, 2])
    original = torch.full_like(batch["input_ids"], PAD)
    for j, row in enumerate(rows):
        original[j, : len(row)] = torch.tensor(row)
    flat = original.view(-1)
    assert torch.equal(batch["labels"], flat[batch["mlm_positions"]])
    assert len(batch["labels"]) > 0


MLM = ["task=mlm", "data.max_train_samples=200", "optimizer.lr=3e-3"]


def test_perplexity_falls_with_training(tmp_path: Path) -> None:
    untrained = run_train(tmp_path / "a", [*MLM, "train.max_steps=1", "optimizer.lr=1e-9"])
    trained = run_train(tmp_path / "b", [*MLM, "train.epochs=6"])
    before, after = untrained.final["perplexity"], trained.final["perplexity"]
    assert after < 0.5 * before, (before, after)
    assert trained.final["accuracy"] > untrained.final["accuracy"]
    assert trained.metric_name == "loss"
    record = json.loads((trained.run_dir / "metrics.json").read_text())
    assert record["padding_fraction"] == 0.0  # group_texts: full blocks


TEXT = [
    "model=tiny_bert",
    "task=mlm",
    "data=text",
    "data.validation_fraction=0",
    "task.packing=line_by_line",
    "data.max_length=64",
]


def test_text_files_one_document_per_line_or_paragraph(tmp_path: Path) -> None:
    from ft_cli.data.dataset import prepare

    lines = [f"the lamp number {i} is very bright" for i in range(60)]
    by_line = tmp_path / "lines.txt"
    by_line.write_text("\n".join(lines) + "\n\n")
    by_paragraph = tmp_path / "paragraphs.txt"
    by_paragraph.write_text("\n\n".join("\n".join(lines[i : i + 3]) for i in range(0, 60, 3)))
    tokenizer = tiny_tokenizer()
    rows = {}
    for name, path, documents in [("line", by_line, "line"), ("par", by_paragraph, "paragraph")]:
        settings = [f"data.files.train={path}", f"data.text_documents={documents}"]
        spec = compose_spec([*TEXT, *settings])
        rows[name] = prepare(spec.data, spec.task, tokenizer, seed=0).train
    assert len(rows["line"]) == 60  # the blank last line is no document
    assert len(rows["par"]) == 20
    assert rows["par"].lengths()[0] > 2 * rows["line"].lengths()[0]


def test_export_reloads_as_masked_lm_with_tied_weights_and_same_logits(tmp_path: Path) -> None:
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    result = run_train(tmp_path, [*MLM, "train.epochs=1"])
    export = result.run_dir / "model"
    reloaded = AutoModelForMaskedLM.from_pretrained(export).eval()
    trained = result.model.cpu().eval()
    assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight
    ids = torch.tensor([[CLS, 10, MASK, 12, SEP]])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, trained(input_ids=ids).logits)
    classifier = AutoModelForSequenceClassification.from_pretrained(export, num_labels=2)
    encoder = {f"bert.{k}": v for k, v in reloaded.bert.state_dict().items()}
    for key, value in classifier.state_dict().items():
        if key in encoder:
            assert torch.equal(value, encoder[key]), key
    assert sum(k in encoder for k in classifier.state_dict()) == len(encoder)


def test_scratch_model_sizes_follow_the_overrides(tmp_path: Path) -> None:
    sizes = ["model.layers=3", "model.hidden_size=48", "model.heads=3"]
    result = run_train(tmp_path, [*MLM, "train.max_steps=2", *sizes])
    config = json.loads((result.run_dir / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 3
    assert config["hidden_size"] == 48
    assert config["num_attention_heads"] == 3
    assert config["intermediate_size"] == 4 * 48
    assert config["vocab_size"] == len(tiny_tokenizer())
    assert len(result.model.bert.encoder.layer) == 3


def test_pretrain_then_fine_tune_chain(tmp_path: Path) -> None:
    pretrained = run_train(tmp_path / "mlm", [*MLM, "train.epochs=1"])
    tuned = run_train(
        tmp_path / "ft",
        [f"model.from_run={pretrained.run_dir}", "strategy=freeze_backbone", "train.epochs=1"],
    )
    assert tuned.metric is not None
    # The frozen encoder of the fine-tuned model is the pretraining run's encoder.
    mlm_weights = load_file(pretrained.run_dir / "model" / "model.safetensors")
    tuned_weights = load_file(tuned.run_dir / "model" / "model.safetensors")
    shared = [k for k in tuned_weights if k.startswith("bert.encoder") or "embeddings" in k]
    assert shared
    for key in shared:
        assert torch.equal(tuned_weights[key], mlm_weights[key]), key
    config = json.loads((tuned.run_dir / "model" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=text", "data.files.train=x.txt"], "data.format=text holds no labels"),
        (["task=mlm", "task.mlm_probability=1.5"], "task.mlm_probability=1.5 must be in (0, 1]"),
        (["task=mlm", "task.mask_replace_prob=0.95"], "must be at most 1"),
        (["model=minilm_l6", "model.layers=2"], "add model.init=scratch"),
        (["model.heads=5", "model.hidden_size=32"], "must be a multiple of model.heads=5"),
        (["model.from_run=/nonexistent/run"], "model.from_run: '/nonexistent/run' holds no"),
    ],
)
def test_bad_mlm_settings_fail_with_the_key(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(FtError) as err:
        run_train(tmp_path, overrides)
    assert message in str(err.value)
