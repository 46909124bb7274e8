"""ft against the Hugging Face Trainer on the same masked-LM job, side by side.

Continued MLM of the packaged MiniLM (or the tiny BERT with --tiny) on the
sentences of GLUE MRPC's train.tsv, packed into full blocks of --max-length
tokens on both sides, 15% of tokens masked (80/10/10), same batch, learning
rate, steps and precision. The HF side is `AutoModelForMaskedLM` +
`DataCollatorForLanguageModeling` + `Trainer`, with the usual `group_texts`
packing. Each side runs in its own fresh process; with --repeats the sides
alternate and medians are reported.

    python bench/compare_mlm.py --quick        # a few minutes
    python bench/compare_mlm.py --max-steps 200

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
    DEFAULT_DATA,
    alternate,
    child_main,
    hf_model,
    hf_training_args,
    print_ratio_table,
    read_split,
    train_clock,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.tsv")
    parser.add_argument("--max-steps", type=int, default=150, help="optimizer steps per side")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="both sides")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per side")
    parser.add_argument("--tiny", action="store_true", help="tiny random BERT (CI smoke run)")
    parser.add_argument("--quick", action="store_true", help="40 steps a side")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--side", choices=["ft", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.max_steps = min(args.max_steps, 40)
    return args


def run_ft(args: argparse.Namespace) -> dict:
    from ft_cli.config import compose
    from ft_cli.training.engine import train

    overrides = [
        "+recipe=minilm_mlm",
        f"data.path={args.data}",
        f"data.max_length={args.max_length}",
        "data.max_eval_samples=64",  # one short evaluation at the end; not timed
        "task.whole_word_mask=false",  # as DataCollatorForLanguageModeling
        f"optimizer.lr={args.lr}",
        f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.max_steps}",
        "train.log_every=50",
        f"hardware.precision={args.precision}",
    ]
    if args.tiny:
        overrides.append("model=tiny_bert")
    spec = compose.to_spec(compose.compose_config(overrides))
    called = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        train(spec, run_dir=run_dir)
        record = json.loads((Path(run_dir) / "metrics.json").read_text())
    return {
        "time_to_first_step_s": called - T0 + record["time_to_first_step_s"],
        "train_seconds": record["train_seconds"],
        "train_samples": record["train_samples"],
        "train_tokens": record["train_tokens_per_s"] * record["train_seconds"],
        "precision": record["precision"],
    }


def run_hf(args: argparse.Namespace) -> dict:
    import datasets
    from transformers import (
        AutoModelForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
    )

    tokenizer, model = hf_model(args, AutoModelForMaskedLM)

    # The usual group_texts: tokenize each text, concatenate, cut into full blocks.
    first, second, _ = read_split(args.data / "train.tsv", None)
    stream = [t for ids in tokenizer(first + second)["input_ids"] for t in ids]
    size = args.max_length
    blocks = [stream[i : i + size] for i in range(0, len(stream) - size + 1, size)]
    train_set = datasets.Dataset.from_dict({"input_ids": blocks})
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)

    with tempfile.TemporaryDirectory() as out:
        training_args = hf_training_args(
            args,
            out,
            max_steps=args.max_steps,
            warmup_steps=math.ceil(0.06 * args.max_steps),
            eval_strategy="no",
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
    return {
        "time_to_first_step_s": (clock.first_step_at or time.perf_counter()) - T0,
        "train_seconds": clock.end - clock.begin,
        "train_samples": trainer.state.global_step * args.batch_size,
        "train_tokens": trainer.state.global_step * args.batch_size * size,  # full blocks
        "precision": args.precision,
    }


def summarise(runs: list[dict]) -> dict:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    return {
        "time to first step (s)": median([r["time_to_first_step_s"] for r in runs]),
        "train tokens/s": median([r["train_tokens"] / r["train_seconds"] for r in runs]),
        "train blocks/s": median([r["train_samples"] / r["train_seconds"] for r in runs]),
        "train seconds": median([r["train_seconds"] for r in runs]),
        "peak RSS (MiB)": median([r["peak_rss_mib"] for r in runs]),
    }


def main() -> None:
    args = parse_args()
    if args.side:
        child_main(args, {"ft": run_ft, "hf": run_hf})
        return
    if not (args.data / "train.tsv").is_file():
        sys.exit(f"no MRPC TSVs in {args.data}: pass --data FOLDER (train.tsv, dev.tsv)")
    runs = alternate(args.repeats, __file__)
    table = {side: summarise(r) for side, r in runs.items()}
    job = "tiny BERT" if args.tiny else "MiniLM-L6"
    title = (
        f"ft vs HF Trainer, masked LM: {job} on MRPC text, {args.max_steps} steps,"
        f" batch {args.batch_size} x {args.max_length} tokens, {args.precision}"
    )
    print_ratio_table(title, table, f"medians of {args.repeats} alternating run(s) per side")
    if args.json:
        record = {"args": vars(args) | {"data": str(args.data), "json": None}, "table": table}
        args.json.write_text(json.dumps(record | {"runs": runs}, indent=2, default=str))


if __name__ == "__main__":
    main()
