"""ft at another git revision against this checkout, on the same job, side by side.

Each side runs `python -m ft_cli train` in a fresh process (its own imports),
alternating, and the medians of train samples/s, time to first step and the
process's peak RSS are printed with their ratio. The other revision is checked
out into a temporary git worktree; both sides use this environment's packages.

    python bench/compare_revisions.py --base 7756cb6            # MiniLM on MRPC, 40 steps
    python bench/compare_revisions.py --base HEAD~3 --repeats 3 --steps 60 --precision bf16
    python bench/compare_revisions.py --base HEAD~1 --recipe demo_ner --steps 60 --repeats 5

`--recipe` runs that recipe's own job (its data, model and settings) for `--steps`
steps instead of MiniLM on MRPC.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MRPC = REPO.parent / "shared" / "data" / "glue" / "MRPC"


def run(source: Path, run_dir: Path, steps: int, precision: str, recipe: str | None) -> dict:
    # The same job whatever the recipe of a revision says: plain fine-tuning at 5e-5.
    mrpc = ["+recipe=minilm_mrpc", "strategy=full", "optimizer.lr=5e-5", f"data.path={MRPC}"]
    args = [
        *(mrpc if recipe is None else [f"+recipe={recipe}"]),
        f"train.max_steps={steps}",
        "train.log_every=10",
        f"hardware.precision={precision}",
        "train.eval_every=100000",
        "data.max_eval_samples=64",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(source), "HF_HUB_OFFLINE": "1"}
    errors = run_dir.parent / f"{run_dir.name}.stderr"
    with open(errors, "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "ft_cli", "train", *args],
            env=env,
            cwd=run_dir.parent,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{source}: ft train failed: {errors.read_text().strip().splitlines()[-1]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {**metrics, "peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare against")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32")
    parser.add_argument("--recipe", default=None, help="a recipe's own job instead of MRPC's")
    args = parser.parse_args()
    if args.recipe is None and not MRPC.is_dir():
        sys.exit(f"needs the GLUE MRPC TSVs in {MRPC}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(base), args.base], cwd=REPO, check=True
        )
        try:
            sides = {args.base: base, "this checkout": REPO}
            results: dict[str, list[dict]] = {name: [] for name in sides}
            for repeat in range(args.repeats):
                for name, source in sides.items():
                    run_dir = Path(tmp) / f"{name.replace(' ', '_')}-{repeat}"
                    results[name].append(
                        run(source, run_dir, args.steps, args.precision, args.recipe)
                    )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO)
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "?")
    precision = args.precision
    job = "MiniLM on MRPC" if args.recipe is None else f"+recipe={args.recipe}"
    print(f"{job}, {args.steps} steps, {precision}, medians of {args.repeats}; {cpu}")
    print(f"{'metric':<26}{args.base:>16}{'this checkout':>16}{'ratio':>9}")
    for key in ("train_samples_per_s", "time_to_first_step_s", "peak_rss_mib"):
        a, b = (statistics.median(r[key] for r in results[name]) for name in sides)
        print(f"{key:<26}{a:>16.2f}{b:>16.2f}{b / a:>8.2f}x")


if __name__ == "__main__":
    main()
