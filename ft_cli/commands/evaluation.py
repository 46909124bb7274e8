"""`ft eval RUN_OR_MODEL_DIR [--split NAME | --file FILE] [OVERRIDES]`.

Evaluates a trained model (a run's export, a checkpoint, any exported
folder) on a split of the run's data, prepared exactly as in training (the
validation split carved with the same seed), or on a data file; prints the
metrics table and writes `eval_metrics.json` beside the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ft_cli import paths
from ft_cli.errors import FtError

USAGE = (
    "usage: ft eval RUN_OR_MODEL_DIR [--task NAME] [--split validation|test|train | --file FILE]"
    " [KEY=VALUE ...]\n"
    "       ft eval RUNS_OR_SWEEP_DIR... --ensemble METHOD[,METHOD...]|all [--weights W1,W2,...]"
    " [--split S | --file F]\n"
    "       ft eval ENSEMBLE_DIR [--split S | --file F]"
)
ENSEMBLE_HELP = "mean, vote, weighted, greedy, stack, a comma list, or all"


def parse(args: list[str], flags: dict[str, str]) -> tuple[str, dict[str, str], list[str]]:
    """(the model folder, the given flags, the overrides) from the command line."""
    folders, given, overrides = parse_many(args, flags)
    if len(folders) != 1:
        raise FtError("give one run dir, model folder or checkpoint")
    return folders[0], given, overrides


def parse_many(
    args: list[str], flags: dict[str, str], switches: tuple[str, ...] = ()
) -> tuple[list[str], dict[str, str], list[str]]:
    """(the folders, the given flags, the overrides) from the command line.

    `switches`: flags without a value (given as "1"). An argument with `=` is an override
    unless it names an existing folder (a run dir such as `runs/lr=3e-5`).
    """
    given: dict[str, str] = {}
    rest: list[str] = []
    items = iter(args)
    for item in items:
        if item in switches:
            given[item] = "1"
        elif item in flags:
            value = next(items, None)
            if value is None or value.startswith("--"):
                raise FtError(f"{item} needs a value ({flags[item]})")
            given[item] = value
        elif item.startswith("-"):
            raise FtError(f"unknown option '{item}'; options: {', '.join([*flags, *switches])}")
        else:
            rest.append(item)
    folders = [a for a in rest if "=" not in a or Path(a).is_dir()]
    if not folders:
        raise FtError("give a run dir, model folder or checkpoint")
    return folders, given, [a for a in rest if a not in folders]


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


@dataclass
class EvalSetup:
    """A trained model ready to run over one split: what evaluation and reports share."""

    found: Any  # trained.Trained
    spec: Any
    rows: Any  # the EncodedSplit
    source: str
    labels: list[str] | None
    forward: Any  # engine.StepForward
    objective: Any
    loader: Any
    hw: Any


def setup(
    folder: str,
    overrides: list[str],
    split: str = "validation",
    file: str | None = None,
    task: str | None = None,
) -> EvalSetup:
    """The trained model and the rows to evaluate, from the setup call training makes."""
    from ft_cli.hardware import parallel
    from ft_cli.models import trained
    from ft_cli.training import setup as run_setup

    found = trained.locate(folder, task)
    spec = trained.spec_for(found, overrides)
    ready, hw = built(found, spec, file)
    rows, source = chosen_rows(ready, split, file)
    backend = parallel.Backend()
    loader = run_setup.eval_loader(ready, rows, backend.place, backend)
    return EvalSetup(
        found, spec, rows, source, ready.labels, ready.forward, ready.objective, loader, hw
    )


def built(found: Any, spec: Any, file: str | None = None) -> tuple[Any, Any]:
    """(the evaluation RunSetup with the trained weights, the hardware); a file's rows
    become its `prepared.train`."""
    from ft_cli import tasks
    from ft_cli.data import dataset
    from ft_cli.hardware import parallel
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.models import trained
    from ft_cli.training import setup as run_setup

    trained.check_loadable(found, spec)
    hw = setup_hardware(spec.hardware)
    given = None
    if file is not None:
        labels = spec.task.labels or None
        kind = tasks.get(spec.task.kind)
        tokenizer = kind.processor(spec.model)
        table = kind.load_file(file, spec.data)
        rows = dataset.encode_split(spec.data, spec.task, tokenizer, table, labels, "eval", file)
        given = dataset.PreparedData(rows, None, None, labels, {"file": file})
    ready = run_setup.build(
        spec, run_setup.Purpose.evaluate, parallel.Backend(), hw, prepared=given
    )
    trained.load_checkpoint(found, ready.net)
    return ready, hw


def chosen_rows(ready: Any, split: str, file: str | None) -> tuple[Any, str]:
    """(the rows to evaluate: a split of the run's data or the file's, where they come from)."""
    from ft_cli.data import dataset

    if file is not None:
        rows, source = ready.prepared.train, file
    else:
        rows = getattr(ready.prepared, split, None) if split in dataset.SPLITS else None
        if rows is None:
            raise FtError(
                f"--split {split}: the run's data has no such split; splits: "
                + ", ".join(s for s in dataset.SPLITS if getattr(ready.prepared, s) is not None)
            )
        source = ready.prepared.source.get(split, split)
    if getattr(rows, "labels", None) and all(label == -1 for label in rows.labels):
        raise FtError(f"{source}: no labels to evaluate against; ft predict gives predictions")
    return rows, source


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
