"""What every task's bench shares: the ft side (one `ft train` in this process, read
back from its metrics.json) and the Trainer's settings and result."""

from __future__ import annotations

import time
from typing import Any


def run_ft(overrides: list[str], args: Any, metric: str, started: float) -> dict:
    """`ft train` with `overrides` plus the bench's budget and precision."""
    from compare_hf import train_ft

    overrides = [
        *overrides,
        f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch_size}",
        "train.eval_every=1000000",  # evaluated once, at the end, as the Trainer side is
        "train.save_every=1000000",
        "train.log_every=1000000",
        "train.seed=42",
        *([] if args.max_eval is None else [f"data.max_eval_samples={args.max_eval}"]),
        *([] if args.precision == "defaults" else [f"hardware.precision={args.precision}"]),
    ]
    result, record, called = train_ft(overrides)
    return {
        "time_to_first_step_s": called - started + record["time_to_first_step_s"],
        "train_seconds": record["train_seconds"],
        "train_samples": record["train_samples"],
        "metric": result.final.get(metric),
        "precision": record["precision"],
    }


def group_texts(tokenizer: Any, texts: list[str], block: int, labels: bool = False) -> Any:
    """The example scripts' `group_texts`: every text tokenized, all concatenated and cut
    into whole blocks (the remainder dropped); with `labels`, the inputs as labels."""
    import datasets

    ids = [i for row in tokenizer(texts)["input_ids"] for i in row]
    rows = [ids[start : start + block] for start in range(0, len(ids) // block * block, block)]
    return datasets.Dataset.from_dict({"input_ids": rows, **({"labels": rows} if labels else {})})


def evaluated(rows: Any, args: Any) -> Any:
    """The first --max-eval rows of a validation split (a list or a datasets.Dataset)."""
    if args.max_eval is None or len(rows) <= args.max_eval:
        return rows
    return rows.select(range(args.max_eval)) if hasattr(rows, "select") else rows[: args.max_eval]


def training_args(args: Any, out: str, seq2seq: bool = False, **job: Any) -> Any:
    """The Trainer at its defaults but for the bench's budget (and bf16 when both sides
    run at equal precision); the Seq2SeqTrainer's with `seq2seq`."""
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    kind = Seq2SeqTrainingArguments if seq2seq else TrainingArguments
    return kind(
        output_dir=out,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1000000,
        seed=42,
        use_cpu=True,
        bf16=args.precision == "bf16",
        report_to="none",
        disable_tqdm=True,
        **job,
    )


def hf_result(trainer: Any, clock: Any, args: Any, metric: float | None, started: float) -> dict:
    return {
        "time_to_first_step_s": (clock.first_step_at or time.perf_counter()) - started,
        "train_seconds": clock.end - clock.begin,
        "train_samples": trainer.state.global_step * args.batch_size,
        "metric": metric,
        "precision": "bf16" if args.precision == "bf16" else "fp32",
    }


def fresh_vision_model(name: str, labels: list[str], auto_class: Any) -> tuple[Any, Any]:
    """The packaged model `name` from its config with fresh weights (seed set by the
    caller) and a head for `labels`, and its image processor."""
    from transformers import AutoConfig, AutoImageProcessor

    from ft_cli.paths import resolve_path

    path = resolve_path(name, "model")
    names = dict(enumerate(labels))
    config = AutoConfig.from_pretrained(
        path, id2label=names, label2id={label: i for i, label in names.items()}
    )
    return auto_class.from_config(config), AutoImageProcessor.from_pretrained(path)


def quiet() -> None:
    import datasets
    from transformers.utils import logging

    logging.set_verbosity_error()
    datasets.disable_progress_bars()
