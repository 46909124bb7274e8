"""Each split as the checks read it: a normalised identity per row (its text, or its
file's content hash), its label, and what its file measures (an image's size, a
clip's duration)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHORT = 3  # characters: a text input shorter than this (and not empty) is "very short"


@dataclass
class SplitRows:
    name: str
    keys: list[str]  # the normalised identity of each row's inputs ("": nothing in it)
    texts: list[str] | None  # the normalised text (None: the inputs are files)
    labels: list[str] | None  # each row's label as text (None: the task reads no label)
    # What label counts count: each row's label, or each tag of a row's tag list.
    counted: list[str] | None = None
    measures: list[dict[str, float]] = field(default_factory=list)  # per file
    empty: list[int] = field(default_factory=list)
    short: list[int] = field(default_factory=list)


def normalise(value: Any) -> str:
    """Text as the checks compare it: NFKC, case-folded, whitespace collapsed; a list of
    words joined by spaces; anything else (a conversation) as sorted JSON."""
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    elif not isinstance(value, str):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", value).casefold()).strip()


def content_hash(value: Any) -> str:
    """A file's identity: the SHA-1 of its bytes (a path, bytes, or a hub cell of either)."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str):
        try:
            value = Path(value).read_bytes()
        except OSError:
            return ""  # the loader names a missing file
    return hashlib.sha1(value).hexdigest() if isinstance(value, bytes) else ""


def read_split(task: Any, cfg: Any, name: str, table: Any) -> SplitRows:
    """The split's rows as the checks compare them."""
    modality = task.inputs
    columns = [c for c in task.input_columns(cfg).values() if c in table.column_names]
    labels = counted = None
    if task.uses_labels and cfg.label_column in table.column_names:
        cells = table[cfg.label_column]
        labels = [normalise(v) if isinstance(v, (str, list)) else str(v) for v in cells]
        counted = labels
        if any(isinstance(v, list) for v in cells):  # tags: a label per word
            counted = [str(tag) for v in cells if isinstance(v, list) for tag in v]
    if modality.names_files:
        files = table[columns[0]] if columns else []
        return SplitRows(
            name,
            [content_hash(v) for v in files],
            None,
            labels,
            counted,
            [modality.measure(v) for v in files],
        )
    values = [table[c] for c in columns]
    parts = [[normalise(v) for v in column] for column in values]
    keys, texts, empty, short = [], [], [], []
    for index, row in enumerate(zip(*parts, strict=True)):
        keys.append(" \x1f ".join(row) if all(row) else "")
        texts.append(" ".join(row))
        if not all(row):
            empty.append(index)
        elif min(len(p) for p in row) < SHORT:
            short.append(index)
    return SplitRows(name, keys, texts, labels, counted, empty=empty, short=short)
