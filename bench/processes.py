"""How a bench starts what it measures: a fresh process per side or per run (the default:
time to first step includes the imports, peak RSS is the run's own), or, with
FT_BENCH_IN_PROCESS=1, in the calling process. The test suite sets it to check the
benches' code without paying for an interpreter, torch and transformers start-up per side
(about 4 s of CPU each); the times and peak RSS printed then are not comparable."""

from __future__ import annotations

import contextlib
import io
import os
import resource
import runpy
import subprocess
import sys
from pathlib import Path

OFFLINE = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def in_process() -> bool:
    return os.environ.get("FT_BENCH_IN_PROCESS") == "1"


def own_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_script(script: str | Path, argv: list[str]) -> tuple[int, str]:
    """`python SCRIPT ARGV...`: its exit code and stderr (stdout is dropped)."""
    if not in_process():
        done = subprocess.run(
            [sys.executable, str(script), *argv],
            env={**os.environ, **OFFLINE},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        return done.returncode, done.stderr
    return _in_this_process(lambda: runpy.run_path(str(script), run_name="__main__"), script, argv)


def run_ft(args: list[str]) -> tuple[int, str, float]:
    """`ft ARGS...`: its exit code, stderr and peak RSS (MiB)."""
    if not in_process():
        command = [sys.executable, "-m", "ft_cli", *args]
        child = subprocess.Popen(
            command,
            env={**os.environ, **OFFLINE},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
        stderr = child.stderr.read().decode() if child.stderr else ""
        return os.waitstatus_to_exitcode(status), stderr, usage.ru_maxrss / 1024
    from ft_cli import cli

    code, said = _in_this_process(lambda: cli.main(list(args)), "ft", args)
    return code, said, own_peak_rss_mib()


def _in_this_process(call, program: str | Path, argv: list[str]) -> tuple[int, str]:
    os.environ.update(OFFLINE)
    said = io.StringIO()
    saved_argv = sys.argv
    sys.argv = [str(program), *argv]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(said):
            call()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            said.write(done.code)
    finally:
        sys.argv = saved_argv
    return code, said.getvalue()
