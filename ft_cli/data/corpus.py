"""Text for masked-LM pretraining: documents from any split, tokenized once, packed.

Documents come from `data.text_column` (and `data.text_pair_column`, each its
own document), so the text of a labelled dataset serves as a corpus too.
Packing `group_texts` joins the documents, separated by the tokenizer's
separator, and cuts the stream into blocks of exactly `max_length` tokens
(special tokens included): no padding at all, only the short tail is dropped.
`line_by_line` keeps one document per row, truncated to `max_length`.
"""

from __future__ import annotations

from typing import Any

from ft_cli.config.schema import DataConfig, Packing, TaskConfig
from ft_cli.data import token_cache
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError


def documents(cfg: DataConfig, dataset: Any) -> list[str]:
    """The non-blank texts of a split, in order."""
    columns = [cfg.text_column]
    if cfg.text_pair_column is not None:
        columns.append(cfg.text_pair_column)
    texts = []
    for column in columns:
        texts += [t for t in dataset[column] if isinstance(t, str) and t.strip()]
    return texts


def special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one text ([CLS], [SEP])."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a")["input_ids"]
    for start in range(len(framed) - len(bare) + 1):
        if framed[start : start + len(bare)] == bare:
            return framed[:start], framed[start + len(bare) :]
    return [], []


def word_continues(encoding: Any, index: int) -> list[bool]:
    """For each token of row `index`: does it continue the word of the token before?"""
    word_ids = encoding.word_ids(index)
    flags, previous = [], None
    for word in word_ids:
        flags.append(word is not None and word == previous)
        previous = word
    return flags


def encode_corpus(
    cfg: DataConfig, task: TaskConfig, tokenizer: Any, dataset: Any, split: str
) -> EncodedSplit:
    texts = documents(cfg, dataset)
    if not texts:
        raise FtError(
            f"data.text_column: the {split} split has no text in column '{cfg.text_column}';"
            " check the file or the column name"
        )
    if task.whole_word_mask and not getattr(tokenizer, "is_fast", False):
        raise FtError(
            "task.whole_word_mask needs a fast tokenizer (tokenizer.json) to find word"
            " boundaries; set task.whole_word_mask=false"
        )
    words = task.whole_word_mask

    def tokenize() -> EncodedSplit:
        if task.packing == Packing.line_by_line:
            encoded = tokenizer(texts, truncation=True, max_length=cfg.max_length)
            rows = encoded["input_ids"]
            flags = [word_continues(encoded, i) for i in range(len(rows))] if words else None
        else:
            rows, flags = _group_texts(texts, tokenizer, cfg.max_length, split, words)
        return EncodedSplit(rows, token_type_ids=None, labels=[], word_continues=flags)

    settings = f"mlm|{task.packing.value}|{cfg.max_length}|{words}"
    encoded = token_cache.cached(
        token_cache.cache_key(tokenizer, [texts], settings), cfg.cache, tokenize
    )
    encoded.labels = [0] * len(encoded)  # the masked tokens are the targets, drawn per batch
    return encoded


def _group_texts(
    texts: list[str], tokenizer: Any, max_length: int, split: str, words: bool
) -> tuple[list[list[int]], list[list[bool]] | None]:
    prefix, suffix = special_frame(tokenizer)
    separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else None
    if separator is None:
        separator = tokenizer.eos_token_id
    block = max_length - len(prefix) - len(suffix)
    if block < 1:
        raise FtError(f"data.max_length={max_length} leaves no room between the special tokens")
    encoded = tokenizer(texts, add_special_tokens=False)
    stream: list[int] = []
    continues: list[bool] = []
    for index, ids in enumerate(encoded["input_ids"]):
        stream += ids
        if separator is not None:
            stream.append(separator)
        if words:
            continues += word_continues(encoded, index) + [False] * (separator is not None)
    blocks = len(stream) // block
    if blocks == 0:
        raise FtError(
            f"data: the {split} split has {len(stream)} tokens, fewer than one block of"
            f" data.max_length={max_length}; lower data.max_length or set"
            " task.packing=line_by_line"
        )
    starts = range(0, blocks * block, block)
    rows = [prefix + stream[start : start + block] + suffix for start in starts]
    if not words:
        return rows, None
    edge = [False] * len(prefix), [False] * len(suffix)
    flags = [edge[0] + continues[start : start + block] + edge[1] for start in starts]
    return rows, flags
