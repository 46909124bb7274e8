"""`ft eval RUN_OR_MODEL_DIR [--split NAME | --file FILE] [OVERRIDES]`.

Evaluates a trained model (a run's export, a checkpoint, any exported
folder) on a split of the run's data, prepared exactly as in training (the
validation split carved with the same seed), or on a data file; prints the
metrics table and writes `eval_metrics.json` beside the model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ft_cli import paths
from ft_cli.commands.arguments import ENSEMBLE_HELP, parse_many
from ft_cli.errors import FtError
from ft_cli.training.evaluating import setup

USAGE = (
    "usage: ft eval RUN_OR_MODEL_DIR [--task NAME] [--split validation|test|train | --file FILE]"
    " [KEY=VALUE ...]\n"
    "       ft eval RUNS_OR_SWEEP_DIR... --ensemble METHOD[,METHOD...]|all [--weights W1,W2,...]"
    " [--split S | --file F]\n"
    "       ft eval ENSEMBLE_DIR [--split S | --file F]"
)


def parse(args: list[str], flags: dict[str, str]) -> tuple[str, dict[str, str], list[str]]:
    """(the model folder, the given flags, the overrides) from the command line."""
    folders, given, overrides = parse_many(args, flags)
    if len(folders) != 1:
        raise FtError("give one run dir, model folder or checkpoint")
    return folders[0], given, overrides


def main(args: list[str]) -> int:
    flags = {
        "--split": "validation, test or train",
        "--file": "a .csv/.tsv/.jsonl/.parquet file",
        "--task": "a task of a multi-task run",
        "--ensemble": ENSEMBLE_HELP,
        "--weights": "weighted: one weight per member, W1,W2,...",
    }
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    folders, given, overrides = parse_many(args, flags)
    if "--split" in given and "--file" in given:
        raise FtError("--split and --file: give one (what to evaluate on)")
    from ft_cli.ensembles import manifest

    if "--ensemble" in given or manifest.read(Path(folders[0])) is not None:
        from ft_cli.commands import ensemble

        return ensemble.evaluate(folders, given, overrides)
    if len(folders) != 1:
        raise FtError("give one run dir, model folder or checkpoint (or --ensemble METHOD)")
    folder = folders[0]
    result = evaluate_trained(
        folder,
        overrides,
        given.get("--split", "validation"),
        given.get("--file"),
        given.get("--task"),
    )
    from ft_cli.outputs.console import RunConsole

    ui = RunConsole()
    ui.metrics_table(f"eval: {result['split']} ({result['rows']} rows)", result["metrics"])
    if not result["saved"]:
        raise FtError(
            f"the metrics above could not be saved to {result['written']} (read-only or full"
            " disk); nothing else was written"
        )
    ui.info(f"written: {result['written']}")
    return 0


def evaluate_trained(
    folder: str,
    overrides: list[str],
    split: str = "validation",
    file: str | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    from ft_cli.training import engine

    started = time.perf_counter()
    ready = setup(folder, overrides, split, file, task)
    metrics = engine.evaluate(ready.forward, ready.objective, ready.loader, ready.hw)
    record = {
        "model": str(ready.found.checkpoint or ready.found.export),
        "split": split if file is None else "file",
        "task": ready.found.task,
        "source": ready.source,
        "rows": len(ready.rows),
        "metrics": metrics,
        "seconds": time.perf_counter() - started,
        "overrides": overrides,
    }
    name = f"eval_metrics.{ready.found.task}.json" if ready.found.task else "eval_metrics.json"
    written = Path(ready.found.home) / name
    saved = paths.write_atomic(written, json.dumps(record, indent=2) + "\n")
    return {**record, "written": str(written), "saved": saved}
