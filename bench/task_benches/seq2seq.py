"""Sequence to sequence: the offline plurals demo (a sentence in, its plural out) with
the tiny T5 from its config (fresh weights, as ft's demo), against the Seq2SeqTrainer
as `run_translation.py` builds it: sources and targets tokenized to 32 tokens,
`DataCollatorForSeq2Seq`, greedy generation of at most 16 new tokens at the end; exact
match on both sides by ft's one definition (SQuAD's normalisation)."""

from __future__ import annotations

import json
import tempfile
from typing import Any

from task_benches import common

METRIC = "exact_match"
MODEL = "pkg:ft_cli/assets/tiny_t5"
DATA = "pkg:ft_cli/assets/plurals"
MAX_LENGTH = 32


def ft_overrides(args: Any) -> list[str]:
    return ["+recipe=demo_seq2seq"]


def run_hf(args: Any, clock: Any, started: float) -> dict:
    import datasets
    import numpy as np
    from transformers import (
        AutoConfig,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        set_seed,
    )

    from ft_cli.paths import resolve_path
    from ft_cli.tasks import answers

    common.quiet()
    set_seed(42)
    path = resolve_path(MODEL, "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(path))
    folder = resolve_path(DATA, "data")

    def encode(split: str) -> tuple[datasets.Dataset, list[str]]:
        with open(f"{folder}/{split}.jsonl", encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        sources = tokenizer([r["source"] for r in rows], max_length=MAX_LENGTH, truncation=True)
        targets = tokenizer(
            text_target=[r["target"] for r in rows], max_length=MAX_LENGTH, truncation=True
        )
        found = datasets.Dataset.from_dict({**sources, "labels": targets["input_ids"]})
        return found, [r["target"] for r in rows]

    (train_set, _), (dev_set, truth) = encode("train"), encode("validation")
    dev_set, truth = common.evaluated(dev_set, args), common.evaluated(truth, args)
    with tempfile.TemporaryDirectory() as out:
        settings = common.training_args(
            args, out, seq2seq=True, learning_rate=3e-3, predict_with_generate=True
        )
        trainer = Seq2SeqTrainer(
            model=model,
            args=settings,
            train_dataset=train_set,
            data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
            callbacks=[clock],
        )
        trainer.train()
        found = trainer.predict(dev_set, max_new_tokens=16, num_beams=1)
    ids = np.where(found.predictions < 0, tokenizer.pad_token_id, found.predictions)
    said = tokenizer.batch_decode(ids, skip_special_tokens=True)
    exact = sum(answers.exact_match(p, [t]) for p, t in zip(said, truth, strict=True))
    return common.hf_result(trainer, clock, args, exact / len(truth), started)
