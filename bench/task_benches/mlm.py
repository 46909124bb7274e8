"""Masked-LM: continued pretraining of the packaged MiniLM on the demo's review text,
packed into blocks of 64 tokens on both sides, against the Trainer as `run_mlm.py`
builds it (`group_texts`, `DataCollatorForLanguageModeling`, 15% masked); the metric
is the validation perplexity (exp of the mean masked-token loss)."""

from __future__ import annotations

import math
import tempfile
from typing import Any

from task_benches import classification, common

METRIC = "perplexity"
BLOCK = 64


def ft_overrides(args: Any) -> list[str]:
    return ["+recipe=demo_mlm", f"data.max_length={BLOCK}"]


def run_hf(args: Any, clock: Any, started: float) -> dict:
    from transformers import (
        AutoModelForMaskedLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
    )

    from ft_cli.paths import resolve_path

    common.quiet()
    path = resolve_path(classification.MODEL, "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForMaskedLM.from_pretrained(path)

    def blocks(split: str) -> Any:
        return common.group_texts(tokenizer, classification.read(split)[0], BLOCK)

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=common.training_args(args, out, learning_rate=1e-4),
            train_dataset=blocks("train"),
            data_collator=collator,
            callbacks=[clock],
        )
        trainer.train()
        dev_set = blocks("validation")
        loss = trainer.evaluate(common.evaluated(dev_set, args))["eval_loss"]
    return common.hf_result(trainer, clock, args, math.exp(loss), started)
