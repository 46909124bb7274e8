"""Causal LM: the offline GPT demo (a 2-layer GPT-2 of width 128 from scratch on ft's
text corpus, blocks of 64 tokens), against the Trainer as `run_clm.py` builds it: the
text file's lines tokenized, concatenated and cut into blocks (`group_texts`), the
labels the inputs; the metric is the validation perplexity."""

from __future__ import annotations

import math
import tempfile
from typing import Any

from task_benches import common

METRIC = "perplexity"
MODEL = "pkg:ft_cli/assets/tiny_gpt2"
DATA = "pkg:ft_cli/assets/corpus"
BLOCK = 64


def ft_overrides(args: Any) -> list[str]:
    return ["+recipe=demo_gpt", f"data.max_length={BLOCK}"]


def run_hf(args: Any, clock: Any, started: float) -> dict:
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        default_data_collator,
        set_seed,
    )

    from ft_cli.paths import resolve_path

    common.quiet()
    set_seed(42)
    path = resolve_path(MODEL, "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path, n_embd=128, n_layer=2, n_head=4)
    model = AutoModelForCausalLM.from_config(config)
    folder = resolve_path(DATA, "data")

    def blocks(split: str) -> Any:
        with open(f"{folder}/{split}.txt", encoding="utf-8") as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
        return common.group_texts(tokenizer, lines, BLOCK, labels=True)

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=common.training_args(args, out, learning_rate=3e-3),
            train_dataset=blocks("train"),
            data_collator=default_data_collator,
            callbacks=[clock],
        )
        trainer.train()
        dev_set = blocks("validation")
        loss = trainer.evaluate(common.evaluated(dev_set, args))["eval_loss"]
    return common.hf_result(trainer, clock, args, math.exp(loss), started)
