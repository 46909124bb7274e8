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

from ft_cli.errors import FtError

USAGE = (
    "usage: ft data check [--output FILE] [--no-near] [OVERRIDES]   (the overrides of ft"
    " train, +recipe=NAME too; writes data_check.json here unless --output says where;"
    " --no-near: skip near duplicates, the slowest check)"
)


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] != "check":
        raise FtError(f"ft data: unknown action '{args[0]}'; ft data check [OVERRIDES]")
    rest = [a for a in args[1:] if a != "--no-near"]
    near = "--no-near" not in args
    output = Path("data_check.json")
    if "--output" in rest:
        at = rest.index("--output")
        if at + 1 >= len(rest):
            raise FtError("--output needs a file name: ft data check --output FILE.json ...")
        output = Path(rest[at + 1])
        rest = rest[:at] + rest[at + 2 :]
    if not output.resolve().parent.is_dir():
        raise FtError(f"--output {output}: folder '{output.parent}' does not exist")
    found, spec = run_check(rest, near)
    show(found)
    found.write(output)
    print(f"written: {output}")
    if spec.data.checks.value == "strict" and found.blocking():
        from ft_cli.checks import run

        raise FtError(run.strict_refusal(found))  # type: ignore[arg-type]
    return 0


def run_check(overrides: list[str], near: bool = True) -> tuple[object, object]:
    """(the data check of the data these ft train overrides read, their spec)."""
    from ft_cli import tasks
    from ft_cli.checks import run
    from ft_cli.config import compose

    compose.check_overrides(overrides)
    spec = compose.compose_spec(overrides)
    task = tasks.get(spec.task.kind)
    processor = None if task.inputs.names_files else task.processor(spec.model)
    return run.check(spec, processor, near), spec


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
