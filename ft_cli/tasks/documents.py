"""Long inputs read whole, in windows (`data.long_inputs=windows`), for classification,
regression and token classification.

A row longer than `data.max_length` tokens is cut into windows that overlap by
`data.stride` tokens (a pair's first text is kept whole in each window, its second is
cut). Training sees every window with its row's label (classification, regression) or
its own words' tags (token classification). Evaluation and prediction are per row: a
row's window logits combine by `data.window_pooling` (mean, per-class max, or the first
window's); a word's tag comes from the window where it has the most context on both
sides. Metrics count rows and words, never windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ft_cli.config.schema import DataConfig, LongInputs, WindowPooling, window_stride
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.tasks import tagging, windows


def windowed(cfg: DataConfig) -> bool:
    return cfg.long_inputs == LongInputs.windows


def encode_texts(
    tokenizer: Any, texts: list[str], pairs: list[str] | None, cfg: DataConfig
) -> EncodedSplit:
    """Each row (or pair) as one truncated input, or, with windows, as all its windows
    (`rows`: the row of each)."""
    if not windowed(cfg):
        encoded = tokenizer(texts, pairs, truncation=True, max_length=cfg.max_length)
        return EncodedSplit(encoded["input_ids"], encoded.get("token_type_ids"), labels=[])
    stride = window_stride(cfg)
    windows.check_room(tokenizer, texts if pairs is not None else None, cfg.max_length, stride)
    encoded = tokenizer(
        texts,
        pairs,
        truncation="only_second" if pairs is not None else True,
        max_length=cfg.max_length,
        stride=stride,
        return_overflowing_tokens=True,
    )
    return EncodedSplit(
        encoded["input_ids"],
        encoded.get("token_type_ids"),
        labels=[],
        rows=list(encoded["overflow_to_sample_mapping"]),
    )


def spread(values: Sequence[Any], split: EncodedSplit) -> list[Any]:
    """Each row's value repeated for each of its windows (a split without windows: as is)."""
    if split.rows is None:
        return list(values)
    return [values[row] for row in split.rows]


def pool(logits: torch.Tensor, how: WindowPooling | str) -> torch.Tensor:
    """One row's logits from its windows' ([windows, outputs])."""
    how = WindowPooling(how)
    if how == WindowPooling.mean:
        return logits.mean(0)
    if how == WindowPooling.max:
        return logits.max(0).values
    return logits[0]


def pooled_rows(
    window_logits: dict[int, torch.Tensor], owners: list[int], how: WindowPooling | str
) -> tuple[list[int], torch.Tensor]:
    """(the rows, in order, and their pooled logits) from the logits of their windows."""
    by_row: dict[int, list[torch.Tensor]] = {}
    for window in sorted(window_logits):
        by_row.setdefault(owners[window], []).append(window_logits[window])
    rows = sorted(by_row)
    return rows, torch.stack([pool(torch.stack(by_row[row]), how) for row in rows])


class PooledMetrics:
    """The task's own metrics over rows, from their windows' logits: gathered as
    evaluation goes (several processes' parts merge), pooled in `compute`."""

    def __init__(self, inner: Any, split: EncodedSplit, how: WindowPooling | str) -> None:
        assert split.rows is not None
        self.inner, self.split, self.how = inner, split, how
        self.logits: dict[int, torch.Tensor] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "split": None}  # every process holds the split already

    def update(self, logits: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> None:
        _, window = targets
        for row, index in zip(logits.detach().float().cpu(), window.tolist(), strict=True):
            self.logits[index] = row

    def merge(self, others: list[PooledMetrics]) -> PooledMetrics:
        for other in others:
            self.logits.update(other.logits)
        return self

    def compute(self) -> dict[str, float]:
        assert self.split.rows is not None
        rows, pooled = pooled_rows(self.logits, self.split.rows, self.how)
        first = {}
        for window, row in enumerate(self.split.rows):
            first.setdefault(row, window)
        self.inner.update(pooled, torch.tensor([self.split.labels[first[row]] for row in rows]))
        return self.inner.compute()


def context_of(position: int, word_starts: Sequence[bool], length: int) -> int:
    """How many tokens a word at `position` has on its poorer side within its window."""
    content = [i for i, start in enumerate(word_starts) if start]
    first = content[0] if content else 1
    return min(position - first, length - 2 - position)


def stitch(
    windows_of_row: list[tuple[torch.Tensor, list[int | None], list[bool], list[int] | None]],
) -> tuple[list[int], list[int], list[int]]:
    """(the row's words, in order, each one's predicted tag id, its true tag id or -100)
    over a row's windows; each
    entry is (logits [tokens, tags], word ids, word starts, tag ids or None) of a window.
    A word's tag comes from the window where it has the most context on both sides."""
    best: dict[int, tuple[int, int, int]] = {}  # word -> (context, predicted, true)
    for logits, word_ids, starts, tags in windows_of_row:
        predicted = logits.argmax(-1).tolist()
        for position, (word, start) in enumerate(zip(word_ids, starts, strict=True)):
            if word is None or not start:
                continue
            context = context_of(position, starts, len(word_ids))
            true = tags[position] if tags is not None else tagging.IGNORE
            if word not in best or context > best[word][0]:
                best[word] = (context, predicted[position], true)
    words = sorted(best)
    return words, [best[w][1] for w in words], [best[w][2] for w in words]


class StitchedTagMetrics:
    """Entity metrics over whole rows of words, each word tagged from its best window;
    the loss is the windows' sub-token loss."""

    def __init__(self, labels: list[str], split: EncodedSplit) -> None:
        assert split.rows is not None and split.word_ids is not None
        self.labels, self.split = labels, split
        self.logits: dict[int, torch.Tensor] = {}
        self.loss_sum, self.count = 0.0, 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "split": None}

    def update(self, logits: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> None:
        tags, window = targets
        logits, tags = logits.detach().float().cpu(), tags.cpu()
        labelled = int((tags[..., 0] != tagging.IGNORE).sum())
        if labelled:
            self.loss_sum += float(tagging.tagging_loss(logits, tags)) * labelled
            self.count += labelled
        for row, index in zip(logits, window.tolist(), strict=True):
            self.logits[index] = row[: len(self.split.input_ids[index])]

    def merge(self, others: list[StitchedTagMetrics]) -> StitchedTagMetrics:
        for other in others:
            self.logits.update(other.logits)
            self.loss_sum += other.loss_sum
            self.count += other.count
        return self

    def compute(self) -> dict[str, float]:
        split = self.split
        assert split.rows is not None and split.word_ids is not None
        assert split.word_starts is not None
        by_row: dict[int, list[Any]] = {}
        for window in sorted(self.logits):
            entry = (
                self.logits[window],
                split.word_ids[window],
                split.word_starts[window],
                split.labels[window],
            )
            by_row.setdefault(split.rows[window], []).append(entry)
        truth, guess = [], []
        for row in sorted(by_row):
            _, predicted, true = stitch(by_row[row])
            truth.append([self.labels[t] for t in true])
            guess.append([self.labels[p] for p in predicted])
        return {
            **tagging.entity_scores(truth, guess),
            "loss": self.loss_sum / max(self.count, 1),
        }


def length_rows(
    tokenizer: Any, texts: list[Any], pairs: list[str] | None, cfg: DataConfig, words: bool
) -> list[list[str]]:
    """What `ft explain` shows of a split's long inputs: how many rows truncation cuts and
    how much of their text it drops, and how many windows reading them whole makes."""
    if not texts:
        return []
    full = tokenizer(texts, pairs, is_split_into_words=words, add_special_tokens=True)
    lengths = [len(ids) for ids in full["input_ids"]]
    over = [n for n in lengths if n > cfg.max_length]
    dropped = sum(n - cfg.max_length for n in over)
    total = sum(lengths)
    rows = [
        [
            f"rows over data.max_length={cfg.max_length}",
            f"{len(over):,} of {len(lengths):,} ({len(over) / len(lengths):.1%}); the longest"
            f" {max(lengths):,} tokens",
        ],
        [
            "truncation drops",
            f"{dropped:,} of {total:,} tokens ({dropped / max(total, 1):.1%})"
            + (" (data.long_inputs=truncate)" if not windowed(cfg) else ""),
        ],
    ]
    stride = window_stride(cfg)
    try:
        if words:
            made = len(
                tagging.encode_tagged(
                    tokenizer, texts, None, ["O"], cfg.max_length, False, "train", stride
                ).input_ids
            )
        else:
            windowed_cfg = DataConfig(
                max_length=cfg.max_length, stride=stride, long_inputs=LongInputs.windows
            )
            made = len(encode_texts(tokenizer, texts, pairs, windowed_cfg).input_ids)
    except FtError as err:
        rows.append([f"windows (data.stride={stride})", f"none: {err}"])
        return rows
    rows.append(
        [
            f"windows (data.stride={stride})",
            f"{made:,} for {len(lengths):,} rows ({made / len(lengths):.2f} a row)"
            + (" (data.long_inputs=windows)" if windowed(cfg) else ""),
        ]
    )
    return rows
