"""Token classification: word tags aligned to sub-tokens, batches, IOB2 entity metrics.

Each row is a list of words with one tag per word (IOB2: B-TYPE opens an
entity, I-TYPE continues it, O is outside). The tokenizer splits words into
sub-tokens; the first sub-token of a word carries the word's tag and the
others are ignored by the loss (-100), unless `task.label_all_subtokens`
(then they carry it too, B- turned into I-). Metrics always read the first
sub-token of each word, so they are per word, as the data is.

Entities are counted the way seqeval does by default (conlleval): an entity
starts at B-X, or at I-X after O or after another type, and runs while I-X
follows; precision, recall and F1 are over exact (type, start, end) matches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from ft_cli.data import batching
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.tasks import windows

IGNORE = -100


def read_conll(path: str) -> dict[str, list[list[str]]]:
    """Sentences of a CoNLL file: a word per line (word first, tag last), blank lines between."""
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    tokens.append(words)
                    tags.append(labels)
                words, labels = [], []
                continue
            if len(fields) < 2:
                raise FtError(
                    f"data: {path} line {number}: '{line.strip()}' has no tag; a CoNLL line is"
                    " WORD [...] TAG, sentences separated by blank lines"
                )
            words.append(fields[0])
            labels.append(fields[-1])
    if words:
        tokens.append(words)
        tags.append(labels)
    return {"tokens": tokens, "tags": tags}


def tag_names(rows: list[list[str]]) -> list[str]:
    """The tags seen, O first, then by entity type with B- before I-."""
    seen = {str(tag) for row in rows for tag in row}
    return sorted(seen, key=lambda t: (t != "O", t[2:], t[:2]))


def encode_tagged(
    tokenizer: Any,
    words: list[list[str]],
    tags: list[list[str]] | None,
    labels: list[str],
    max_length: int,
    all_subtokens: bool,
    split: str,
    stride: int | None = None,
) -> EncodedSplit:
    """Tokenize rows of words; align word tags to sub-tokens. `stride`: read each row
    whole, in windows sharing that many tokens (`rows`, `word_ids`: each window's row and
    its tokens' words); None: truncate at `max_length`."""
    if not getattr(tokenizer, "is_fast", False):
        raise FtError("task=token_classification needs a fast tokenizer (word ids per token)")
    rows = [[str(w) for w in row] for row in words]
    encoded, owners, starts = _tokenize_words(tokenizer, rows, max_length, stride)
    ids = {name: i for i, name in enumerate(labels)}
    if tags is not None:
        for index, row_tags in enumerate(tags):
            _check_tags(row_tags, rows[index], ids, labels, index, split)
    aligned: list[list[int]] = []
    word_ids: list[list[int | None]] = []
    for index in range(len(encoded["input_ids"])):
        row = owners[index] if owners is not None else index
        own = encoded.word_ids(index)
        word_ids.append(own)
        if tags is None:
            aligned.append([IGNORE] * len(own))
            continue
        row_ids = align(own, [ids[str(t)] for t in tags[row]], labels, all_subtokens)
        for position, (word, start) in enumerate(zip(own, starts[index], strict=True)):
            begins = word is not None and (position == 0 or own[position - 1] != word)
            if begins and not start:  # a word begun in the window before: learned there
                row_ids[position] = IGNORE
        aligned.append(row_ids)
    split_rows = EncodedSplit(encoded["input_ids"], encoded.get("token_type_ids"), aligned)
    split_rows.word_starts = starts
    split_rows.rows = owners
    split_rows.word_ids = word_ids if owners is not None else None
    return split_rows


def _check_tags(
    row_tags: list[Any],
    words: list[str],
    ids: dict[str, int],
    labels: list[str],
    index: int,
    split: str,
) -> None:
    if len(row_tags) != len(words):
        raise FtError(
            f"data: row {index} of the {split} split has {len(words)} words but"
            f" {len(row_tags)} tags; give one tag per word"
        )
    for tag in row_tags:
        if str(tag) not in ids:
            raise FtError(
                f"data.label_column: tag '{tag}' in row {index} of the {split} split is not"
                f" in the label set [{', '.join(labels)}]; fix the data or list it in"
                " task.labels"
            )


def _tokenize_words(
    tokenizer: Any, rows: list[list[str]], max_length: int, stride: int | None
) -> tuple[Any, list[int] | None, list[list[bool]]]:
    """(the encoding, each window's row or None without windows, each token's "first
    sub-token of its word" flag). A window that starts inside a word the window before
    it holds leaves that word to the earlier window."""
    if stride is None:
        encoded = tokenizer(rows, is_split_into_words=True, truncation=True, max_length=max_length)
        return encoded, None, [first_subtokens(encoded.word_ids(i)) for i in range(len(rows))]
    windows.check_room(tokenizer, None, max_length, stride, second="row of words")
    encoded = tokenizer(
        rows,
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
    )
    owners = list(encoded["overflow_to_sample_mapping"])
    starts: list[list[bool]] = []
    for index, owner in enumerate(owners):
        word_ids = encoded.word_ids(index)
        flags = first_subtokens(word_ids)
        if index > 0 and owners[index - 1] == owner:
            earlier = {w for w in encoded.word_ids(index - 1) if w is not None}
            first = next((w for w in word_ids if w is not None), None)
            if first in earlier:
                flags = [f and w != first for f, w in zip(flags, word_ids, strict=True)]
        starts.append(flags)
    return encoded, owners, starts


def first_subtokens(word_ids: list[int | None]) -> list[bool]:
    previous = None
    flags = []
    for word in word_ids:
        flags.append(word is not None and word != previous)
        previous = word
    return flags


def align(
    word_ids: list[int | None], word_tags: list[int], labels: list[str], all_subtokens: bool
) -> list[int]:
    """A label id per sub-token: the word's tag on its first, -100 (or I-) on the rest."""
    inside = {
        i: labels.index("I-" + name[2:])
        for i, name in enumerate(labels)
        if name.startswith("B-") and "I-" + name[2:] in labels
    }
    out, previous = [], None
    for word in word_ids:
        if word is None:
            out.append(IGNORE)
        elif word != previous:
            out.append(word_tags[word])
        else:
            tag = word_tags[word]
            out.append(inside.get(tag, tag) if all_subtokens else IGNORE)
        previous = word
    return out


class TaggedCollator:
    """Pads rows of sub-tokens; labels padded with -100, word starts with False."""

    def __init__(
        self, split: EncodedSplit, pad_id: int, multiple: int = 1, windows: bool = False
    ) -> None:
        self.split, self.pad_id, self.multiple = split, pad_id, multiple
        self.windows = windows  # add each row's index ("window"): scored by its input row
        self.cap = max(split.lengths(), default=0) if multiple > 1 else 0

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        longest = max(len(self.split.input_ids[i]) for i in indices)
        width = batching.padded_width(longest, self.multiple, self.cap)
        shape = (len(indices), width)
        batch = {
            "input_ids": torch.full(shape, self.pad_id, dtype=torch.long),
            "attention_mask": torch.zeros(shape, dtype=torch.long),
            "labels": torch.full(shape, IGNORE, dtype=torch.long),
            "word_starts": torch.zeros(shape, dtype=torch.long),
        }
        if self.split.token_type_ids is not None:
            batch["token_type_ids"] = torch.zeros(shape, dtype=torch.long)
        for j, i in enumerate(indices):
            n = len(self.split.input_ids[i])
            batch["input_ids"][j, :n] = torch.tensor(self.split.input_ids[i])
            batch["attention_mask"][j, :n] = 1
            batch["labels"][j, :n] = torch.tensor(self.split.labels[i])
            batch["word_starts"][j, :n] = torch.tensor(self.split.word_starts[i])
            if self.split.token_type_ids is not None:
                batch["token_type_ids"][j, :n] = torch.tensor(self.split.token_type_ids[i])
        if self.windows:
            batch["window"] = torch.tensor(indices)
        return batch


def tagging_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
) -> Any:
    """Mean cross-entropy over the labelled sub-tokens (targets[..., 0]; -100 ignored);
    with class `weights`, their weighted mean."""
    flat = logits.float().reshape(-1, logits.shape[-1])
    return F.cross_entropy(
        flat,
        targets[..., 0].reshape(-1),
        weight=weights,
        ignore_index=IGNORE,
        label_smoothing=smoothing,
    )


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first word, last word + 1) of every entity in a tag sequence (IOB2, lenient)."""
    found = set()
    kind, start = None, 0
    for index, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-") if tag != "O" else ("O", "", "")
        continues = prefix == "I" and name == kind
        if kind is not None and not continues:
            found.add((kind, start, index))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = name, index
    return found


class TaggingMetrics:
    """Entity precision, recall and F1, word accuracy and sub-token loss over a pass."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.truth: list[list[str]] = []
        self.guess: list[list[str]] = []
        self.loss_sum, self.count = 0.0, 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits, targets = logits.detach().float().cpu(), targets.cpu()
        labelled = targets[..., 0] != IGNORE
        count = int(labelled.sum())
        if count:
            self.loss_sum += float(tagging_loss(logits, targets)) * count
            self.count += count
        predicted = logits.argmax(-1)
        for row in range(len(targets)):
            words = (targets[row, :, 1] == 1) & labelled[row]
            self.truth.append([self.labels[i] for i in targets[row, words, 0].tolist()])
            self.guess.append([self.labels[i] for i in predicted[row, words].tolist()])

    def merge(self, others: list[TaggingMetrics]) -> TaggingMetrics:
        for other in others:
            self.truth += other.truth
            self.guess += other.guess
            self.loss_sum += other.loss_sum
            self.count += other.count
        return self

    def compute(self) -> dict[str, float]:
        return {**entity_scores(self.truth, self.guess), "loss": self.loss_sum / max(self.count, 1)}


def entity_scores(truth: list[list[str]], guess: list[list[str]]) -> dict[str, float]:
    correct = predicted = actual = 0
    words = right = 0
    for true_tags, guessed in zip(truth, guess, strict=True):
        true_entities, guessed_entities = entities(true_tags), entities(guessed)
        correct += len(true_entities & guessed_entities)
        predicted += len(guessed_entities)
        actual += len(true_entities)
        words += len(true_tags)
        right += sum(a == b for a, b in zip(true_tags, guessed, strict=True))
    precision = correct / predicted if predicted else 0.0
    recall = correct / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "accuracy": right / words if words else 0.0,
    }


def conll_dataset(path: str, text_column: str, label_column: str) -> Any:
    import datasets

    if not Path(path).is_file():
        raise FtError(f"data: CoNLL file '{path}' does not exist")
    rows = read_conll(path)
    return datasets.Dataset.from_dict({text_column: rows["tokens"], label_column: rows["tags"]})
