"""A tokenized split held in memory: what batching, the cache and the engine share."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncodedSplit(torch.utils.data.Dataset):
    """One tokenized split held in memory."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[int] | list[float]
    # mlm whole-word masking: True where a token continues the word before it.
    word_continues: list[list[bool]] | None = None
    # token classification: True at the first sub-token of each word.
    word_starts: list[list[bool]] | None = None
    # The input row each row comes from, where one input makes several (a long one's
    # windows); None: a row each.
    rows: list[int] | None = None
    # token classification in windows: each token's word in its input row (None: none).
    word_ids: list[list[int | None]] | None = None
    # causal LM: each token's position in its own document (several packed in a row) and
    # whether the loss trains on it (None: every token).
    positions: list[list[int]] | None = None
    trained: list[list[bool]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> int:
        return index  # the collator gathers rows by index

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]
