"""One process against N data-parallel processes (DDP, FSDP), same job and global batch.

Each side is a separate `ft train` (the parallel ones under torchrun), run in
turn and repeated; the table shows medians of train samples/s and wall time,
and the final eval loss, which should agree across sides (same global batches).

    python bench/compare_parallel.py                      # MiniLM, demo data, 2 processes
    python bench/compare_parallel.py --processes 8        # on a machine with 8 GPUs
    python bench/compare_parallel.py --tiny --steps 20    # smoke run
    python bench/compare_parallel.py --sides single,ddp   # some sides only

On a CPU, torchrun gives each process one thread (OMP_NUM_THREADS=1) while the
single process uses every core, so the comparison there says little about GPUs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import processes
from compare_hf import cpu_name

SIDES = ("single", "ddp", "fsdp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="rows per process per step")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="the tiny random model")
    parser.add_argument(
        "--sides", default=",".join(SIDES), help=f"which of {', '.join(SIDES)} to run"
    )
    args = parser.parse_args(argv)
    args.sides = [side for side in args.sides.split(",") if side]
    unknown = sorted(set(args.sides) - set(SIDES))
    if unknown or not args.sides:
        parser.error(f"--sides: choose from {', '.join(SIDES)}")
    return args


def command(side: str, args: argparse.Namespace, run_dir: Path) -> list[str]:
    model = "model=tiny_bert" if args.tiny else "model=minilm_l6"
    job = [
        "train",
        model,
        "data=demo",
        "task=classification",
        f"train.max_steps={args.steps}",
        "train.eval_every=1000000",
        "train.log_every=10",
        "strategy.dropout=0.0",
        f"hydra.run.dir={run_dir}",
    ]
    if side == "single":
        return [*job, f"train.batch_size={args.batch * args.processes}"]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={args.processes}",
        "--standalone",
        "-m",
        "ft_cli",
        *job,
        f"train.batch_size={args.batch}",
        f"hardware.distributed={side}",
    ]


def run_side(side: str, args: argparse.Namespace, folder: Path) -> dict:
    """One side: one ft process, or torchrun's processes (see processes.py)."""
    run_dir = folder / side
    if side == "single":
        code, stderr, _ = processes.run_ft(command(side, args, run_dir))
    else:
        done = subprocess.run(command(side, args, run_dir), capture_output=True, text=True)
        code, stderr = done.returncode, done.stderr
    if code != 0:
        raise SystemExit(f"{side} failed:\n{stderr[-3000:]}")
    return json.loads((run_dir / "metrics.json").read_text())


def main() -> None:
    args = parse_args()
    results: dict[str, list[dict]] = {side: [] for side in args.sides}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for side in args.sides:  # in turn, so a slow spell of the machine hits every side
                results[side].append(run_side(side, args, Path(tmp) / str(repeat)))
    print(
        f"\n{args.steps} steps, global batch {args.batch * args.processes},"
        f" {'tiny_bert' if args.tiny else 'MiniLM'} on the demo data;"
        f" {args.repeats} run(s) a side, medians"
    )
    print(f"{'side':<8} {'processes':>9} {'samples/s':>10} {'wall s':>8} {'final loss':>11}")
    for side, runs in results.items():
        speed = statistics.median(r["train_samples_per_s"] for r in runs)
        wall = statistics.median(r["wall_seconds"] for r in runs)
        loss = runs[-1]["final"].get("loss", float("nan"))
        processes = 1 if side == "single" else args.processes
        print(f"{side:<8} {processes:>9} {speed:>10.1f} {wall:>8.1f} {loss:>11.5f}")
    print(f"machine: {cpu_name()}")


if __name__ == "__main__":
    main()
