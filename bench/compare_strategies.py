"""Every fine-tuning strategy on the same job, side by side: MiniLM on MRPC.

Each strategy runs as its own `ft train` process (so peak memory is its own)
with the same seed, epochs and batch; the learning rate is the one each
strategy is normally run with (LoRA and a frozen backbone want larger ones).
`distill` learns from the `full` run's model (self-distillation, same size).

    python bench/compare_strategies.py                    # 3 epochs each
    python bench/compare_strategies.py --quick            # 20 steps each (smoke run)
    python bench/compare_strategies.py --only full lora
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import processes
from compare_hf import DEFAULT_DATA, cpu_name

STRATEGIES: dict[str, list[str]] = {
    "full": ["strategy=full", "optimizer.lr=5e-5"],
    "freeze_backbone": ["strategy=freeze_backbone", "optimizer.lr=1e-3"],
    "freeze_layers": ["strategy=freeze_layers", "strategy.frozen_layers=3", "optimizer.lr=5e-5"],
    "gradual_unfreeze": [
        "strategy=gradual_unfreeze",
        "strategy.unfreeze_unit=steps",
        "strategy.unfreeze_every=40",
        "optimizer.lr=5e-5",
    ],
    "llrd": ["strategy=llrd", "strategy.lr_decay=0.8", "optimizer.lr=1e-4"],
    "lora": ["strategy=lora", "optimizer.lr=5e-4"],
    "l2sp": ["strategy=l2sp", "optimizer.weight_decay=0", "optimizer.lr=5e-5"],
    "distill": ["strategy=distill", "optimizer.lr=5e-5"],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the TSVs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20 steps each")
    parser.add_argument("--tiny", action="store_true", help="the tiny random BERT (smoke run)")
    parser.add_argument("--only", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def run_strategy(name: str, args: argparse.Namespace, root: Path) -> dict:
    run_dir = root / name
    overrides = [
        "+recipe=minilm_mrpc",
        f"data.path={args.data}",
        f"train.epochs={args.epochs}",
        "train.seed=42",
        "train.log_every=50",
        f"hydra.run.dir={run_dir}",
        *STRATEGIES[name],
    ]
    if name == "distill":
        overrides.append(f"strategy.teacher.from_run={root / 'full'}")
    if args.quick:
        overrides += ["train.max_steps=20", "data.max_eval_samples=64"]
    if args.tiny:  # 2 layers: freeze the bottom one; l2sp needs trained weights to keep
        overrides = [o.replace("frozen_layers=3", "frozen_layers=1") for o in overrides]
        overrides.append("model=tiny_bert")
        if name == "l2sp":
            overrides.append(f"model.from_run={root / 'full'}")
    code, stderr, peak_rss_mib = processes.run_ft(["train", *overrides])
    if code != 0:
        sys.exit(f"strategy {name} failed:\n{stderr[-3000:]}")
    record = json.loads((run_dir / "metrics.json").read_text())
    plan = json.loads((run_dir / "strategy.json").read_text())
    final = record["final"]
    return {
        "dev accuracy": final["accuracy"],
        "dev F1": final["f1"],
        "trainable parameters": record["trainable_parameters"],
        "train samples/s": record["train_samples_per_s"],
        "peak RSS (MiB)": peak_rss_mib,
        "lr": next(o.split("=")[1] for o in STRATEGIES[name] if o.startswith("optimizer.lr")),
        "groups": len(plan["optimizer_groups"]),
    }


def main() -> None:
    args = parse_args()
    if not (args.data / "train.tsv").is_file():
        sys.exit(f"no MRPC TSVs in {args.data}: pass --data FOLDER (train.tsv, dev.tsv)")
    wanted = list(args.only)
    if ("distill" in wanted or args.tiny) and "full" not in wanted:
        wanted.insert(0, "full")  # the teacher (and, --tiny, l2sp's start)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in wanted:
            print(f"running {name} ...", flush=True)
            results[name] = run_strategy(name, args, Path(tmp))
    print_table(args, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_table(args: argparse.Namespace, results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    budget = "20 steps" if args.quick else f"{args.epochs} epochs"
    job = "tiny BERT" if args.tiny else "MiniLM-L6"
    out = Table(
        title=f"Strategies: {job} on MRPC, {budget}, batch 32, seed 42, fp32",
        title_justify="left",
    )
    columns = ["strategy", "lr", "dev accuracy", "dev F1", "trainable parameters"]
    for column in [*columns, "train samples/s", "peak RSS (MiB)"]:
        out.add_column(column, justify="left" if column == "strategy" else "right")
    for name, row in results.items():
        out.add_row(
            name,
            row["lr"],
            f"{row['dev accuracy']:.4f}",
            f"{row['dev F1']:.4f}",
            f"{row['trainable parameters']:,}",
            f"{row['train samples/s']:.1f}",
            f"{row['peak RSS (MiB)']:.0f}",
        )
    console = Console(width=140)
    console.print(out)
    console.print(f"{time.strftime('%Y-%m-%d')} on {cpu_name()}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
