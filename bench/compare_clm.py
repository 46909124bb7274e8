"""ft against the Hugging Face Trainer on the same causal-LM fine-tune, side by side.

Supervised fine-tuning of the demo GPT-2 size (2 layers, hidden 128, fresh weights
from the packaged tiny GPT-2 config and tokenizer) on ft's prompt/response pairs
(ft_cli/assets/instructions), the loss on the responses only, on both sides: same
epochs, batch size, learning rate, warmup, weight decay and precision. The HF side
is what its docs show: `AutoModelForCausalLM`, prompt tokens labelled -100,
`DataCollatorForSeq2Seq` padding, `Trainer`. ft runs at its defaults (one example a
row, as the Trainer has them), or with --ft-pack-examples whole examples packed into
rows of 64 tokens, documents kept apart (a batch of rows then holds ~2.5 times the
examples: fewer optimizer steps an epoch). Batches are not grouped by length on
either side (the Trainer's default; --ft-group-by-length for ft's): the pairs'
two kinds of question differ in length, and batches of one kind learn slower. Reported:
examples/s, time to first step, peak RSS and the validation loss over the response
tokens at the end (the same quantity on both sides). Each side runs in its own
fresh process; with --repeats the sides alternate and medians are reported.

    python bench/compare_clm.py --repeats 3
    python bench/compare_clm.py --ft-pack-examples --repeats 3

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_hf import (  # noqa: E402
    alternate,
    child_main,
    hf_training_args,
    print_ratio_table,
    train_clock,
)

ASSETS = Path(__file__).resolve().parent.parent / "ft_cli" / "assets"
SIZE = {"n_embd": 128, "n_head": 4, "n_layer": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="both sides")
    parser.add_argument(
        "--ft-pack-examples", action="store_true", help="ft packs examples into rows"
    )
    parser.add_argument(
        "--ft-group-by-length", action="store_true", help="ft batches rows of like length"
    )
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per side")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--side", choices=["ft", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def rows(name: str, limit: int | None = None) -> list[dict]:
    lines = (ASSETS / "instructions" / name).read_text().splitlines()
    return [json.loads(line) for line in lines[:limit]]


def run_ft(args: argparse.Namespace) -> dict:
    from ft_cli.config import compose
    from ft_cli.training.engine import train

    overrides = [
        "task=causal_lm",
        "model=tiny_gpt2",
        "data=demo_instructions",
        f"model.hidden_size={SIZE['n_embd']}",
        f"model.heads={SIZE['n_head']}",
        f"model.layers={SIZE['n_layer']}",
        f"task.pack_examples={str(args.ft_pack_examples).lower()}",
        f"train.group_by_length={str(args.ft_group_by_length).lower()}",
        "task.generation.eval_rows=0",  # the loss only, as the Trainer evaluates
        f"optimizer.lr={args.lr}",
        "optimizer.weight_decay=0.01",
        "schedule.warmup_ratio=0.05",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        "train.log_every=50",
        f"hardware.precision={args.precision}",
    ]
    if args.max_train_samples:
        overrides.append(f"data.max_train_samples={args.max_train_samples}")
    spec = compose.to_spec(compose.compose_config(overrides))
    called = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(spec, run_dir=run_dir)
        record = json.loads((Path(run_dir) / "metrics.json").read_text())
    examples = len(rows("train.jsonl", args.max_train_samples)) * args.epochs
    return {
        "time_to_first_step_s": called - T0 + record["time_to_first_step_s"],
        "train_seconds": record["train_seconds"],
        "examples": examples,
        "eval_loss": result.final["loss"],
    }


def run_hf(args: argparse.Namespace) -> dict:
    import datasets
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        set_seed,
    )
    from transformers.utils import logging

    logging.set_verbosity_error()
    datasets.disable_progress_bars()
    set_seed(42)
    path = str(ASSETS / "tiny_gpt2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path, **SIZE))

    def encoded(found: list[dict]) -> datasets.Dataset:
        ids, labels = [], []
        for row in found:
            prompt = tokenizer(row["prompt"])["input_ids"]
            answer = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
            answer = [*answer, tokenizer.eos_token_id]
            ids.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
        return datasets.Dataset.from_dict({"input_ids": ids, "labels": labels})

    train_set = encoded(rows("train.jsonl", args.max_train_samples))
    eval_set = encoded(rows("validation.jsonl"))
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)

    with tempfile.TemporaryDirectory() as out:
        steps = math.ceil(len(train_set) / args.batch_size) * args.epochs
        training_args = hf_training_args(
            args,
            out,
            num_train_epochs=args.epochs,
            warmup_steps=math.ceil(0.05 * steps),
            eval_strategy="no",
            per_device_eval_batch_size=64,
        )
        clock = train_clock()
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            data_collator=collate,
            callbacks=[clock],
        )
        trainer.train()
        loss = trainer.evaluate(eval_set)["eval_loss"]
    return {
        "time_to_first_step_s": (clock.first_step_at or time.perf_counter()) - T0,
        "train_seconds": clock.end - clock.begin,
        "examples": len(train_set) * args.epochs,
        "eval_loss": loss,
    }


def summarise(runs: list[dict]) -> dict:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    return {
        "time to first step (s)": median([r["time_to_first_step_s"] for r in runs]),
        "train examples/s": median([r["examples"] / r["train_seconds"] for r in runs]),
        "train seconds": median([r["train_seconds"] for r in runs]),
        "validation loss (responses)": median([r["eval_loss"] for r in runs]),
        "peak RSS (MiB)": median([r["peak_rss_mib"] for r in runs]),
    }


def main() -> None:
    args = parse_args()
    if args.side:
        child_main(args, {"ft": run_ft, "hf": run_hf})
        return
    runs = alternate(args.repeats, __file__)
    table = {side: summarise(r) for side, r in runs.items()}
    title = (
        f"ft vs HF Trainer, causal-LM SFT: GPT-2 (2 x 128) on ft's prompt/response pairs,"
        f" {args.epochs} epochs, batch {args.batch_size}, {args.precision},"
        f"{', ft packing examples' if args.ft_pack_examples else ''}"
    )
    print_ratio_table(title, table, f"medians of {args.repeats} alternating run(s) per side")
    if args.json:
        record = {"args": vars(args) | {"json": None}, "table": table}
        args.json.write_text(json.dumps(record | {"runs": runs}, indent=2, default=str))


if __name__ == "__main__":
    main()
