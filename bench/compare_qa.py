"""ft against a Hugging Face `run_qa.py`-style Trainer job on extractive question answering.

Same model (the packaged MiniLM, or the tiny BERT with --tiny), same SQuAD JSON files
(../shared/data/squad: 4,888 training and 721 dev questions), same windows (max length
and stride), hyperparameters, seed and budget. The reference side does what the
transformers example does: windows padded to the max length, labels from the
tokenizer's offsets, the Trainer, then n-best decoding over each question's windows.
Both sides are scored by one scorer (SQuAD's normalisation, exact match and F1). Each
side runs in its own fresh process; with --repeats the sides alternate.

    python bench/compare_qa.py --max-steps 150          # a budget of 150 steps a side
    python bench/compare_qa.py --max-steps 200 --reference-steps 56   # of equal time
    python bench/compare_qa.py                          # the recipe's 2 epochs a side

Needs `accelerate` for the Trainer (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()  # a side's clock starts before its heavy imports

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from compare_hf import (  # noqa: E402
    alternate,
    child_main,
    cpu_name,
    hf_model,
    hf_training_args,
    train_ft,
)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "squad"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="train.json, dev.json")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps per side")
    parser.add_argument(
        "--reference-steps",
        type=int,
        default=None,
        help="the reference side's steps instead (a budget of equal time: the steps its"
        " windows/s allow in ft's training time)",
    )
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="both sides")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--max-train-samples", type=int, default=None, help="questions")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="questions")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per side")
    parser.add_argument("--seed", type=int, default=42, help="both sides' (head, data order)")
    parser.add_argument("--tiny", action="store_true", help="tiny random BERT (CI smoke run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--side", choices=["ft", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def read_questions(path: Path, limit: int | None) -> list[dict]:
    """A row per question (context, question, answer texts and starts), file order."""
    rows = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append(
                    {
                        "context": paragraph["context"],
                        "question": qa["question"],
                        "texts": [a["text"] for a in qa["answers"]],
                        "starts": [a["answer_start"] for a in qa["answers"]],
                    }
                )
    return rows[:limit] if limit is not None else rows


def score(predicted: list[str], rows: list[dict]) -> dict[str, float]:
    from ft_cli.tasks import answers

    scores = answers.AnswerScores()
    for text, row in zip(predicted, rows, strict=True):
        scores.add(text, row["texts"])
    return scores.compute()


# ---------------------------------------------------------------- ft side


def run_ft(args: argparse.Namespace) -> dict:
    overrides = [
        "+recipe=minilm_squad",
        f"data.path={args.data}",
        f"data.max_length={args.max_length}",
        f"data.stride={args.stride}",
        f"optimizer.lr={args.lr}",
        f"train.batch_size={args.batch_size}",
        f"train.epochs={args.epochs}",
        "train.eval_batch_size=64",
        f"train.seed={args.seed}",
        "train.eval_every=1000000",  # once, at the end, as the reference side
        "train.save_every=1000000",
        f"hardware.precision={args.precision}",
    ]
    if args.tiny:
        overrides.append("model=tiny_bert")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_train_samples is not None:
        overrides.append(f"data.max_train_samples={args.max_train_samples}")
    if args.max_eval_samples is not None:
        overrides.append(f"data.max_eval_samples={args.max_eval_samples}")
    result, record, called = train_ft(overrides)
    return {
        "time_to_first_step_s": called - T0 + record["time_to_first_step_s"],
        "train_seconds": record["train_seconds"],
        "train_windows": record["train_samples"],
        "wall_seconds": time.perf_counter() - T0,
        "exact_match": result.final.get("exact_match"),
        "f1": result.final.get("f1"),
        "precision": record["precision"],  # what `auto` resolved to
    }


# ---------------------------------------------------------------- reference side


def windows_of(tokenizer, rows: list[dict], args: argparse.Namespace) -> dict:
    """The reference's windows: padded to the max length, with offsets and owners."""
    return tokenizer(
        [r["question"].lstrip() for r in rows],
        [r["context"] for r in rows],
        truncation="only_second",
        max_length=args.max_length,
        stride=args.stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )


def train_features(tokenizer, rows: list[dict], args: argparse.Namespace) -> dict:
    """Windows labelled with the answer's first and last token, or [CLS] (0) when the
    window does not hold the whole answer."""
    encoded = windows_of(tokenizer, rows, args)
    starts, ends = [], []
    for index, offsets in enumerate(encoded["offset_mapping"]):
        row = rows[encoded["overflow_to_sample_mapping"][index]]
        kinds = encoded.sequence_ids(index)
        begin = row["starts"][0]
        stop = begin + len(row["texts"][0])
        context = [i for i, kind in enumerate(kinds) if kind == 1]
        first, last = context[0], context[-1]
        if offsets[first][0] > begin or offsets[last][1] < stop:
            starts.append(0)
            ends.append(0)
            continue
        token = first
        while token <= last and offsets[token][0] <= begin:
            token += 1
        starts.append(token - 1)
        token = last
        while token >= first and offsets[token][1] >= stop:
            token -= 1
        ends.append(token + 1)
    encoded.pop("offset_mapping")
    encoded.pop("overflow_to_sample_mapping")
    return {**encoded, "start_positions": starts, "end_positions": ends}


def decode(rows: list[dict], encoded, start_logits, end_logits, n_best: int = 20) -> list[str]:
    """Each question's best span of at most 30 tokens over its windows."""
    best: dict[int, tuple[float, str]] = {}
    for index, offsets in enumerate(encoded["offset_mapping"]):
        owner = encoded["overflow_to_sample_mapping"][index]
        kinds = encoded.sequence_ids(index)
        starts = sorted(range(len(kinds)), key=lambda i: -start_logits[index][i])[:n_best]
        ends = sorted(range(len(kinds)), key=lambda i: -end_logits[index][i])[:n_best]
        for first in starts:
            for last in ends:
                if kinds[first] != 1 or kinds[last] != 1 or last < first or last - first >= 30:
                    continue
                value = float(start_logits[index][first] + end_logits[index][last])
                if owner not in best or value > best[owner][0]:
                    text = rows[owner]["context"][offsets[first][0] : offsets[last][1]]
                    best[owner] = (value, text)
    return [best.get(i, (0.0, ""))[1] for i in range(len(rows))]


def run_hf(args: argparse.Namespace) -> dict:
    import datasets
    from transformers import AutoModelForQuestionAnswering, Trainer, default_data_collator

    tokenizer, model = hf_model(args, AutoModelForQuestionAnswering)
    train_rows = read_questions(args.data / "train.json", args.max_train_samples)
    dev_rows = read_questions(args.data / "dev.json", args.max_eval_samples)
    train_set = datasets.Dataset.from_dict(train_features(tokenizer, train_rows, args))
    dev_encoded = windows_of(tokenizer, dev_rows, args)
    dev_set = datasets.Dataset.from_dict(
        {k: dev_encoded[k] for k in dev_encoded if k not in ("offset_mapping",)}
    ).remove_columns("overflow_to_sample_mapping")
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    steps = args.reference_steps or args.max_steps
    total = steps or steps_per_epoch * args.epochs
    with tempfile.TemporaryDirectory() as out:
        training_args = hf_training_args(
            args,
            out,
            per_device_eval_batch_size=64,
            num_train_epochs=args.epochs,
            max_steps=steps or -1,
            warmup_steps=math.ceil(0.1 * total),
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            data_collator=default_data_collator,
        )
        started = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - started
        predicted = trainer.predict(dev_set).predictions
    texts = decode(dev_rows, dev_encoded, predicted[0], predicted[1])
    found = score(texts, dev_rows)
    return {
        "time_to_first_step_s": math.nan,
        "train_seconds": train_seconds,
        "train_windows": trainer.state.global_step * args.batch_size,
        "wall_seconds": time.perf_counter() - T0,
        "exact_match": found["exact_match"],
        "f1": found["f1"],
    }


# ---------------------------------------------------------------- the parent


def main() -> None:
    args = parse_args()
    if args.side:
        child_main(args, {"ft": run_ft, "hf": run_hf})
        return
    if not (args.data / "train.json").is_file():
        sys.exit(f"no SQuAD JSON in {args.data}: pass --data FOLDER (train.json, dev.json)")
    runs = alternate(args.repeats, __file__)
    table = {}
    for side, found in runs.items():
        table[side] = {
            "dev exact match": statistics.median(r["exact_match"] for r in found),
            "dev F1": statistics.median(r["f1"] for r in found),
            "train windows/s": statistics.median(
                r["train_windows"] / r["train_seconds"] for r in found
            ),
            "wall (s)": statistics.median(r["wall_seconds"] for r in found),
            "peak RSS (MiB)": statistics.median(r["peak_rss_mib"] for r in found),
        }
    budget = f"{args.max_steps} steps" if args.max_steps else f"{args.epochs} epochs"
    if args.reference_steps:
        budget += f" (the reference: {args.reference_steps} steps)"
    print(
        f"\nExtractive QA, ft vs the run_qa.py-style Trainer job ({cpu_name()}; {budget} of"
        f" {args.batch_size}, max_length {args.max_length}, stride {args.stride},"
        f" lr {args.lr}, {args.precision}, seed {args.seed}; medians of {args.repeats})\n"
    )
    print(f"| {'':20} | {'ft':>10} | {'HF':>10} | ft / HF |")
    print(f"| {'-' * 20} | {'-' * 10}: | {'-' * 10}: | ---: |")
    for key in table["ft"]:
        mine, theirs = table["ft"][key], table["hf"][key]
        ratio = mine / theirs if theirs else math.nan
        print(f"| {key:20} | {mine:10.4g} | {theirs:10.4g} | {ratio:.2f} |")
    if args.json:
        record = {"args": vars(args) | {"data": str(args.data), "json": None}, "table": table}
        args.json.write_text(json.dumps({**record, "runs": runs}, indent=2, default=str))


if __name__ == "__main__":
    main()
