"""K-fold splits of the train split: which fold each row falls in.

Rows of one `data.group_column` value always share a fold (whole groups go, largest
first, to the fold with the fewest rows); otherwise each class's rows are dealt to
the folds in turn (stratified), or all rows when the task has no class per row.
Shuffled by the seed first, so a fold is a pure function of the rows and the seed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from ft_cli.errors import FtError


def assignment(
    table: Any, count: int, seed: int, labels: str | None, groups: str | None
) -> list[int]:
    """The fold of each row of `table` (`labels`, `groups`: columns to stratify or group
    by, None: not)."""
    rows = len(table)
    if count > rows:
        raise FtError(f"train.folds={count}: the train split has {rows} rows; use fewer folds")
    rng = np.random.default_rng(seed)
    fold = [0] * rows
    if groups is not None:
        if groups not in table.column_names:
            raise FtError(
                f"data.group_column: no column '{groups}' in the train split"
                f" ({', '.join(table.column_names)})"
            )
        members: dict[str, list[int]] = defaultdict(list)
        for index, value in enumerate(table[groups]):
            members[str(value)].append(index)
        if len(members) < count:
            raise FtError(
                f"train.folds={count}: data.group_column '{groups}' has {len(members)} groups;"
                " every fold needs one"
            )
        order = [members[k] for k in rng.permutation(sorted(members))]
        order.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
        sizes = [0] * count
        for group in order:
            target = int(np.argmin(sizes))
            sizes[target] += len(group)
            for index in group:
                fold[index] = target
        return fold
    by_label: dict[str, list[int]] = defaultdict(list)
    values = table[labels] if labels is not None and labels in table.column_names else None
    for index in range(rows):
        by_label["" if values is None else str(values[index])].append(index)
    dealt = 0
    for label in sorted(by_label):
        for index in rng.permutation(by_label[label]).tolist():
            fold[index] = dealt % count
            dealt += 1
    return fold


def held_out(fold: list[int], k: int) -> tuple[list[int], list[int]]:
    """(the rows fold k trains on, the rows it holds out), in the table's order."""
    return [i for i, f in enumerate(fold) if f != k], [i for i, f in enumerate(fold) if f == k]
