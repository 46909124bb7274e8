"""Several `ft train` runs in one torchrun start, for the tests of data-parallel training.

    python -m torch.distributed.run --nproc-per-node=2 --standalone torchrun_jobs.py JOBS

Each start costs every rank (and the agent) an interpreter, torch and transformers: far
more than a tiny run. Here the ranks join one process group and run the jobs of JOBS (a
JSON file) in turn, each through `ft train`'s own entry point. A job is
`{"name", "args", "env": {...}, "copy_cut": [from, to, step]}`: `env` is set for the
job alone, and `copy_cut` first copies a finished run dir (an earlier job's) and cuts it
after a checkpoint, as a crash would leave it. Every rank writes its jobs' exit codes
and output to JOBS.rank<N>.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

from crash import cut_after


def run_jobs(jobs: list[dict]) -> dict[str, dict]:
    from ft_cli import cli
    from ft_cli.hardware import distributed

    place = distributed.init()
    leave = distributed.shutdown
    distributed.shutdown = lambda: None  # the group outlives each job
    results = {}
    try:
        for job in jobs:
            if "copy_cut" in job and place.is_main:
                source, target, step = job["copy_cut"]
                shutil.copytree(source, target)
                cut_after(Path(target), step)
            distributed.barrier(place)
            saved_env = dict(os.environ)
            os.environ.update(job.get("env", {}))
            out, err = io.StringIO(), io.StringIO()
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    code = cli.run_train(job["args"])
            finally:
                os.environ.clear()
                os.environ.update(saved_env)
            results[job["name"]] = {
                "code": code,
                "stdout": out.getvalue(),
                "stderr": err.getvalue(),
            }
            distributed.barrier(place)
    finally:
        distributed.shutdown = leave
        leave()
    return results


if __name__ == "__main__":
    spec = Path(sys.argv[1])
    done = run_jobs(json.loads(spec.read_text()))
    rank = os.environ.get("RANK", "0")
    spec.with_name(f"{spec.name}.rank{rank}.json").write_text(json.dumps(done))
