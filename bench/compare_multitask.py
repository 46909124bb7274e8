"""Does multi-task training help? MiniLM on MRPC + SST-2 against each task alone.

For each seed, three `ft train` processes with the same total optimizer steps,
batch and learning rate: the multi-task recipe `minilm_glue_mt` (both tasks, one
encoder), MRPC alone and SST-2 alone. Seeds are interleaved (multi, MRPC, SST-2,
next seed) so a slow spell of the machine hits every kind of run alike. Prints
each task's dev metrics (mean and spread over the seeds) and the time per run.

    python bench/compare_multitask.py                      # 600 steps, seeds 1 2 3
    python bench/compare_multitask.py --steps 300 --seeds 1
    python bench/compare_multitask.py --mixing round_robin --only multi-task
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import processes
from compare_hf import cpu_name

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
# SST-2 alone: the MRPC recipe's GLUE TSV data, with SST-2's columns and length.
SST2 = [
    "data.text_column=sentence",
    "data.text_pair_column=null",
    "data.label_column=label",
    "data.max_length=64",
]
# What each run reports: (task, metric) -> where it is in the run's final metrics.
REPORTED = {
    ("mrpc", "f1"): "f1",
    ("mrpc", "accuracy"): "accuracy",
    ("sst2", "accuracy"): "accuracy",
}


KINDS = ["multi-task", "MRPC alone", "SST-2 alone"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue", type=Path, default=GLUE, help="folder with MRPC/ and SST-2/")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps of every run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--mixing", default="temperature", help="the multi-task run's mixing")
    parser.add_argument("--only", nargs="+", choices=KINDS, default=KINDS, help="runs to make")
    parser.add_argument("--tiny", action="store_true", help="the tiny random BERT (smoke run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    mrpc, sst2 = args.glue / "MRPC", args.glue / "SST-2"
    common = [
        f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch}",
        "train.eval_every=1000000",
        "train.log_every=100",
        "optimizer.lr=5e-5",
        "train.export=last",
    ]
    multi, sst2_alone = [], []
    if args.tiny:  # a smoke run: the tiny model, 2,000 SST-2 rows
        common.append("model=tiny_bert")
        multi, sst2_alone = (
            ["task.tasks.sst2.data.max_train_samples=2000"],
            ["data.max_train_samples=2000"],
        )
    return {
        "multi-task": [
            "+recipe=minilm_glue_mt",
            f"task.mixing={args.mixing}",
            f"task.tasks.mrpc.data.path={mrpc}",
            f"task.tasks.sst2.data.path={sst2}",
            *common,
            *multi,
        ],
        "MRPC alone": ["+recipe=minilm_mrpc", f"data.path={mrpc}", *common],
        "SST-2 alone": ["+recipe=minilm_mrpc", *SST2, f"data.path={sst2}", *common, *sst2_alone],
    }


def run(overrides: list[str], run_dir: Path, seed: int) -> dict:
    started = time.perf_counter()
    code, stderr, _ = processes.run_ft(
        ["train", *overrides, f"train.seed={seed}", f"hydra.run.dir={run_dir}"]
    )
    if code != 0:
        sys.exit(f"{' '.join(overrides[:2])} failed:\n{stderr[-3000:]}")
    record = json.loads((run_dir / "metrics.json").read_text())
    return {**record, "seconds": time.perf_counter() - started}


def scores(kind: str, record: dict) -> dict[tuple[str, str], float]:
    final = record["final"]
    if kind == "multi-task":
        return {key: final[f"{key[0]}/{metric}"] for key, metric in REPORTED.items()}
    task = "mrpc" if kind == "MRPC alone" else "sst2"
    return {key: final[metric] for key, metric in REPORTED.items() if key[0] == task}


def main() -> None:
    args = parse_args()
    for task in ("MRPC", "SST-2"):
        if not (args.glue / task / "train.tsv").is_file():
            sys.exit(f"no {task} TSVs in {args.glue / task}: pass --glue FOLDER")
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for kind, overrides in commands(args).items():
                if kind not in args.only:
                    continue
                print(f"seed {seed}: {kind} ...", flush=True)
                record = run(overrides, Path(tmp) / f"{kind}-{seed}".replace(" ", "_"), seed)
                results.setdefault(kind, []).append(
                    {
                        "seed": seed,
                        "seconds": record["seconds"],
                        "scores": {"/".join(k): v for k, v in scores(kind, record).items()},
                    }
                )
    print_table(args, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}"


def print_table(args: argparse.Namespace, results: dict[str, list[dict]]) -> None:
    from rich.console import Console
    from rich.table import Table

    job = "tiny BERT" if args.tiny else "MiniLM-L6"
    seeds = ", ".join(str(s) for s in args.seeds)
    out = Table(
        title=f"Multi-task vs single-task: {job}, {args.steps} steps x batch {args.batch} each,"
        f" seeds {seeds} (mean ± sd), multi-task mixing {args.mixing}",
        title_justify="left",
    )
    columns = ["run", *("/".join(k) for k in REPORTED), "seconds per run (median)"]
    for column in columns:
        out.add_column(column, justify="left" if column == "run" else "right")
    for kind, runs in results.items():
        cells = []
        for key in REPORTED:
            values = [r["scores"]["/".join(key)] for r in runs if "/".join(key) in r["scores"]]
            cells.append(_spread(values) if values else "")
        seconds = statistics.median(r["seconds"] for r in runs)
        out.add_row(kind, *cells, f"{seconds:.0f}")
    console = Console(width=140)
    console.print(out)
    console.print(f"{time.strftime('%Y-%m-%d')} on {cpu_name()}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
