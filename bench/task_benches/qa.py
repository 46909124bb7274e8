"""Extractive question answering: part of SQuAD v1.1 (../shared/data/squad) at 384
tokens with a stride of 128, with the packaged MiniLM, against the Trainer as
`run_qa.py` builds it; both sides as bench/compare_qa.py runs them (its reference side
is that script's feature preparation and post-processing), token F1 on both."""

from __future__ import annotations

import argparse
import math
from typing import Any

METRIC = "f1"
EVAL_QUESTIONS = 200


def namespace(args: Any, precision: str) -> argparse.Namespace:
    import compare_qa

    if not (compare_qa.DEFAULT_DATA / "train.json").is_file():
        raise SystemExit(f"qa: no SQuAD in {compare_qa.DEFAULT_DATA} (../shared/data/squad)")
    return argparse.Namespace(
        data=compare_qa.DEFAULT_DATA,
        epochs=1,
        max_steps=args.steps,
        reference_steps=None,
        precision=precision,
        batch_size=args.batch_size,
        lr=1e-4,
        max_length=384,
        stride=128,
        max_train_samples=args.steps * args.batch_size,
        max_eval_samples=args.max_eval or EVAL_QUESTIONS,
        seed=42,
        tiny=False,
    )


def run_ft(args: Any, started: float) -> dict:
    import compare_qa

    compare_qa.T0 = started
    precision = "auto" if args.precision == "defaults" else args.precision
    found = compare_qa.run_ft(namespace(args, precision))
    return side(found, precision)


def run_hf(args: Any, clock: Any, started: float) -> dict:
    import compare_qa

    compare_qa.T0 = started
    precision = "bf16" if args.precision == "bf16" else "fp32"
    return side(compare_qa.run_hf(namespace(args, precision)), precision)


def side(found: dict, precision: str) -> dict:
    first = found["time_to_first_step_s"]
    return {
        "time_to_first_step_s": None if first is None or math.isnan(first) else first,
        "train_seconds": found["train_seconds"],
        "train_samples": found["train_windows"],
        "metric": found["f1"],
        "precision": found.get("precision", precision),  # ft's as resolved
    }
