"""Domain-adaptive pretraining, then fine-tuning, against fine-tuning alone on MRPC.

Three ft runs in one process: continued masked-LM of the packaged MiniLM on
the MRPC sentences (recipe minilm_mlm), a fine-tune of that export on MRPC
(recipe minilm_mrpc with model.from_run), and the same fine-tune of the
original MiniLM. Both fine-tunes have the same budget (epochs, batch, lr,
seed); the table gives their dev accuracy and F1 side by side.

    python bench/dapt_mrpc.py                  # 3 MLM epochs, 3 fine-tune epochs each
    python bench/dapt_mrpc.py --quick          # a smoke run of a few steps each
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_hf import DEFAULT_DATA, cpu_name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the TSVs")
    parser.add_argument("--mlm-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tune epochs (both sides)")
    parser.add_argument("--quick", action="store_true", help="a few steps each (smoke run)")
    parser.add_argument("--tiny", action="store_true", help="the tiny random BERT")
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args()


def run(overrides: list[str], run_dir: Path) -> tuple[dict, float]:
    from ft_cli.config import compose
    from ft_cli.training.engine import train

    spec = compose.to_spec(compose.compose_config(overrides))
    start = time.perf_counter()
    result = train(spec, run_dir=run_dir)
    return result.final, time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if not (args.data / "train.tsv").is_file():
        sys.exit(f"no MRPC TSVs in {args.data}: pass --data FOLDER (train.tsv, dev.tsv)")
    common = [f"data.path={args.data}", f"train.seed={args.seed}", "train.log_every=50"]
    if args.tiny:
        common.append("model=tiny_bert")
    mlm_budget = [f"train.epochs={args.mlm_epochs}"]
    tune_budget = [f"train.epochs={args.epochs}"]
    if args.quick:
        mlm_budget = tune_budget = ["train.max_steps=5", "data.max_eval_samples=64"]
    with tempfile.TemporaryDirectory() as tmp:
        pretrain_dir = Path(tmp) / "mlm"
        mlm_final, mlm_seconds = run(["+recipe=minilm_mlm", *common, *mlm_budget], pretrain_dir)
        tune = ["+recipe=minilm_mrpc", *common, *tune_budget]
        dapt, dapt_seconds = run([*tune, f"model.from_run={pretrain_dir}"], Path(tmp) / "dapt")
        alone, alone_seconds = run(tune, Path(tmp) / "alone")
    print_table(args, mlm_final, mlm_seconds, (dapt, dapt_seconds), (alone, alone_seconds))


def print_table(args, mlm_final: dict, mlm_seconds: float, dapt: tuple, alone: tuple) -> None:
    from rich.console import Console
    from rich.table import Table

    budget = "a few steps" if args.quick else f"{args.epochs} epochs"
    out = Table(
        title=f"MRPC dev after fine-tuning ({budget}): with and without continued MLM",
        title_justify="left",
    )
    for column in ("metric", "MLM then fine-tune", "fine-tune alone", "difference"):
        out.add_column(column, justify="right" if column != "metric" else "left")
    for metric in ("accuracy", "f1", "mcc"):
        a, b = dapt[0][metric], alone[0][metric]
        out.add_row(metric, f"{a:.4f}", f"{b:.4f}", f"{a - b:+.4f}")
    out.add_row("fine-tune wall s", f"{dapt[1]:.0f}", f"{alone[1]:.0f}", "")
    console = Console(width=140)
    console.print(out)
    mlm_budget = "a few steps" if args.quick else f"{args.mlm_epochs} epochs"
    console.print(
        f"continued MLM ({mlm_budget}): dev loss {mlm_final['loss']:.3f}, perplexity"
        f" {mlm_final['perplexity']:.2f}, masked-token accuracy {mlm_final['accuracy']:.3f},"
        f" {mlm_seconds:.0f} s"
    )
    console.print(f"{time.strftime('%Y-%m-%d')} on {cpu_name()}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
