"""A toy kind of input (rows of four numbers) and a toy task that classifies them, written
as a plug-in would be: everything here, nothing in ft_cli but one line in each of
`ft_cli.inputs.MODALITIES` and `ft_cli.tasks.TASKS` (which the tests add at run time).

The model is a small MLP of its own (not a transformers model), saved as safetensors
beside a config.json, so that every seam a new kind of model needs is exercised too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ft_cli.errors import FtError
from ft_cli.inputs.base import Modality, RequestError, Rows, counted_items, one_field
from ft_cli.tasks.classification import Classification
from ft_cli.tasks.objective import Objective

WIDTH = 4
WEIGHTS = "numbers.safetensors"


def parse(cell: Any, where: str) -> list[float]:
    """A row's numbers: a list, or a string of them separated by spaces."""
    values = cell.split() if isinstance(cell, str) else cell
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != WIDTH or not all(math.isfinite(n) for n in numbers):
        raise FtError(f"{where}: {cell!r} is not {WIDTH} numbers; write them as '1 2 3 4'")
    return numbers


class NumberReader:
    """The processor: cells in, a float tensor out; saved beside the model like a tokenizer."""

    pad_token_id = 0

    def __call__(self, cells: list[Any], where: str) -> torch.Tensor:
        return torch.tensor([parse(cell, f"{where}, row {i}") for i, cell in enumerate(cells)])

    def save_pretrained(self, folder: str | Path) -> None:
        (Path(folder) / "numbers.json").write_text(json.dumps({"width": WIDTH}))


class Numbers(Modality):
    name = "numbers"
    noun = "rows of numbers"
    request_fields = {"numbers": list[float] | None, "rows": list[list[float]] | None}  # noqa: RUF012

    def processor(self, cfg: Any) -> NumberReader:
        return NumberReader()

    def same_inputs(self, processor: Any, other: Any) -> bool:
        return isinstance(other, NumberReader)

    def columns(self, data: Any) -> dict[str, str]:
        return {"data.text_column": data.text_column}

    def check_column(self, first: Any, key: str, column: str, split: str, source: str) -> None:
        if key == "data.text_column":
            parse(first, f"{key}: column '{column}' of the {split} data ({source})")

    def request_columns(self, data: Any) -> dict[str, str]:
        return {"numbers": data.text_column}

    def request_rows(
        self, body: dict[str, Any], columns: dict[str, str], limits: Any, word_lists: bool
    ) -> tuple[Rows, bool]:
        key = one_field(body, ("numbers", "rows"), "numbers (4 numbers) or rows (a list of them)")
        rows = []
        for item in counted_items(body, key, key == "numbers", limits):
            try:
                rows.append({columns["numbers"]: parse(item, key)})
            except FtError as err:
                raise RequestError(422, str(err)) from err
        return rows, key == "numbers"

    def describe(self, data: Any) -> str:
        return f"rows of {WIDTH} numbers"


class NumberNet(nn.Module):
    """Two layers from the numbers to the classes."""

    def __init__(self, labels: list[str]) -> None:
        super().__init__()
        self.labels = labels
        self.hidden = nn.Linear(WIDTH, 16)
        self.out = nn.Linear(16, len(labels))

    def forward(self, numbers: torch.Tensor) -> Any:
        return SimpleNamespace(logits=self.out(torch.tanh(self.hidden(numbers))))

    def save_pretrained(self, folder: str | Path, state_dict: Any = None) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights = state_dict if state_dict is not None else self.state_dict()
        save_file({k: v.contiguous() for k, v in weights.items()}, folder / WEIGHTS)
        config = {"model_type": "numbers", "id2label": dict(enumerate(self.labels))}
        (folder / "config.json").write_text(json.dumps(config))


class Rows4(torch.utils.data.Dataset):
    """One split: each row's numbers and target."""

    def __init__(self, numbers: torch.Tensor, labels: list[int]) -> None:
        self.numbers, self.labels = numbers, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> int:
        return index

    def lengths(self) -> list[int]:
        return [1] * len(self.labels)

    def update_digest(self, digest: Any) -> None:
        digest.update(self.numbers.numpy().tobytes() + repr(self.labels).encode())


class RowsCollator:
    def __init__(self, split: Rows4) -> None:
        self.split = split

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return {
            "numbers": self.split.numbers[indices],
            "labels": torch.tensor([self.split.labels[i] for i in indices]),
        }


class NumberObjective(Objective):
    def collator(self, split: Any, seed: int) -> Any:
        return RowsCollator(split)

    def count(self, batch: Any) -> tuple[int, int, int]:
        return len(batch["numbers"]), 0, 0

    def input_shape(self, batch: Any) -> str:
        return f"rows of {WIDTH} numbers"


class NumberClassification(Classification):
    name = "number_classification"
    pipeline_tag = None

    def build_model(self, cfg, task, labels, vocab, dropout, meta):
        from safetensors.torch import load_file

        from ft_cli.models import model

        torch.manual_seed(0)
        net = NumberNet(list(labels))
        if cfg.from_run is None:
            return net, {name for name, _ in net.named_parameters()}
        net.load_state_dict(load_file(model.run_export(cfg.from_run) / WEIGHTS))
        return net, set()

    def load_trained(self, cfg, task, labels, vocab):
        return self.build_model(cfg, task, labels, vocab, None, False)[0]

    def encode(self, cfg, task, tokenizer, dataset, labels, split):
        numbers = tokenizer(dataset[cfg.text_column], f"data.text_column ({split})")
        if cfg.label_column not in dataset.column_names:
            return Rows4(numbers, [-1] * len(numbers))
        return Rows4(numbers, self.targets(dataset[cfg.label_column], labels, split, "label"))

    def objective(self, net, task, processor, labels, compile_model, label_smoothing):
        return NumberObjective(
            net, self.name, len(labels or []), 0, False, label_smoothing, task.class_weights
        )

    def predict_inputs(self, read, processor, cfg, labels, task=None):
        numbers = processor(read("data.text_column", cfg.text_column, keep_lists=True), "--input")
        split = Rows4(numbers, [0] * len(numbers))
        return split, RowsCollator(split), None


MODALITY = Numbers()
TASK = NumberClassification()
