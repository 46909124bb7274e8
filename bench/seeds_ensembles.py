"""Seeds, ensembles, distillation and augmentation on GLUE with the packaged MiniLM.

For each task, every arm is a seed sweep of `ft train` (the recipe's settings,
`--seeds` seeds each), read back with ft's own seed statistics:

- single runs: mean +- std of the best dev accuracy / F1;
- the ensemble of those runs: `ft eval SWEEP --ensemble all` (mean, vote,
  weighted, greedy, stack; greedy and weighted are fit on dev itself,
  stack is cross-validated there);
- the ensemble distilled into one model (`strategy=distill`, teachers = the
  single runs), one run per seed;
- each augmentation (`augment=NAME`, its shipped setting) against none.

    python bench/seeds_ensembles.py                         # MRPC and SST-2 (1,000 rows)
    python bench/seeds_ensembles.py --tasks sst2 --augment token_mask mixup
    python bench/seeds_ensembles.py --reuse mrpc=SWEEP_DIR  # single runs already trained
    python bench/seeds_ensembles.py --tiny --quick          # smoke run (tiny model)

Sweeps are kept under --out (resumable: an arm whose sweep has a summary is
read, not re-run).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from compare_hf import cpu_name  # noqa: E402

from ft_cli.config import compose  # noqa: E402
from ft_cli.rundir import records, seeds  # noqa: E402

GLUE = REPO.parent / "shared" / "data" / "glue"
AUGMENTATIONS = [
    "token_mask",
    "token_delete",
    "token_swap",
    "span_cutoff",
    "embedding_noise",
    "mixup",
]


def task_overrides(task: str, glue: Path) -> list[str]:
    base = ["+recipe=minilm_mrpc", "train.log_every=50"]
    if task == "mrpc":
        return [*base, f"data.path={glue / 'MRPC'}"]
    return [
        *base,
        f"data.path={glue / 'SST-2'}",
        "data.text_column=sentence",
        "data.text_pair_column=null",
        "data.label_column=label",
        "data.max_train_samples=1000",
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue", type=Path, default=GLUE, help="folder with MRPC/ and SST-2/")
    parser.add_argument("--tasks", nargs="+", choices=["mrpc", "sst2"], default=["mrpc", "sst2"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--augment", nargs="*", choices=AUGMENTATIONS, default=AUGMENTATIONS)
    parser.add_argument("--no-distill", action="store_true")
    parser.add_argument(
        "--reuse",
        nargs="*",
        default=[],
        metavar="TASK=SWEEP_DIR",
        help="single runs of the recipe already trained (one per seed)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_runs/seeds_ensembles"))
    parser.add_argument("--tiny", action="store_true", help="the tiny random BERT (smoke run)")
    parser.add_argument("--quick", action="store_true", help="8 steps per run (smoke run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def ft(*args: str) -> None:
    """Run an ft command in this process (no interpreter and torch start per command; the
    figures here are accuracies, not times), its output kept for a failure's message."""
    from ft_cli import cli

    os.environ["HF_HUB_OFFLINE"] = "1"
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        try:
            cli.main(list(args))
            code = 0
        except SystemExit as done:
            code = done.code or 0
    if code != 0:
        raise SystemExit(f"failed: ft {' '.join(args)}\n{said.getvalue()[-3000:]}")


def sweep(root: Path, overrides: list[str], seed_list: list[int]) -> list[seeds.SeedGroup]:
    """Train one arm over the seeds (unless its summary exists); its seed statistics."""
    if not (root / "summary.json").is_file():
        seed_values = ",".join(str(s) for s in seed_list)
        ft("train", "-m", *overrides, f"train.seed={seed_values}", f"hydra.sweep.dir={root}")
    return seeds.seed_groups(records.summarise(root))


def spread(groups: list[seeds.SeedGroup], metric: str) -> dict[str, float] | None:
    stats = groups[0].stats.get(f"best {metric}") if groups else None
    return None if stats is None else {k: float(v) for k, v in stats.items()}


def ensemble_rows(single: Path) -> dict[str, dict[str, float]]:
    record = single / "ensemble_metrics.json"
    if not record.is_file():
        ft("eval", str(single), "--ensemble", "all")
    models = json.loads(record.read_text())["models"]
    return {
        m["name"].removeprefix("ensemble: "): m["metrics"]
        for m in models
        if m["name"].startswith("ensemble: ")
    }


def run_task(task: str, args: argparse.Namespace, extra: list[str]) -> dict:
    root = args.out / task
    base = [*task_overrides(task, args.glue), *extra]
    reuse = dict(item.split("=", 1) for item in args.reuse)
    started = time.perf_counter()
    single_dir = Path(reuse[task]) if task in reuse else root / "single"
    arms = {"single runs": sweep(single_dir, base, args.seeds)}
    ensembles = ensemble_rows(single_dir)
    if not args.no_distill:
        # The recipe's layer-wise lr decay carries over to the distilled student.
        decay = compose.compose_spec(base).strategy.lr_decay
        teacher = [
            f"strategy.teacher.from_run={single_dir.resolve()}",
            f"strategy.lr_decay={decay}",
        ]
        arms["distilled ensemble"] = sweep(
            root / "distill", [*base, "strategy=distill", *teacher], args.seeds
        )
    for name in args.augment:
        arms[f"augment={name}"] = sweep(
            root / f"augment_{name}", [*base, f"augment={name}"], args.seeds
        )
    return {
        "arms": {name: {m: spread(g, m) for m in ("accuracy", "f1")} for name, g in arms.items()},
        "ensembles": ensembles,
        "minutes": (time.perf_counter() - started) / 60,
    }


def shown(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "-"
    std = "" if math.isnan(stats["std"]) else f" ± {stats['std']:.3f}"
    return f"{stats['mean']:.3f}{std}"


def print_table(results: dict[str, dict], seed_count: int) -> None:
    print(
        f"\nCPU: {cpu_name()}; {seed_count} seeds per arm; dev accuracy / F1 of each run's best"
        " checkpoint (mean ± sample std); ensembles: one number each\n"
    )
    print("| task | arm | accuracy | F1 | accuracy vs single |")
    print("| --- | --- | ---: | ---: | ---: |")
    for task, result in results.items():
        base = result["arms"]["single runs"]["accuracy"]
        for name, metrics in result["arms"].items():
            delta = metrics["accuracy"]["mean"] - base["mean"] if metrics["accuracy"] else math.nan
            gap = "" if name == "single runs" else f"{delta:+.3f}"
            print(
                f"| {task} | {name} | {shown(metrics['accuracy'])} | {shown(metrics['f1'])} |"
                f" {gap} |"
            )
        for method, metrics in result["ensembles"].items():
            print(
                f"| {task} | ensemble: {method} | {metrics['accuracy']:.3f} |"
                f" {metrics['f1']:.3f} | {metrics['accuracy'] - base['mean']:+.3f} |"
            )
        print(f"| {task} | (wall time) | {result['minutes']:.0f} min | | |")


def main() -> None:
    args = parse_args()
    extra = []
    if args.tiny:
        extra += [
            "model=tiny_bert",
            "data.max_length=32",
            "data.max_eval_samples=64",
            "hardware.precision=fp32",
        ]
    if args.quick:
        extra += ["train.max_steps=8", "data.max_train_samples=128"]
    results = {task: run_task(task, args, extra) for task in args.tasks}
    print_table(results, len(args.seeds))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
