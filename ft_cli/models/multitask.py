"""One encoder, several task models: the model of a multi-task run.

Each task keeps a complete transformers model (its own head, and its own
pooler where only it has one), and all of them hold the same encoder
modules. So each task's model runs, and saves with `save_pretrained`, exactly
as a single-task model does, and an optimizer step on any task's loss moves
the one shared encoder. Parameter names read `tasks.NAME.bert.encoder.layer.3...`
(the shared ones under the first task), so strategies find layers and heads
by name as for one model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

MANIFEST = "multitask.json"  # in model/: the tasks, their kinds and labels
ENCODER = "encoder"  # model/encoder: the shared encoder alone


def backbone(net: nn.Module) -> nn.Module:
    return getattr(net, net.base_model_prefix)


class MultiTaskNet(nn.Module):
    def __init__(self, models: dict[str, nn.Module]) -> None:
        super().__init__()
        first, *others = models.values()
        shared = dict(backbone(first).named_children())
        for net in others:
            body = backbone(net)
            for name in dict(body.named_children()):
                if name in shared:
                    setattr(body, name, shared[name])
            if getattr(net.config, "tie_word_embeddings", False):
                net.tie_weights()  # an mlm decoder follows the shared embeddings
        self.tasks = nn.ModuleDict(models)

    @property
    def encoder(self) -> nn.Module:
        """The shared encoder (with the first task's pooler, if it has one)."""
        return backbone(next(iter(self.tasks.values())))

    def task_models(self) -> list[nn.Module]:
        """Each task's complete model (they share the encoder modules)."""
        return list(self.tasks.values())

    def save_pretrained(self, folder: Path, tokenizer: Any, manifest: dict[str, Any]) -> None:
        """model/NAME for each task and model/encoder: each a plain transformers folder."""
        folder = Path(folder)
        for name, net in self.tasks.items():
            net.save_pretrained(folder / name)
            tokenizer.save_pretrained(folder / name)
        self.encoder.save_pretrained(folder / ENCODER)
        tokenizer.save_pretrained(folder / ENCODER)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The task list of an exported multi-task model/ folder; None for any other folder."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
