"""Where a training step's time goes: ft's own step on the packaged MiniLM with MRPC batches,
or on any recipe's task (--recipe: demo_images, demo_ner, demo_asr, ...).

Builds the run exactly as `ft train` does (`training.setup.build`), then times
each phase of N steps with the clock (collation, forward, backward, optimizer)
and profiles the same steps with torch.profiler, summing each operator's own
time into kinds: matrix multiplies, attention, element-wise, normalisation,
casts and copies, the optimizer update, other. One table per precision.

    python bench/profile_step.py                          # fp32 and bf16, 20 steps each
    python bench/profile_step.py --precision bf16 --steps 40 --top 15
    python bench/profile_step.py --precision bf16 strategy.dropout=0   # without dropout
    python bench/profile_step.py --recipe demo_images --precision fp32  # another task
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_hf import DEFAULT_DATA, cpu_name

# Operator name (aten::NAME) -> kind; the first pattern found in the name wins
# ("=NAME": that exact name).
KINDS = [
    ("element-wise", ("log_softmax", "nll_loss")),  # the loss, not attention
    ("optimizer update", ("adam", "_foreach", "clip_grad", "linalg_vector_norm")),
    ("dropout masks", ("bernoulli", "random_", "=aten::ge")),
    ("attention", ("scaled_dot_product", "flash_attention", "_softmax", "softmax")),
    ("matmul", ("addmm", "::mm", "bmm", "baddbmm", "matmul", "linear", "mkldnn")),
    ("normalisation", ("layer_norm",)),
    ("casts and copies", ("_to_copy", "copy_", "::to", "contiguous", "clone", "cat", "index")),
    (
        "element-wise",
        (
            "add",
            "mul",
            "div",
            "sub",
            "gelu",
            "tanh",
            "dropout",
            "bernoulli",
            "where",
            "fill",
            "zero",
            "copysign",
            "sqrt",
            "pow",
            "exp",
            "neg",
            "lerp",
            "foreach",
            "masked",
            "sum",
            "mean",
            "threshold",
            "embedding",
            "nll",
            "log",
        ),
    ),
    ("allocation", ("empty", "resize_")),
    (
        "views",
        (
            "view",
            "transpose",
            "as_strided",
            "::t",
            "reshape",
            "expand",
            "permute",
            "slice",
            "select",
            "unsqueeze",
            "squeeze",
            "split",
            "detach",
            "alias",
        ),
    ),
]


def kind_of(name: str) -> str:
    for kind, patterns in KINDS:
        if any(name == p[1:] if p.startswith("=") else p in name for p in patterns):
            return kind
    return "other"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the MRPC TSV folder")
    parser.add_argument(
        "--recipe", default="minilm_mrpc", help="the run to profile (its own data but MRPC's)"
    )
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], nargs="+", default=["fp32", "bf16"]
    )
    parser.add_argument("--steps", type=int, default=20, help="steps timed and profiled")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top", type=int, default=8, help="also list the N costliest operators")
    parser.add_argument("--tiny", action="store_true", help="the tiny random BERT (smoke run)")
    parser.add_argument("overrides", nargs="*", help="ft overrides, e.g. strategy.dropout=0")
    return parser.parse_args()


def build(args: argparse.Namespace, precision: str):
    from ft_cli.config import compose
    from ft_cli.hardware import parallel
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.training import setup

    mrpc = args.recipe == "minilm_mrpc"
    overrides = [
        f"+recipe={args.recipe}",
        "strategy=full",
        *([f"data.path={args.data}"] if mrpc else []),
        f"hardware.precision={precision}",
        f"train.batch_size={args.batch_size}",
    ]
    if args.tiny and mrpc:
        overrides.append("model=tiny_bert")
    spec = compose.compose_spec([*overrides, *args.overrides])
    hw = setup_hardware(spec.hardware)
    run = setup.build(spec, setup.Purpose.train, parallel.Backend(), hw)
    return run, hw


def steps(run, hw, count: int, clock: dict[str, float] | None, profiler=None) -> None:
    """`count` optimizer steps as the engine takes them; phase times into `clock`."""
    params = [p for group in run.optimizer.param_groups for p in group["params"]]
    batches = iter(run.loader)
    for _ in range(count):
        marks = [time.perf_counter()]
        try:
            batch = next(batches)  # collation happens here
        except StopIteration:  # a small dataset's epoch is shorter than the steps asked
            batches = iter(run.loader)
            batch = next(batches)
        batch = {k: v.to(hw.device) for k, v in batch.items()}
        marks.append(time.perf_counter())
        with hw.autocast():
            predictions, targets = run.forward(batch)
        loss = run.objective.loss(predictions, targets)
        marks.append(time.perf_counter())
        hw.backward(loss)
        marks.append(time.perf_counter())
        hw.optimizer_step(run.optimizer, params, 1.0)
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if clock is not None:
            for phase, start, end in zip(PHASES, marks, marks[1:], strict=False):
                clock[phase] += end - start
        if profiler is not None:
            profiler.step()


PHASES = ("data and collation", "forward", "backward", "optimizer")


def profile(args: argparse.Namespace, precision: str) -> dict:
    run, hw = build(args, precision)
    run.sampler.set_epoch(0)
    run.applied.train_mode(run.net)
    steps(run, hw, 3, None)  # warm-up: first-call allocations and kernel choices
    clock: dict[str, float] = defaultdict(float)
    run.sampler.set_epoch(1)
    started = time.perf_counter()
    steps(run, hw, args.steps, clock)
    wall = time.perf_counter() - started
    run.sampler.set_epoch(2)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        steps(run, hw, args.steps, None)
    own: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::") or event.key.startswith("mkldnn"):
            own[kind_of(event.key)] += event.self_cpu_time_total / 1e6
            by_op[event.key] += event.self_cpu_time_total / 1e6
    return {
        "wall": wall,
        "clock": dict(clock),
        "kinds": dict(own),
        "ops": dict(by_op),
        "threads": torch.get_num_threads(),
    }


def show(args: argparse.Namespace, precision: str, result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    wall, steps_run = result["wall"], args.steps
    phases = Table(
        title=f"{precision}: a step's phases (clock, {steps_run} steps)", title_justify="left"
    )
    for column in ("phase", "ms per step", "share"):
        phases.add_column(column, justify="left" if column == "phase" else "right")
    timed = sum(result["clock"].values())
    for phase in PHASES:
        seconds = result["clock"].get(phase, 0.0)
        phases.add_row(phase, f"{1000 * seconds / steps_run:.1f}", f"{seconds / wall:.1%}")
    phases.add_row(
        "host overhead between phases",
        f"{1000 * (wall - timed) / steps_run:.1f}",
        f"{(wall - timed) / wall:.1%}",
    )
    console.print(phases)
    kinds = Table(
        title=f"{precision}: operator time by kind (profiler, self time)", title_justify="left"
    )
    for column in ("kind", "ms per step", "share of operator time"):
        kinds.add_column(column, justify="left" if column == "kind" else "right")
    total = sum(result["kinds"].values()) or 1.0
    for kind, seconds in sorted(result["kinds"].items(), key=lambda kv: -kv[1]):
        kinds.add_row(kind, f"{1000 * seconds / steps_run:.1f}", f"{seconds / total:.1%}")
    console.print(kinds)
    top = sorted(result["ops"].items(), key=lambda kv: -kv[1])[: args.top]
    console.print(
        "costliest operators: "
        + ", ".join(f"{name} {1000 * s / steps_run:.1f} ms" for name, s in top)
    )


def main() -> None:
    args = parse_args()
    if not (args.data / "train.tsv").is_file():
        sys.exit(f"no MRPC TSVs in {args.data}: pass --data FOLDER (train.tsv, dev.tsv)")
    for precision in args.precision:
        show(args, precision, profile(args, precision))
    print(
        f"{time.strftime('%Y-%m-%d')} on {cpu_name()}, {os.cpu_count()} cores,"
        f" batch {args.batch_size}, torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
