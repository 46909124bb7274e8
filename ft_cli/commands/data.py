"""`ft data check [--output FILE] [--no-near] [OVERRIDES]`: what is wrong with the data
`ft train` with these overrides would read: duplicates, rows shared between splits,
conflicting labels, near duplicates, empty and very short inputs, label counts,
truncation, file sizes.

Prints a line per finding and each split's figures, and writes the rows found, by
index, to `data_check.json` (or FILE). Exits non-zero when `data.checks=strict` and a
duplicate, leak, conflict or empty input is found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ft_cli.errors import FtError

USAGE = (
    "usage: ft data check [--output FILE] [--no-near] [--label-errors [--from RUN] [--folds K]]"
    " [OVERRIDES]   (the overrides of ft train, +recipe=NAME too; writes data_check.json"
    " here unless --output says where; --no-near: skip near duplicates, the slowest check;"
    " --label-errors: rank the training rows by how likely their label is wrong, from the"
    " out-of-fold predictions of a train.folds run (--from RUN) or of K folds trained now)"
)


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] != "check":
        raise FtError(f"ft data: unknown action '{args[0]}'; ft data check [OVERRIDES]")
    rest = [a for a in args[1:] if a not in ("--no-near", "--label-errors")]
    near = "--no-near" not in args
    source = _value(rest, "--from")
    folds = _value(rest, "--folds")
    output = Path(_value(rest, "--output") or "data_check.json")
    if not output.resolve().parent.is_dir():
        raise FtError(f"--output {output}: folder '{output.parent}' does not exist")
    found, spec = run_check(rest, near)
    if "--label-errors" in args:
        _label_errors(found, spec, rest, output, source, folds)
    show(found)
    found.write(output)
    print(f"written: {output}")
    if spec.data.checks.value == "strict" and found.blocking():
        from ft_cli.checks import run

        raise FtError(run.strict_refusal(found))  # type: ignore[arg-type]
    return 0


def _value(args: list[str], flag: str) -> str | None:
    """The value after `flag`, both taken out of `args` (None: not given)."""
    if flag not in args:
        return None
    at = args.index(flag)
    if at + 1 >= len(args) or args[at + 1].startswith("--") or "=" in args[at + 1]:
        raise FtError(f"{flag} needs a value: ft data check {flag} VALUE ...")
    value = args[at + 1]
    del args[at : at + 2]
    return value


def _label_errors(
    found: Any, spec: Any, overrides: list[str], output: Path, source: str | None, folds: str | None
) -> None:
    """Rank the training rows by how likely their label is wrong, from the out-of-fold
    predictions of a K-fold run (`--from RUN`, or one trained now beside the output)."""
    import dataclasses

    from ft_cli import tasks
    from ft_cli.checks import label_errors
    from ft_cli.checks.findings import count, rows_named
    from ft_cli.training import cross_validation

    if tasks.info(spec.task.kind).targets != "classes":
        raise FtError(f"--label-errors: task={spec.task.kind} has no class per row to check")
    if source is None:
        if folds is not None and (not folds.isdigit() or int(folds) < 2):
            raise FtError(f"--folds {folds}: give a whole number of folds, 2 or more")
        count_of = int(folds) if folds else max(spec.train.folds, 5)
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, folds=count_of))
        home = output.with_name(f"{output.stem}_folds")
        cross_validation.run_folds(spec, home, [*overrides, f"train.folds={count_of}"])
        source = str(home)
    rows, given, names, probs = label_errors.read_out_of_fold(
        Path(source) / cross_validation.OUT_OF_FOLD
    )
    target = output.with_name("label_errors.csv")
    flagged = label_errors.find(rows, given, names, probs, target)
    shown = [[f["row"], f["given"], f["suggested"]] for f in flagged]
    how = "confident learning on out-of-fold predictions"
    summary = (
        f"no label flagged by {how}"
        if not shown
        else (
            f"{count(len(flagged), 'row')} whose label looks wrong ({how}; row, given,"
            f" suggested: {rows_named(shown)})"
        )
    )
    found.add("label_errors", "train", f"{summary}; every row ranked in {target}", shown)


def run_check(overrides: list[str], near: bool = True) -> tuple[object, object]:
    """(the data check of the data these ft train overrides read, their spec)."""
    from ft_cli import tasks
    from ft_cli.checks import run
    from ft_cli.config import compose

    compose.check_overrides(overrides)
    spec = compose.compose_spec(overrides)
    task = tasks.get(spec.task.kind)
    processor = None if task.inputs.names_files else task.processor(spec.model)
    return run.check(spec, processor, near, "skipped (--no-near)"), spec


def show(found: object) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=f"data check (task={found.task})")  # type: ignore[attr-defined]
    table.add_column("finding")
    for line in found.lines():  # type: ignore[attr-defined]
        table.add_row(escape(line))
    console.print(table)
    figures = Table(title="figures by split")
    for name in ("split", "what", "value"):
        figures.add_column(name)
    for row in found.figure_rows():  # type: ignore[attr-defined]
        figures.add_row(*(escape(cell) for cell in row))
    console.print(figures)
