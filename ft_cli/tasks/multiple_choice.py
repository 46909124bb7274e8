"""Multiple choice (SWAG-style): which of a row's N choices is right, one score per choice
(`AutoModelForMultipleChoice`).

Each choice is read as a pair with the row's first text: (data.text_column, the stem in
data.text_pair_column if any + " " + the choice). The choices come from
data.choice_columns: N columns, or one column holding a list per row. The label
(data.label_column) is the right choice's position (0 to N-1) or its text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ft_cli.config.schema import DataConfig, TaskConfig
from ft_cli.data.batching import Collate, padded_width
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.tasks import metrics
from ft_cli.tasks.base import Task
from ft_cli.tasks.objective import Objective


@dataclass
class ChoiceSplit(EncodedSplit):
    """Rows of N tokenized choices each; `input_ids` holds each row's longest choice (what
    length-sorted batching reads)."""

    choice_ids: list[list[list[int]]] = field(default_factory=list)
    choice_types: list[list[list[int]]] | None = None


class ChoiceCollator:
    """Pads a batch of rows to [rows, choices, longest choice], the longest rounded up to
    a multiple of `multiple` tokens (not past the split's longest choice)."""

    def __init__(self, split: ChoiceSplit, pad_id: int, multiple: int = 1) -> None:
        self.split, self.pad_id, self.multiple = split, pad_id, multiple
        self.cap = max(split.lengths(), default=0) if multiple > 1 else 0

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = [self.split.choice_ids[i] for i in indices]
        count = len(rows[0])
        longest = max(len(ids) for row in rows for ids in row)
        width = padded_width(longest, self.multiple, self.cap)
        input_ids = torch.full((len(rows), count, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), count, width), dtype=torch.long)
        types = torch.zeros_like(attention) if self.split.choice_types is not None else None
        for r, index in enumerate(indices):
            for c, ids in enumerate(self.split.choice_ids[index]):
                input_ids[r, c, : len(ids)] = torch.tensor(ids)
                attention[r, c, : len(ids)] = 1
                if types is not None and self.split.choice_types is not None:
                    kinds = self.split.choice_types[index][c]
                    types[r, c, : len(kinds)] = torch.tensor(kinds)
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if types is not None:
            batch["token_type_ids"] = types
        batch["labels"] = torch.tensor([self.split.labels[i] for i in indices], dtype=torch.long)
        return batch


class ChoiceObjective(Objective):
    """Cross-entropy over each row's choices; accuracy over rows."""

    def collator(self, split: EncodedSplit, seed: int) -> Collate:
        assert isinstance(split, ChoiceSplit)
        return ChoiceCollator(split, self.pad_id, self.pad_multiple)

    def input_shape(self, batch: dict[str, torch.Tensor]) -> str:
        _, choices, width = batch["attention_mask"].shape
        return f"{choices} choices of {width} tokens"

    def new_metrics(self, split: EncodedSplit | None = None) -> Any:
        return ChoiceMetrics(self.task, self.num_labels)


class ChoiceMetrics(metrics.EvalMetrics):
    """Accuracy (and the loss) over rows: F1 or MCC of choice positions would mean nothing."""

    def _metrics(self) -> Any:
        import torchmetrics

        classes = {"num_classes": self.num_labels, "sync_on_compute": False}
        return torchmetrics.MetricCollection(
            {"accuracy": torchmetrics.Accuracy(task="multiclass", **classes)}
        )


class MultipleChoice(Task):
    name = "multiple_choice"
    named_labels = False
    exportable = False
    not_exported = "its inputs are [rows, choices, tokens], which the graph export does not take"
    pipeline_tag = "multiple-choice"

    def input_columns(self, cfg: DataConfig) -> dict[str, str]:
        if not cfg.choice_columns:
            raise FtError(
                "data.choice_columns: task=multiple_choice reads the choices from it: a list of"
                " columns (e.g. [ending0,ending1,ending2,ending3]) or one column of lists"
            )
        columns = {"data.text_column": cfg.text_column}
        if cfg.text_pair_column is not None:
            columns["data.text_pair_column"] = cfg.text_pair_column
        for index, column in enumerate(cfg.choice_columns):
            columns[f"data.choice_columns[{index}]"] = column
        return columns

    def label_names(
        self, task: TaskConfig, cfg: DataConfig, train: Any, hub_names: list[str] | None
    ) -> list[str] | None:
        return [str(i) for i in range(len(choices_of(cfg, train[:1], "train")[0]))]

    def encode(
        self,
        cfg: DataConfig,
        task: TaskConfig,
        tokenizer: Any,
        dataset: Any,
        labels: list[str] | None,
        split: str,
    ) -> ChoiceSplit:
        rows = dataset[:]
        choices = choices_of(cfg, rows, split)
        encoded = encode_choices(tokenizer, cfg, rows, choices)
        if cfg.label_column in dataset.column_names:
            encoded.labels = right_choices(rows[cfg.label_column], choices, split, cfg.label_column)
        else:
            encoded.labels = [-1] * len(choices)
        return encoded

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        return {}, "AutoModelForMultipleChoice"

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        tokenizer: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Objective:
        count = len(labels or [])
        pad_id = tokenizer.pad_token_id or 0
        return ChoiceObjective(net, self.name, count, pad_id, compile_model, label_smoothing)

    def predict_inputs(
        self,
        read: Any,
        tokenizer: Any,
        cfg: DataConfig,
        labels: list[str] | None,
        task: TaskConfig | None = None,
    ) -> tuple[EncodedSplit, Any, Any]:
        rows: dict[str, list[Any]] = {cfg.text_column: read("data.text_column", cfg.text_column)}
        if cfg.text_pair_column is not None:
            rows[cfg.text_pair_column] = read("data.text_pair_column", cfg.text_pair_column)
        for index, column in enumerate(cfg.choice_columns or []):
            rows[column] = read(f"data.choice_columns[{index}]", column, keep_lists=True)
        choices = choices_of(cfg, rows, "input")
        split = encode_choices(tokenizer, cfg, rows, choices)
        split.labels = [0] * len(choices)
        return split, ChoiceCollator(split, tokenizer.pad_token_id or 0), choices

    def prediction(
        self, logits: Any, labels: list[str] | None, extra: Any, lists: bool
    ) -> dict[str, Any]:
        probs = logits.softmax(-1).tolist()
        best = max(range(len(probs)), key=probs.__getitem__)
        _, choices = extra
        return {
            "predicted_choice": best,
            "predicted_text": choices[best],
            "predicted_probability": probs[best],
        }


def choices_of(cfg: DataConfig, rows: dict[str, list[Any]], split: str) -> list[list[str]]:
    """Each row's choices as texts, all rows with the same number of them."""
    columns = cfg.choice_columns or []
    if len(columns) == 1:
        found = [value if isinstance(value, list) else None for value in rows[columns[0]]]
        bad = next((row for row, value in enumerate(found) if not value), None)
        if bad is not None:
            raise FtError(
                f"data.choice_columns: one column ('{columns[0]}') must hold a list of choices"
                f" per row; row {bad} of the {split} data holds"
                f" {str(rows[columns[0]][bad])[:40]!r} (or name one column per choice)"
            )
        choices = [[str(c) for c in value] for value in found if value is not None]
    else:
        texts = [rows[column] for column in columns]
        choices = [["" if v is None else str(v) for v in row] for row in zip(*texts, strict=True)]
    counts = {len(row) for row in choices}
    if len(counts) > 1:
        raise FtError(
            f"data.choice_columns: the rows of the {split} data have {sorted(counts)} choices;"
            " every row needs the same number"
        )
    return choices


def encode_choices(
    tokenizer: Any, cfg: DataConfig, rows: dict[str, list[Any]], choices: list[list[str]]
) -> ChoiceSplit:
    """Every (first text, stem + choice) pair tokenized, grouped by row."""
    count = len(choices[0]) if choices else 0
    firsts = ["" if t is None else str(t) for t in rows[cfg.text_column]]
    stems = rows[cfg.text_pair_column] if cfg.text_pair_column is not None else None
    pairs = [
        (f"{stems[r]} {choice}".strip() if stems is not None else choice)
        for r, row in enumerate(choices)
        for choice in row
    ]
    encoded = tokenizer(
        [first for first in firsts for _ in range(count)],
        pairs,
        truncation=True,
        max_length=cfg.max_length,
    )
    ids, types = encoded["input_ids"], encoded.get("token_type_ids")
    grouped = [ids[r * count : (r + 1) * count] for r in range(len(choices))]
    grouped_types = (
        [types[r * count : (r + 1) * count] for r in range(len(choices))] if types else None
    )
    return ChoiceSplit(
        [max(row, key=len) for row in grouped],
        None,
        [],
        choice_ids=grouped,
        choice_types=grouped_types,
    )


def right_choices(
    values: list[Any], choices: list[list[str]], split: str, column: str
) -> list[int]:
    """Each row's right choice as its position: given as the position or the text."""
    result = []
    for row, (value, options) in enumerate(zip(values, choices, strict=True)):
        if isinstance(value, bool) or value is None:
            position = None
        elif isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            position = int(value)
        else:
            position = options.index(str(value)) if str(value) in options else None
        if position is None or not 0 <= position < len(options):
            raise FtError(
                f"data.label_column: row {row} of the {split} data ('{column}': {value!r}) is"
                f" neither a choice's position (0 to {len(options) - 1}) nor one of its choices"
            )
        result.append(position)
    return result


TASK = MultipleChoice()
