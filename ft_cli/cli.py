"""The `ft` command: `ft train [overrides]` (a Hydra app) and `ft recipes`.

Torch is imported only once a training job starts, so listing recipes and
showing configs stay fast.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import sys
from dataclasses import dataclass

from ft_cli.errors import FtError
from ft_cli.training.guards import RunInterrupted, StartupInterrupts

USAGE = """\
usage: ft COMMAND [ARGS]

commands:
  train [OVERRIDES]   train from the composed config (a Hydra app: -m, --cfg job,
                      --info, --help, hydra.run.dir=DIR all work)
  recipes             list the recipes (+recipe=NAME) and what each is for
  runs PATH [--best]  table of the runs in a sweep dir (or any folder of runs),
                      best first; writes summary.csv/json; --best: the best run's dir
  eval RUN [--split S | --file F] [OVERRIDES]
                      metrics of a trained model (run dir, model/, checkpoint) on a
                      split of its run's data or a file; writes eval_metrics.json
  explain [OVERRIDES]
                      what ft train would do, without training: config origins,
                      trainable parameters per layer group, optimizer groups, steps,
                      the lr schedule, device/precision and a memory estimate
  report RUN_OR_SWEEP [--no-confusion]
                      report.html and PNG plots: loss, lr and eval metrics over steps,
                      a confusion matrix, a sweep's metric against its hyperparameters
  predict RUN --input FILE [--output FILE]
                      the rows of a csv/tsv/jsonl/parquet file with their predicted
                      label and class probabilities (or score, or tags), in input order
  eval RUNS_OR_SWEEP... --ensemble mean|vote|weighted|greedy|stack|all
                      every member and each ensemble method in one table
  ensemble RUNS_OR_SWEEP... --method METHOD --output DIR
                      fit an ensemble on the validation split and save it; ft predict
                      DIR and ft eval DIR use it like a run
  models [NAME...] [--for OVERRIDES]
                      presets or any model: parameters, FLOPs, memory, epoch time
  export RUN [--quantize int8]
                      the model as ONNX (checked against torch), and an int8 copy
  serve RUN_OR_EXPORT [--host H] [--port P] [--backend torch|onnxruntime]
                      an HTTP server: POST /predict, GET /health, /info, /docs

examples:
  ft train +recipe=demo
  ft train +recipe=minilm_mrpc data.path=../shared/data/glue/MRPC optimizer.lr=3e-5
  ft train -m +recipe=demo optimizer.lr=1e-5,5e-5
  ft train -m +recipe=demo +search=lr_batch          (Optuna; pip install 'ft-cli[sweep]')
  ft train -m +recipe=demo +launcher=joblib optimizer.lr=1e-5,5e-5   (or +launcher=slurm)
  torchrun --nproc-per-node=4 -m ft_cli train +recipe=minilm_mrpc data.path=DIR
  ft runs multirun/2026-11-22/10-00-00-000000
"""


@dataclass
class _JobOutcomes:
    """What a single run reported back to the CLI.

    Its user error is kept here, not raised through Hydra, which would print
    extra lines. Sweep jobs fail alone: each writes its failure into its run
    dir, and the sweep's summary (ft_cli.sweep) reads them back.
    """

    error: FtError | None = None


_outcomes = _JobOutcomes()

# A run dir's time stamp, as configs/config.yaml writes it (outputs/DATE/TIME).
RUN_DIR_STAMP = "%Y-%m-%d/%H-%M-%S-%f"


def _quiet_interrupt(kind: type, value: BaseException, trace: object) -> None:
    """Ctrl-C before ft's own handlers are in place (imports at start-up): one line, not
    a traceback; the process still ends as interrupted (exit 130)."""
    if issubclass(kind, KeyboardInterrupt):
        _fail("interrupted")
        return
    if StartupInterrupts.received:  # the aftermath of a dropped Ctrl-C (see run_train)
        _fail("interrupted")
        sys.stderr.flush()
        os._exit(130)
    sys.__excepthook__(kind, value, trace)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    sys.excepthook = _quiet_interrupt
    if argv is None:  # the process's own entry point, not a caller in the same process
        StartupInterrupts.install()
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        sys.exit(0 if args else 2)
    if args[0] in ("-sc", "--shell-completion"):
        # The installed completion script asks `ft -sc query=bash`: train's config answers.
        _completion_line_without_command()
        args = ["train", *args]
    command, rest = args[0], args[1:]
    if command == "recipes":
        _list_recipes()
        sys.exit(0)
    if command == "train":
        sys.exit(run_train(rest))
    if command == "runs":
        sys.exit(_list_runs(rest))
    if command in TOOLS:
        sys.exit(_run_tool(command, rest))
    valid = ", ".join(["train", "recipes", "runs", *TOOLS])
    _fail(f"unknown command '{command}'; valid commands: {valid} (see ft --help)")
    sys.exit(2)


def _completion_line_without_command() -> None:
    """Hydra completes `APP OVERRIDES...`: drop the `train` of `ft train ...` from the line."""
    line = os.environ.get("COMP_LINE", "")
    match = re.match(r"(\S+)(\s+train)(?=\s|$)", line)
    if match is None:
        return
    os.environ["COMP_LINE"] = match.group(1) + line[match.end() :]
    point = int(os.environ.get("COMP_POINT", len(line)))
    os.environ["COMP_POINT"] = str(max(len(match.group(1)), point - len(match.group(2))))


def _fail(message: str) -> None:
    print(f"ft: error: {message}", file=sys.stderr)


def _list_recipes() -> None:
    from rich.console import Console
    from rich.table import Table

    from ft_cli.config import compose

    table = Table(title="ft recipes (use with: ft train +recipe=NAME)")
    table.add_column("recipe", style="bold cyan", no_wrap=True)
    table.add_column("purpose")
    compose.register()
    for path in compose.recipe_files():
        broken = compose.broken_recipes.get(path.stem)
        purpose = compose.recipe_purpose(path)
        table.add_row(path.stem, f"[red]cannot be read[/red]: {broken}" if broken else purpose)
    Console().print(table)


# Commands that use what training made: module ft_cli.commands.NAME, main(args) -> exit code.
TOOLS = {
    "calibrate": "calibrate",
    "data": "data",
    "eval": "evaluation",
    "predict": "predict",
    "explain": "explain",
    "report": "report",
    "ensemble": "ensemble",
    "models": "models",
    "export": "export",
    "serve": "serve",
}


def _run_tool(command: str, args: list[str]) -> int:
    import importlib

    from omegaconf.errors import OmegaConfBaseException

    from ft_cli.config import compose

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return importlib.import_module(f"ft_cli.commands.{TOOLS[command]}").main(args)
    except FtError as err:
        _fail(f"ft {command}: {err}")
        return 2
    except OmegaConfBaseException as err:
        _fail(f"ft {command}: {compose.explain_error(err)}")
        return 2
    except Exception as err:
        cause = disk_cause(err)
        if cause is None:
            raise
        _fail(f"ft {command}: {disk_message(cause)}")
        return 2


# A file that cannot be written or read for a reason of the disk, not of ft.
DISK_ERRORS = (
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENOENT,
    errno.EFBIG,
)


def disk_cause(err: BaseException) -> OSError | None:
    """The OSError about a named file behind `err` (itself, or what it was raised from),
    when the disk is the reason: read-only, full, forbidden, missing."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.filename is not None and err.errno in DISK_ERRORS:
            return err
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return None


def disk_message(err: OSError) -> str:
    reason = err.strerror or type(err).__name__
    fix = (
        "free some space or write elsewhere"
        if err.errno in (errno.ENOSPC, errno.EDQUOT)
        else "name a writable place or check the path"
    )
    return f"cannot use {err.filename}: {reason}; {fix}"


def _list_runs(args: list[str]) -> int:
    from ft_cli.commands import runs

    try:
        return runs.main(args)
    except FtError as err:
        _fail(str(err))
        return 2


def run_train(overrides: list[str]) -> int:
    """Run `ft train`; returns the process exit code."""
    from omegaconf.errors import OmegaConfBaseException

    from ft_cli.commands import sweep
    from ft_cli.config import compose

    # Let errors reach us instead of Hydra's multi-line report; we print one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    _outcomes.error = None
    sweep.finished.clear()
    try:
        _launch(overrides)
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
        if StartupInterrupts.received:
            # A Ctrl-C that Python dropped mid-import or mid-construction can leave a
            # library object half built; what fails after it is the interrupt's doing.
            _fail("interrupted")
            return 130
        cause = disk_cause(err)
        if cause is not None:
            from ft_cli.rundir.ownership import disk_error

            _fail(str(disk_error(cause, "the run dir")))
            return 2
        if not _is_hydra_error(err):
            raise
        _fail(str(compose.explain_error(err)))
        return 2
    finally:
        _leave_process_group()
    if _outcomes.error is not None:
        _fail(str(_outcomes.error))
        return 2
    failures = sweep.failed_jobs(sweep.finished)
    if failures:
        _fail(f"{len(failures)} job(s) failed: " + "; ".join(failures))
        return 1
    if StartupInterrupts.received:  # a Ctrl-C that Python dropped before any loop began
        _fail("interrupted")
        return 130
    return 0


def _launch(overrides: list[str]) -> None:
    """Check what ft can judge itself, then hand the arguments to Hydra."""
    import hydra

    from ft_cli import paths
    from ft_cli.config import compose

    compose.register()
    # Flags and their values (--cfg job, --info defaults) are Hydra's to judge.
    _check_modes(overrides)
    given = _config_overrides(overrides)
    compose.check_overrides(given)
    os.environ[SWEPT_KEYS] = ",".join(_swept_keys(given))  # jobs name themselves by these
    if "--cfg" in overrides or "-c" in overrides:
        # Hydra prints the config without running ft's job: check the values first.
        compose.to_spec(compose.compose_config(given))
    overrides = _data_parallel_overrides(overrides)
    app = hydra.main(config_path=str(paths.config_dir()), config_name="config", version_base="1.3")(
        _train_job
    )
    saved_argv = sys.argv
    sys.argv = ["ft", *overrides]
    try:
        app()
    finally:
        sys.argv = saved_argv


# Hydra's flags that take a value (`-sc install=bash` is no override).
_VALUED_FLAGS = (
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--package",
    "-p",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
)


def _config_overrides(args: list[str]) -> list[str]:
    """The key=value overrides among Hydra's arguments, without flags and their values."""
    given = []
    for index, arg in enumerate(args):
        if arg.startswith("-") or "=" not in arg:
            continue
        if index > 0 and args[index - 1] in _VALUED_FLAGS:
            continue
        given.append(arg)
    return given


def _check_modes(args: list[str]) -> None:
    """Hydra takes one mode per call; say so in a line instead of its traceback."""
    modes = {
        "-m": "-m",
        "--multirun": "-m",
        "--cfg": "--cfg",
        "-c": "--cfg",
        "--info": "--info",
        "-i": "--info",
        "--shell-completion": "--shell-completion",
        "-sc": "--shell-completion",
    }
    given = sorted({modes[a] for a in args if a in modes})
    if len(given) > 1:
        raise FtError(
            f"{' and '.join(given)} cannot be combined: give one of -m, --cfg, --info"
            " (for a sweep's config, drop -m and keep one value per key)"
        )


def _data_parallel_overrides(overrides: list[str]) -> list[str]:
    """Under torchrun, every rank must write to the run dir that rank 0 picked.

    Hydra would stamp each process's own start time into its run dir; rank 0's
    is shared before Hydra starts, and only rank 0 writes Hydra's .hydra/ files.
    """
    from ft_cli.hardware import distributed

    place = distributed.from_env()
    if not place.enabled:
        return overrides
    multirun = "-m" in overrides or "--multirun" in overrides
    searched = any(o.startswith("+search=") for o in overrides)
    if multirun and (not searched or any(o.startswith("+launcher=") for o in overrides)):
        raise FtError(
            "-m/--multirun under torchrun: only an Optuna search (+search=NAME, with the"
            " default launcher) runs each trial on every process; for a grid, run one"
            " torchrun per job, or sweep with the submitit launcher (+launcher=slurm)"
        )
    distributed.init()
    extra = []
    if not any(o.startswith(("hydra.run.dir=", "output_dir=")) for o in overrides):
        from datetime import datetime

        stamp = distributed.broadcast(datetime.now().strftime(RUN_DIR_STAMP), place)
        extra.append(f"hydra.run.dir=outputs/{stamp}")
        if multirun and not any(o.startswith("hydra.sweep.dir=") for o in overrides):
            extra.append(f"hydra.sweep.dir=multirun/{stamp}")
    if not place.is_main:
        extra.append("hydra.output_subdir=null")
    return [*overrides, *extra]


def _leave_process_group() -> None:
    """Leave the data-parallel group if one was joined. An interrupt during torch's own
    import leaves it half-initialised: importing it again here would fail in its place."""
    module = sys.modules.get("torch.distributed")
    is_initialized = getattr(module, "is_initialized", None)
    if module is None or is_initialized is None or not is_initialized():
        return
    from ft_cli.hardware import distributed

    distributed.shutdown()


def _is_hydra_error(err: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(err, (HydraException, OmegaConfBaseException))


def _train_job(cfg) -> float | list[float] | dict | None:
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ft_cli.config import compose
    from ft_cli.rundir import ownership

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = cfg.output_dir or hydra_cfg.runtime.output_dir
    overrides = list(hydra_cfg.overrides.task)
    records = _hydra_records(cfg, hydra_cfg, overrides)
    # A dir that held a run before this job keeps its record if the job fails.
    fresh = not ownership.holds_run(Path(run_dir))
    try:
        spec = compose.to_spec(cfg, overrides)
        from ft_cli.training.engine import train

        search = _search(hydra_cfg) if multirun else None
        wanted = search.objectives_of(hydra_cfg.sweeper) if search else []
        sweep = _sweep_job(hydra_cfg, overrides)
        with search.job_trial(hydra_cfg.sweeper) if search else contextlib.nullcontext() as trial:
            if spec.train.folds > 1:  # K trainings in one run dir
                from ft_cli.training import cross_validation

                result = cross_validation.run_folds(spec, run_dir, overrides, records, sweep)
            else:
                extra = {"trial": trial} if trial is not None else {}
                result = train(spec, run_dir, overrides, records, sweep, **extra)
        if wanted and not getattr(result, "pruned", False):
            values = _objective_values(wanted, result, spec)
    except Exception as err:
        if multirun:
            _record_failure(hydra_cfg, run_dir, err, records if fresh else None)
            return None
        if isinstance(err, FtError):
            _outcomes.error = err
            return None
        raise
    if multirun and getattr(result, "pruned", False):
        return {"pruned": True, "value": result.metric}  # the search tells its study
    if wanted:
        return values
    if multirun and result.metric is not None and not math.isfinite(result.metric):
        # A search must not learn from this trial: a sweeper reads None as failed.
        why = f"no finite {result.metric_name} to optimise (best: {result.metric})"
        _record_failure(hydra_cfg, run_dir, FtError(why), records)
        return None
    return result.metric


# The keys a sweep's command line varies, for its jobs (in this process or another) to
# name themselves by: `1: optimizer.lr=5e-05`.
SWEPT_KEYS = "FT_SWEPT_KEYS"


def _swept_keys(overrides: list[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def _search(hydra_cfg):
    """ft's Optuna sweeper, when it launched this job (else None)."""
    target = str(hydra_cfg.sweeper.get("_target_", ""))
    if not target.startswith("hydra_plugins.ft_optuna_sweeper."):
        return None
    from hydra_plugins.ft_optuna_sweeper import sweeper

    return sweeper


def _objective_values(wanted, result, spec) -> list[float]:
    """A trial's value of each search objective, also written into its metrics.json
    (measured by the first process only: the sweeper listens to it alone)."""
    from ft_cli.hardware import distributed
    from ft_cli.search import objectives

    if not distributed.from_env().is_main:
        return [0.0 for _ in wanted]
    found = objectives.values(wanted, result, spec)
    objectives.record(result.run_dir, wanted, found)
    return [found[o.name] for o in wanted]


def _sweep_job(hydra_cfg, overrides: list[str]):
    """A sweep job's place in its sweep (its loggers group the jobs by the sweep dir)."""
    from pathlib import Path

    from hydra.types import RunMode

    from ft_cli.loggers import SweepJob

    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    folder = Path(hydra_cfg.sweep.dir).resolve()
    name = str(folder.relative_to(Path.cwd())) if folder.is_relative_to(Path.cwd()) else str(folder)
    swept = set(os.environ.get(SWEPT_KEYS, "").split(","))
    swept |= set((hydra_cfg.sweeper.get("params") or {}).keys())  # a search's space
    varying = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] in swept]
    return SweepJob(name, f"{hydra_cfg.job.num}: {' '.join(varying or overrides)}".strip())


def _hydra_records(cfg, hydra_cfg, overrides: list[str]) -> dict[str, str]:
    """Hydra's .hydra/ files (config, hydra, overrides), as Hydra itself writes them."""
    from omegaconf import OmegaConf

    if hydra_cfg.output_subdir is not None:  # the user asked Hydra to write them itself
        return {}
    return {
        ".hydra/config.yaml": OmegaConf.to_yaml(cfg),
        ".hydra/hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
        ".hydra/overrides.yaml": OmegaConf.to_yaml(overrides),
    }


def _record_failure(
    hydra_cfg, run_dir: str, err: Exception, records: dict[str, str] | None
) -> None:
    """Report one failed sweep job on one line and, with its records, in its run dir
    (records None: the dir holds another run, whose files are not this job's to write);
    the sweep goes on."""
    line = str(err).splitlines()[0] if str(err) else type(err).__name__
    job = f"job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)})"
    _fail(f"{job}: {line}")
    if records is not None:
        _write_failure(run_dir, err, line, records)


def _write_failure(run_dir: str, err: BaseException, line: str, records: dict[str, str]) -> None:
    """error.txt gets the traceback; metrics.json says failed, keeping what the run wrote;
    Hydra's record of the job is written if the job failed before writing it."""
    import json
    import traceback
    from pathlib import Path

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    for name, text in records.items():
        if not (Path(run_dir) / name).exists():
            (Path(run_dir) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / name).write_text(text)
    detail = "".join(traceback.format_exception(err))
    (Path(run_dir) / "error.txt").write_text(detail)
    metrics_file = Path(run_dir) / "metrics.json"
    try:
        record = json.loads(metrics_file.read_text())
    except (OSError, json.JSONDecodeError):
        record = {}
    record.update(status="failed", error=line)
    metrics_file.write_text(json.dumps(record, indent=2) + "\n")
