"""Print the config reference tables of docs/configs.md from the schema's help texts.

python -m ft_cli.config.reference
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from enum import Enum

from omegaconf import MISSING

from ft_cli.config import schema


def _show(value: object) -> str:
    if isinstance(value, Enum):
        return value.value
    if value is MISSING:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _rows(cls: type, prefix: str) -> Iterator[str]:
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if dataclasses.is_dataclass(kind):
            yield from _rows(kind, f"{prefix}{item.name}.")
            continue
        default = (
            item.default if item.default is not dataclasses.MISSING else item.default_factory()
        )
        help_text = item.metadata.get("help", "")
        yield f"| `{prefix}{item.name}` | `{_show(default)}` | {_range(item)} | {help_text} |"
        if item.name == "tasks":  # multitask: what each task adds to the task keys above
            yield from _task_rows(f"{prefix}tasks.NAME.")


def _task_rows(prefix: str) -> Iterator[str]:
    own = {item.name for item in dataclasses.fields(schema.TaskSettings)}
    for item in dataclasses.fields(schema.SubTaskConfig):
        if item.name == "data":
            yield f"| `{prefix}data` | | | This task's data: every `data.` key above. |"
        elif item.name not in own:
            default = _show(item.default)
            help_text = item.metadata.get("help", "")
            yield f"| `{prefix}{item.name}` | `{default}` | {_range(item)} | {help_text} |"
    yield f"| `{prefix}KEY` | | | Every `task.` key above but tasks, mixing, temperature. |"


def _range(item: dataclasses.Field) -> str:
    bounds = item.metadata.get("bounds")
    if bounds is None:
        return ""
    text = bounds.describe().removeprefix("in ")
    text = text.replace("greater than ", "> ").replace("at least ", ">= ")
    return f"{bounds.length} x {text}" if bounds.length else text


HEADER = "| key | schema default | range | meaning |\n| --- | --- | --- | --- |"


def reference() -> str:
    hints = typing.get_type_hints(schema.RunSpec)
    parts = []
    for group in (*schema.GROUPS, "train"):
        rows = "\n".join(_rows(hints[group], f"{group}."))
        parts.append(f"#### `{group}`\n\n{HEADER}\n{rows}")
    # Top-level keys are the rows whose key has no group prefix.
    top = [row for row in _rows(schema.RunSpec, "") if "." not in row.split("`")[1]]
    parts.append("#### top level\n\n" + HEADER + "\n" + "\n".join(top))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
