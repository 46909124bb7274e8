"""The same Optuna search on the offline demo with and without pruning.

Each side runs `ft train -m +recipe=demo +search=lr_batch` for --trials trials over a
wide learning-rate range (1e-6 to 1e-2, log scale: many trials are hopeless, which
is what pruning is for), evaluating every --eval-every steps; the pruned side adds a
pruner (--pruner):

- successive_halving (default): at step --min-resource a trial goes on only if it is
  among the best 1/--reduction-factor of the trials at that step so far; the next
  rung is at --min-resource x --reduction-factor steps.
- median: a trial below the median of the earlier trials at the same step stops
  there, once --startup trials ran to the end and from step --warmup on.

Either waits until the metric says something: at the first evaluations every trial is
still near chance, and a good learning rate pruned there is lost (a run pruning at
step 8 of 40 showed it). A repeat runs both sides with the same sampler seed, in
alternating order. Printed per side: the best validation accuracy of the search and
its total training time (the sum of its trials' wall times), as the median over the
repeats and each repeat's.

    python bench/search_pruning.py        # 16 trials, 3 repeats (about an hour, 2 cores)
    python bench/search_pruning.py --tiny --trials 2 --repeats 1   # smoke run (tiny model)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from compare_hf import cpu_name  # noqa: E402
from processes import run_ft  # noqa: E402

SIDES = ("no pruning", "pruned")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=96, help="optimizer steps per trial")
    parser.add_argument("--eval-every", type=int, default=16)
    parser.add_argument(
        "--pruner", choices=["successive_halving", "median"], default="successive_halving"
    )
    parser.add_argument("--min-resource", type=int, default=32, help="halving: first rung")
    parser.add_argument("--reduction-factor", type=int, default=3, help="halving: 1/N go on")
    parser.add_argument("--startup", type=int, default=4, help="median: unpruned first trials")
    parser.add_argument(
        "--warmup", type=int, default=32, help="median: steps before a trial may be pruned"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny random BERT (smoke run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def search(args: argparse.Namespace, side: str, seed: int, folder: Path) -> dict:
    """One search; its best value, total training seconds and trials by state."""
    import optuna

    storage = f"sqlite:///{folder / 'study.db'}"
    command = [
        "train",
        "-m",
        "+recipe=demo",
        "+search=lr_batch",
        *(["model=tiny_bert", "data.max_length=32"] if args.tiny else []),
        f"train.max_steps={args.steps}",
        f"train.eval_every={args.eval_every}",
        "train.save_every=1000000",
        "train.log_every=1000000",
        "optimizer.lr=tag(log, interval(1e-6, 1e-2))",
        "train.batch_size=16",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.sampler.seed={seed}",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=bench",
        f"hydra.sweep.dir={folder / 'sweep'}",
    ]
    if side == "pruned" and args.pruner == "median":
        command += [
            "hydra.sweeper.pruner.name=median",
            f"hydra.sweeper.pruner.n_startup_trials={args.startup}",
            f"hydra.sweeper.pruner.n_warmup_steps={args.warmup}",
        ]
    elif side == "pruned":
        command += [
            "hydra.sweeper.pruner.name=successive_halving",
            f"hydra.sweeper.pruner.min_resource={args.min_resource}",
            f"hydra.sweeper.pruner.reduction_factor={args.reduction_factor}",
        ]
    start = time.perf_counter()
    code, stderr, _ = run_ft(command)
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{side}: ft exited {code}: {stderr[-2000:]}")
    study = optuna.load_study(study_name="bench", storage=storage)
    trials = study.get_trials(deepcopy=False)
    seconds = 0.0
    for trial in trials:
        record = json.loads((folder / "sweep" / str(trial.number) / "metrics.json").read_text())
        seconds += record["wall_seconds"]
    states = [t.state.name for t in trials]
    return {
        "best": study.best_value,
        "train_s": seconds,
        "wall_s": wall,
        "pruned": states.count("PRUNED"),
        "complete": states.count("COMPLETE"),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results: dict[str, list[dict]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="ft-search-bench-") as scratch:
        for repeat in range(args.repeats):
            order = SIDES if repeat % 2 == 0 else SIDES[::-1]  # interleaved
            for side in order:
                folder = Path(scratch) / f"{repeat}-{side.replace(' ', '-')}"
                folder.mkdir()
                found = search(args, side, repeat, folder)
                shutil.rmtree(folder)  # 16 runs' checkpoints and models: gigabytes
                results[side].append(found)
                print(f"repeat {repeat + 1}, {side}: {found}", file=sys.stderr)
    print(
        f"\n{args.trials}-trial search on the demo ({'tiny BERT' if args.tiny else 'MiniLM'},"
        f" {args.steps} steps a trial, an evaluation every {args.eval_every}; pruner"
        f" {args.pruner}),"
        f" {args.repeats} repeat(s); {cpu_name()}, {os.cpu_count()} cores"
    )
    header = f"{'side':<15}{'best accuracy':>16}{'train s':>10}{'pruned':>8}  each repeat"
    print(header)
    for side in SIDES:
        rows = results[side]
        best = statistics.median(r["best"] for r in rows)
        seconds = statistics.median(r["train_s"] for r in rows)
        pruned = statistics.median(r["pruned"] for r in rows)
        each = ", ".join(f"{r['best']:.3f} in {r['train_s']:.0f} s" for r in rows)
        print(f"{side:<15}{best:>16.3f}{seconds:>10.0f}{pruned:>8.0f}  {each}")
    plain = statistics.median(r["train_s"] for r in results[SIDES[0]])
    pruned_s = statistics.median(r["train_s"] for r in results[SIDES[1]])
    print(f"pruned / unpruned training time: {pruned_s / plain:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": None}, **results}))


if __name__ == "__main__":
    main()
