"""Repeated rows: exact duplicates and conflicting labels within a split, rows shared
between splits, near duplicates (MinHash over character 5-grams, through datasketch)
and evaluation rows that hold a whole training row (SST-2's phrases inside its
sentences).

Every function takes the rows' normalised identities (`rows.SplitRows.keys`) or
texts and returns row indices, so a finding can name the rows to fix.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

NEAR_THRESHOLD = 0.8  # the estimated Jaccard similarity of 5-gram sets that counts as near
NEAR_PERMUTATIONS = 64  # MinHash permutations: ~0.06 standard error at 0.8
NEAR_SHORTEST = 20  # characters: shorter texts share most 5-grams by chance of wording
SHINGLE = 5
CONTAINED_WORDS = 4  # a training row of fewer words inside an evaluation row says little


def groups(keys: list[str]) -> list[list[int]]:
    """Groups of two or more rows with the same identity (empty rows left out), in order."""
    found: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        if key:
            found[key].append(index)
    return [rows for rows in found.values() if len(rows) > 1]


def conflicts(keys: list[str], labels: list[str]) -> list[dict[str, Any]]:
    """The groups of rows with one identity but more than one label: {rows, labels}."""
    found = []
    for rows in groups(keys):
        seen = sorted({labels[i] for i in rows})
        if len(seen) > 1:
            found.append({"rows": rows, "labels": seen})
    return found


def shared(train: list[str], other: list[str]) -> list[list[int]]:
    """[row of `other`, a train row with its identity] for each row found in train."""
    first: dict[str, int] = {}
    for index, key in enumerate(train):
        if key:
            first.setdefault(key, index)
    return [[index, first[key]] for index, key in enumerate(other) if key in first]


def near_groups(texts: list[str], exact: list[list[int]]) -> list[list[int]] | None:
    """Groups of rows whose texts are near duplicates but not the same (None: datasketch is
    not installed). MinHash LSH proposes candidates; the 5-gram sets confirm each pair."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        return None
    same = {i: rows[0] for rows in exact for i in rows}
    candidates = [
        i for i, text in enumerate(texts) if len(text) >= NEAR_SHORTEST and same.get(i, i) == i
    ]
    shingles = [_shingles(texts[i]) for i in candidates]
    if not shingles:
        return []
    hashes = MinHash.bulk(
        [[s.encode() for s in own] for own in shingles], num_perm=NEAR_PERMUTATIONS
    )
    index = MinHashLSH(threshold=NEAR_THRESHOLD, num_perm=NEAR_PERMUTATIONS)
    with index.insertion_session() as session:
        for position, found in enumerate(hashes):
            session.insert(position, found)
    parent = list(range(len(candidates)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for position, found in enumerate(hashes):
        for other in index.query(found):
            if other > position and _jaccard(shingles[position], shingles[other]) >= NEAR_THRESHOLD:
                parent[root(other)] = root(position)
    together: dict[int, list[int]] = defaultdict(list)
    for position, row in enumerate(candidates):
        together[root(position)].append(row)
    return [rows for rows in together.values() if len(rows) > 1]


def contained(train: list[str], other: list[str]) -> list[list[int]]:
    """[row of `other`, a train row of CONTAINED_WORDS or more words found inside it, word
    for word] for each such row (the longest train row found)."""
    by_text: dict[tuple[str, ...], int] = {}
    longest = 0
    for index, text in enumerate(train):
        words = tuple(text.split())
        if len(words) >= CONTAINED_WORDS:
            by_text.setdefault(words, index)
            longest = max(longest, len(words))
    found = []
    for index, text in enumerate(other):
        words = text.split()
        best = None
        for size in range(min(len(words) - 1, longest), CONTAINED_WORDS - 1, -1):
            best = next(
                (
                    by_text[tuple(words[start : start + size])]
                    for start in range(len(words) - size + 1)
                    if tuple(words[start : start + size]) in by_text
                ),
                None,
            )
            if best is not None:
                break
        if best is not None:
            found.append([index, best])
    return found


def _shingles(text: str) -> set[str]:
    return {text[i : i + SHINGLE] for i in range(max(1, len(text) - SHINGLE + 1))}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(len(a | b), 1)
