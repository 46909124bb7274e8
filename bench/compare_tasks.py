"""ft against the Hugging Face Trainer on every task, side by side.

For each task (bench/task_benches/: the model, data and Trainer job of that task's
example script), both sides train the same model on the same data for the same
optimizer steps and batch, each side in a fresh process, alternating over
--repeats; medians are printed. Two settings per task:

- defaults: ft at its own precision choice (`hardware.precision=auto`: bf16 where the
  CPU has it natively) and the Trainer at its default (fp32);
- bf16: both sides in bf16 autocast (equal precision).

Reported: train samples/s (training time only, evaluation aside), time to first step
(from the process start: imports, model load and data preparation included), peak
RSS, and the task's metric on its validation split after training.

    python bench/compare_tasks.py                          # every task, 3 repeats
    python bench/compare_tasks.py --tasks ner images --repeats 1 --steps 20

Needs `accelerate` for the Trainer (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()  # a side's clock starts before its heavy imports

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import processes  # noqa: E402
from compare_hf import cpu_name, train_clock  # noqa: E402
from task_benches import TASKS, common  # noqa: E402

SETTINGS = ("defaults", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per side")
    parser.add_argument("--max-eval", type=int, default=None, help="validation rows scored")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--side", choices=["ft", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(args: argparse.Namespace) -> None:
    """One side of one task in one setting, in this (fresh) process."""
    task = TASKS[args.task]
    if args.side == "ft" and hasattr(task, "run_ft"):  # a task with its own ft side
        result = task.run_ft(args, STARTED)
    elif args.side == "ft":
        result = common.run_ft(task.ft_overrides(args), args, task.METRIC, STARTED)
    else:
        result = task.run_hf(args, train_clock(), STARTED)
    result["peak_rss_mib"] = processes.own_peak_rss_mib()
    args.out.write_text(json.dumps(result))


def run_side(args: argparse.Namespace, task: str, setting: str, side: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        argv = [
            f"--steps={args.steps}",
            f"--batch-size={args.batch_size}",
            *([] if args.max_eval is None else [f"--max-eval={args.max_eval}"]),
            f"--task={task}",
            f"--precision={setting}",
            f"--side={side}",
            f"--out={out}",
        ]
        code, stderr = processes.run_script(__file__, argv)
        if code != 0:
            sys.exit(f"{task}, {setting}, {side}: failed\n{stderr[-3000:]}")
        return json.loads(out.read_text())


def summary(runs: list[dict]) -> dict:
    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    return {
        "samples/s": statistics.median(r["train_samples"] / r["train_seconds"] for r in runs),
        "first step s": median("time_to_first_step_s"),
        "peak RSS MiB": median("peak_rss_mib"),
        "metric": median("metric"),
        "precision": runs[0]["precision"],
    }


def main() -> None:
    args = parse_args()
    if args.side:
        child(args)
        return
    results: dict = {}
    for task in args.tasks:
        for setting in args.settings:
            runs: dict[str, list[dict]] = {"ft": [], "hf": []}
            for repeat in range(args.repeats):
                order = ("ft", "hf") if repeat % 2 == 0 else ("hf", "ft")  # interleaved
                for side in order:
                    print(f"{task} {setting} [{repeat + 1}/{args.repeats}] {side} ...", flush=True)
                    runs[side].append(run_side(args, task, setting, side))
            results.setdefault(task, {})[setting] = {
                "runs": runs,
                "ft": summary(runs["ft"]),
                "hf": summary(runs["hf"]),
            }
            save(args, results)  # after each row: a run stopped midway keeps what it had
    print_table(args, results)


def save(args: argparse.Namespace, results: dict) -> None:
    if args.json:
        record = {"args": vars(args) | {"json": None}, "cpu": cpu_name(), "results": results}
        args.json.write_text(json.dumps(record, indent=2, default=str))


def print_table(args: argparse.Namespace, results: dict) -> None:
    import os

    print(
        f"\nft vs the Trainer, {args.steps} steps of batch {args.batch_size}, medians of"
        f" {args.repeats}; {cpu_name()}, {os.cpu_count()} cores\n"
    )
    print(
        "| task | setting | precision ft / HF | samples/s ft | HF | ft / HF"
        " | first step s ft | HF | peak RSS MiB ft | HF | metric ft | HF |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for task, settings in results.items():
        metric = TASKS[task].METRIC
        for setting, found in settings.items():
            ft, hf = found["ft"], found["hf"]
            print(
                f"| {task} | {setting} | {ft['precision']} / {hf['precision']}"
                f" | {ft['samples/s']:.1f} | {hf['samples/s']:.1f}"
                f" | **{ft['samples/s'] / hf['samples/s']:.2f}x**"
                f" | {_number(ft['first step s'], 1)} | {_number(hf['first step s'], 1)}"
                f" | {ft['peak RSS MiB']:.0f} | {hf['peak RSS MiB']:.0f}"
                f" | {metric} {_number(ft['metric'])} | {_number(hf['metric'])} |"
            )


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
