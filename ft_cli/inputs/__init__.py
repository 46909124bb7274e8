"""Kinds of input: what each one reads, decodes, batches, accepts over HTTP and shows.

`MODALITIES` maps a modality's name to the module that defines its `MODALITY`
(`base.Modality`), as plain data: the config schema reads it without importing
torch. A task names its modality in `ft_cli.tasks.TASKS`; the commands ask the
modality and never which one it is. A new kind of input is a module with a
`MODALITY` and a line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ft_cli.inputs.base import Modality

MODALITIES: dict[str, str] = {
    "text": "ft_cli.inputs.text",
    "image": "ft_cli.inputs.image",
    "audio": "ft_cli.inputs.audio",
}


def get(name: str) -> Modality:
    """The modality object of a modality name."""
    return importlib.import_module(MODALITIES[name]).MODALITY
