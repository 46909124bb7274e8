"""Segment pairs for next-sentence prediction (BERT's pretraining): half of the pairs
continue their first segment, half end with a segment of another document.

A document (a row of `data.text_column`, or a paragraph of a text file) is cut
into segments after sentence and clause punctuation; each document with two or
more segments gives one pair, cut at a random segment boundary. The pairs are a
pure function of the documents, so every run and every resume sees the same ones.
"""

from __future__ import annotations

import random
import re
from typing import Any

from ft_cli.config.schema import DataConfig, TaskConfig
from ft_cli.data import corpus, token_cache
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError

IS_NEXT, NOT_NEXT = 0, 1  # transformers' next_sentence_label convention
_BOUNDARY = re.compile(r"(?<=[.!?;,:])\s+")
SEED = 20_181_011  # pairs do not depend on the run's seed: the data is the data


def segments(text: str) -> list[str]:
    return [piece for piece in _BOUNDARY.split(text.strip()) if piece.strip()]


def sentence_pairs(texts: list[str], seed: int = SEED) -> tuple[list[str], list[str], list[int]]:
    """(first segments, second segments, labels): exactly half (rounded down) NOT_NEXT."""
    documents = [segments(t) for t in texts]
    usable = [d for d in documents if len(d) >= 2]
    if len(usable) < 2:
        return [], [], []
    rng = random.Random(seed)
    replaced = set(rng.sample(range(len(usable)), len(usable) // 2))
    firsts, seconds, labels = [], [], []
    for index, parts in enumerate(usable):
        cut = rng.randrange(1, len(parts))
        first, second = " ".join(parts[:cut]), " ".join(parts[cut:])
        label = IS_NEXT
        if index in replaced:
            other = _other_suffix(usable, index, {first, second}, rng)
            if other is not None:
                second, label = other, NOT_NEXT
        firsts.append(first)
        seconds.append(second)
        labels.append(label)
    return firsts, seconds, labels


def _other_suffix(
    documents: list[list[str]], own: int, avoid: set[str], rng: random.Random
) -> str | None:
    """A segment run of another document, never the pair's own text."""
    for _ in range(20):
        pick = rng.randrange(len(documents) - 1)
        pick += pick >= own  # any document but this one
        parts = documents[pick]
        text = " ".join(parts[rng.randrange(1, len(parts)) :])
        if text not in avoid:
            return text
    return None


def encode_pairs(
    cfg: DataConfig, task: TaskConfig, tokenizer: Any, dataset: Any, split: str
) -> EncodedSplit:
    """The split's segment pairs, tokenized as [CLS] A [SEP] B [SEP]; labels are NSP's."""
    texts = corpus.documents(cfg, dataset)
    firsts, seconds, labels = sentence_pairs(texts)
    if not firsts:
        raise FtError(
            f"task.nsp=true: the {split} split has fewer than 2 documents of two or more"
            " sentences or clauses to pair; use longer documents (data.text_documents=paragraph"
            " for text files) or task.nsp=false"
        )
    words = task.whole_word_mask

    def tokenize() -> EncodedSplit:
        encoded = tokenizer(firsts, seconds, truncation=True, max_length=cfg.max_length)
        rows = encoded["input_ids"]
        flags = [corpus.word_continues(encoded, i) for i in range(len(rows))] if words else None
        return EncodedSplit(rows, encoded.get("token_type_ids"), labels=[], word_continues=flags)

    settings = f"nsp|{cfg.max_length}|{words}|{SEED}"
    key = token_cache.cache_key(tokenizer, [firsts, seconds], settings)
    encoded = token_cache.cached(key, cfg.cache, tokenize)
    encoded.labels = labels
    return encoded
