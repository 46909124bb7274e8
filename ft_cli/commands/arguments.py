"""The command line the commands that use a trained run share: folders, flags, overrides."""

from __future__ import annotations

from pathlib import Path

from ft_cli.errors import FtError

ENSEMBLE_HELP = "mean, vote, weighted, greedy, stack, a comma list, or all"


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
