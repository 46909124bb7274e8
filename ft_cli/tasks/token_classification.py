"""Token classification (named entities): a tag per word, IOB2; see `tasks.tagging`."""

from __future__ import annotations

from typing import Any

from torch import nn

from ft_cli.config.schema import DataConfig, TaskConfig, window_stride
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.tasks import class_weights, documents, tagging
from ft_cli.tasks.base import Task


class TokenClassification(Task):
    name = "token_classification"
    pipeline_tag = "token-classification"
    word_lists = True

    def label_names(
        self, task: TaskConfig, cfg: DataConfig, train: Any, hub_names: list[str] | None
    ) -> list[str] | None:
        if task.labels:
            return [str(label) for label in task.labels]
        return tagging.tag_names(train[cfg.label_column])

    def check_column(self, first: Any, key: str, column: str, split: str, source: str) -> None:
        if isinstance(first, (list, tuple)):
            return
        what = "words" if key == "data.text_column" else "tags"
        raise FtError(
            f"{key}: column '{column}' of the {split} data ({source}) holds a"
            f" {type(first).__name__} per row (row 0: {str(first)[:40]!r});"
            f" task=token_classification needs a list of {what} per row: JSON lists in"
            " json/parquet files, or data=conll"
        )

    def encode(
        self,
        cfg: DataConfig,
        task: TaskConfig,
        tokenizer: Any,
        dataset: Any,
        labels: list[str] | None,
        split: str,
    ) -> EncodedSplit:
        assert labels is not None
        tags = dataset[cfg.label_column] if cfg.label_column in dataset.column_names else None
        return tagging.encode_tagged(
            tokenizer,
            dataset[cfg.text_column],
            tags,
            labels,
            cfg.max_length,
            task.label_all_subtokens,
            split,
            window_stride(cfg) if documents.windowed(cfg) else None,
        )

    def long_input_rows(self, cfg: DataConfig, tokenizer: Any) -> list[list[str]]:
        words = [[str(w) for w in row] for row in self.train_rows(cfg)[cfg.text_column]]
        return documents.length_rows(tokenizer, words, None, cfg, words=True)

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        values, _ = super().head(labels)
        return values, "AutoModelForTokenClassification"

    def settle(self, task: TaskConfig, prepared: Any, key: str = "task.") -> TaskConfig:
        return class_weights.settled(task, prepared.labels, prepared.train.labels, key)

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        tokenizer: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Any:
        from ft_cli.tasks.objective import TaggingObjective

        assert labels is not None
        pad_id = tokenizer.pad_token_id or 0
        return TaggingObjective(
            net, labels, pad_id, compile_model, label_smoothing, task.class_weights
        )

    def predict_inputs(
        self,
        read: Any,
        tokenizer: Any,
        cfg: DataConfig,
        labels: list[str] | None,
        task: TaskConfig | None = None,
    ) -> tuple[EncodedSplit, Any, Any]:
        # Words as a list (jsonl, parquet), or a string of words split on spaces.
        raw = read("data.text_column", cfg.text_column, keep_lists=True)
        words = [value if isinstance(value, list) else str(value).split() for value in raw]
        assert labels is not None
        stride = window_stride(cfg) if documents.windowed(cfg) else None
        split = tagging.encode_tagged(
            tokenizer, words, None, labels, cfg.max_length, False, "input", stride
        )
        collate = tagging.TaggedCollator(split, tokenizer.pad_token_id or 0)
        if split.rows is None:
            return split, collate, [len(row) for row in words]
        assert split.word_ids is not None
        return (
            split,
            collate,
            [(own, len(words[row])) for own, row in zip(split.word_ids, split.rows, strict=True)],
        )

    def prediction(
        self, logits: Any, labels: list[str] | None, extra: Any, lists: bool
    ) -> dict[str, Any]:
        """A tag per word (its first sub-token's; read in windows, from the window where
        the word has the most context); words cut off by max_length get O."""
        assert labels is not None
        if isinstance(logits, list):  # a long row's windows
            parts = [
                (own, word_ids, starts[: len(word_ids)].bool().tolist(), None)
                for own, (starts, (word_ids, _)) in zip(logits, extra, strict=True)
            ]
            words = extra[0][1][1]
            found = dict(zip(*documents.stitch(parts)[:2], strict=True))
            tags = [labels[found[w]] if w in found else "O" for w in range(words)]
        else:
            starts, words = extra
            picked = logits[starts.bool()].argmax(-1).tolist()
            tags = [labels[i] for i in picked] + ["O"] * (words - len(picked))
        return {"predicted_tags": tags if lists else " ".join(tags)}


TASK = TokenClassification()
