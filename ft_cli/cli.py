"""The `ft` command: `ft train [overrides]` (a Hydra app) and `ft recipes`.

Torch is imported only once a training job starts, so listing recipes and
showing configs stay fast.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from ft_cli.errors import FtError
from ft_cli.guards import RunInterrupted

USAGE = """\
usage: ft COMMAND [ARGS]

commands:
  train [OVERRIDES]   train from the composed config (a Hydra app: -m, --cfg job,
                      --info, --help, hydra.run.dir=DIR all work)
  recipes             list the recipes (+recipe=NAME) and what each is for
  runs PATH [--best]  table of the runs in a sweep dir (or any folder of runs),
                      best first; writes summary.csv/json; --best: the best run's dir

examples:
  ft train +recipe=demo
  ft train +recipe=minilm_mrpc data.path=../shared/data/glue/MRPC optimizer.lr=3e-5
  ft train -m +recipe=demo optimizer.lr=1e-5,5e-5
  ft runs multirun/2026-11-22/10-00-00-000000
"""


@dataclass
class _JobOutcomes:
    """What jobs reported back to the CLI.

    A single run's user error is kept here (not raised through Hydra, which
    would print extra lines); multirun failures are collected so that each job
    fails alone and the sweep goes on.
    """

    error: FtError | None = None
    failures: list[str] = field(default_factory=list)
    sweep_dir: str | None = None


_outcomes = _JobOutcomes()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command == "recipes":
        _list_recipes()
        sys.exit(0)
    if command == "train":
        sys.exit(run_train(rest))
    if command == "runs":
        sys.exit(_list_runs(rest))
    _fail(f"unknown command '{command}'; valid commands: train, recipes, runs (see ft --help)")
    sys.exit(2)


def _fail(message: str) -> None:
    print(f"ft: error: {message}", file=sys.stderr)


def _list_recipes() -> None:
    from rich.console import Console
    from rich.table import Table

    from ft_cli import compose

    table = Table(title="ft recipes (use with: ft train +recipe=NAME)")
    table.add_column("recipe", style="bold cyan", no_wrap=True)
    table.add_column("purpose")
    for path in compose.recipe_files():
        table.add_row(path.stem, compose.recipe_purpose(path))
    Console().print(table)


def _list_runs(args: list[str]) -> int:
    from ft_cli import runs

    try:
        return runs.main(args)
    except FtError as err:
        _fail(str(err))
        return 2


def _summarise_sweep(sweep_dir: str) -> None:
    """A finished sweep prints and writes its own summary (never failing the sweep)."""
    from pathlib import Path

    from ft_cli import runs

    try:
        rows = runs.summarise(Path(sweep_dir))
        runs.write_summary(Path(sweep_dir), rows)
        runs.print_table(rows, f"sweep {sweep_dir}: {len(rows)} job(s), best first")
    except (FtError, OSError) as err:
        _fail(f"sweep summary: {err}")


def run_train(overrides: list[str]) -> int:
    """Run `ft train`; returns the process exit code."""
    import hydra
    from omegaconf.errors import OmegaConfBaseException

    from ft_cli import compose, paths

    # Let errors reach us instead of Hydra's multi-line report; we print one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    _outcomes.error = None
    _outcomes.failures.clear()
    _outcomes.sweep_dir = None
    try:
        compose.register()
        # Flags and their values (--cfg job, --info defaults) are Hydra's to judge.
        compose.check_overrides([a for a in overrides if "=" in a and not a.startswith("-")])
        app = hydra.main(
            config_path=str(paths.config_dir()), config_name="config", version_base="1.3"
        )(_train_job)
        saved_argv = sys.argv
        sys.argv = ["ft", *overrides]
        try:
            app()
        finally:
            sys.argv = saved_argv
    except FtError as err:
        _fail(str(err))
        return 2
    except RunInterrupted as stop:
        print(str(stop), file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except SystemExit as err:
        return int(err.code or 0) if not isinstance(err.code, str) else 2
    except (OmegaConfBaseException, Exception) as err:
        if not _is_hydra_error(err):
            raise
        _fail(str(compose.explain_error(err)))
        return 2
    if _outcomes.sweep_dir is not None:
        _summarise_sweep(_outcomes.sweep_dir)
    if _outcomes.error is not None:
        _fail(str(_outcomes.error))
        return 2
    if _outcomes.failures:
        _fail(f"{len(_outcomes.failures)} job(s) failed: " + "; ".join(_outcomes.failures))
        return 1
    return 0


def _is_hydra_error(err: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(err, (HydraException, OmegaConfBaseException))


def _train_job(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ft_cli import compose

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = cfg.output_dir or hydra_cfg.runtime.output_dir
    if multirun:
        _outcomes.sweep_dir = hydra_cfg.sweep.dir
    try:
        spec = compose.to_spec(cfg)
        from ft_cli.engine import train

        result = train(spec, run_dir=run_dir, overrides=list(hydra_cfg.overrides.task))
    except Exception as err:
        if multirun:
            _record_failure(hydra_cfg, run_dir, err)
            return None
        if isinstance(err, FtError):
            _outcomes.error = err
            return None
        raise
    return result.metric


def _record_failure(hydra_cfg, run_dir: str, err: Exception) -> None:
    """Report one failed sweep job on one line and in its run dir; the sweep goes on."""
    line = str(err).splitlines()[0] if str(err) else type(err).__name__
    job = f"job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)})"
    _fail(f"{job}: {line}")
    _outcomes.failures.append(f"{job}: {line}")
    _write_failure(run_dir, err)


def _write_failure(run_dir: str, err: BaseException) -> None:
    import json
    import traceback
    from pathlib import Path

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    detail = "".join(traceback.format_exception(err))
    (Path(run_dir) / "error.txt").write_text(detail)
    status = {"status": "failed", "error": str(err).splitlines()[0] if str(err) else repr(err)}
    (Path(run_dir) / "metrics.json").write_text(json.dumps(status, indent=2) + "\n")
