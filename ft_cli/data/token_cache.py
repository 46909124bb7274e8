"""A disk cache of tokenized splits, so a repeated run skips tokenization.

The key is a SHA-256 of everything the tokens depend on: the texts, the
tokenizer (its full definition, not its name), and the settings that shape the
rows (max_length, packing, ...). Entries are plain numpy archives read with
`allow_pickle=False`; a damaged entry is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ft_cli import paths
from ft_cli.data.encoded import EncodedSplit

VERSION = "1"  # bump when the layout of an entry changes


def cache_dir() -> Path:
    """$FT_CACHE_DIR, else $XDG_CACHE_HOME/ft/tokenized, else ~/.cache/ft/tokenized."""
    if os.environ.get("FT_CACHE_DIR"):
        return paths.cache_root()
    return paths.cache_root() / "tokenized"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = backend.to_str()
    else:
        definition = repr(sorted(tokenizer.get_vocab().items()))
    special = repr(sorted(tokenizer.all_special_ids))
    return f"{type(tokenizer).__name__}|{special}|{definition}"


def cache_key(tokenizer: Any, texts: Sequence[Sequence[str | None]], settings: str) -> str:
    digest = hashlib.sha256(f"{VERSION}|{settings}|".encode())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    for column in texts:
        digest.update(b"\x00column")
        for text in column:
            digest.update(b"\x01" + (text or "").encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def cached(key: str, enabled: bool, compute: Callable[[], EncodedSplit]) -> EncodedSplit:
    """The split stored under `key`, or `compute()`'s result (then stored)."""
    if not enabled:
        return compute()
    path = cache_dir() / f"{key}.npz"
    loaded = _load(path)
    if loaded is not None:
        return loaded
    split = compute()
    _save(path, split)
    return split


def _flatten(rows: list[list[Any]], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    flat = np.fromiter((v for r in rows for v in r), dtype=dtype, count=int(offsets[-1]))
    return flat, offsets


def _rows(flat: np.ndarray, offsets: np.ndarray) -> list[list[Any]]:
    values = flat.tolist()
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _save(path: Path, split: EncodedSplit) -> None:
    arrays: dict[str, np.ndarray] = {}
    arrays["input_ids"], arrays["offsets"] = _flatten(split.input_ids, np.int32)
    if split.token_type_ids is not None:
        arrays["token_type_ids"], _ = _flatten(split.token_type_ids, np.int8)
    if split.word_continues is not None:
        arrays["word_continues"], _ = _flatten(split.word_continues, np.bool_)
    if split.positions is not None:
        arrays["positions"], _ = _flatten(split.positions, np.int32)
    if split.trained is not None:
        arrays["trained"], _ = _flatten(split.trained, np.bool_)
    if split.rows is not None:  # a long input's windows: the row of each
        arrays["rows"] = np.asarray(split.rows, dtype=np.int64)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            np.savez(handle, **arrays)
        os.replace(handle.name, path)  # readers never see a half-written entry
    except OSError:
        pass  # a read-only or full cache only costs the next run a re-tokenization


def _load(path: Path) -> EncodedSplit | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            offsets = archive["offsets"]
            ids = _rows(archive["input_ids"], offsets)
            types = word = positions = trained = None
            if "token_type_ids" in archive:
                types = _rows(archive["token_type_ids"], offsets)
            if "word_continues" in archive:
                word = _rows(archive["word_continues"], offsets)
            if "positions" in archive:
                positions = _rows(archive["positions"], offsets)
            if "trained" in archive:
                trained = _rows(archive["trained"], offsets)
            owners = archive["rows"].tolist() if "rows" in archive else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # damaged: recompute and overwrite
    return EncodedSplit(
        input_ids=ids,
        token_type_ids=types,
        labels=[],
        word_continues=word,
        rows=owners,
        positions=positions,
        trained=trained,
    )
