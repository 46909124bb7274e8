"""Training rows whose label is most likely wrong, from out-of-fold predicted probabilities
(each row scored by a model that never trained on it: `train.folds`), through cleanlab's
confident learning.

Every row gets cleanlab's label quality (self-confidence: the probability the model
gives the row's own label); the rows confident learning flags (prune by noise rate)
come first, each ranked by that quality, with the label the model suggests.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ft_cli.errors import FtError

OUTPUT = "label_errors.csv"


def read_out_of_fold(path: Path) -> tuple[list[int], list[str], list[str], np.ndarray]:
    """(rows, given labels, class names, probabilities [rows, classes]) of an
    oof_predictions.csv that `train.folds` wrote."""
    if not path.is_file():
        raise FtError(
            f"--from: no {path.name} in {path.parent}; give a run of train.folds=K (it writes"
            " the out-of-fold predictions), or leave --from out to train one"
        )
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "label" not in rows[0]:
        raise FtError(f"--from: {path} holds no labels and class probabilities")
    names = [key.removeprefix("probability_") for key in rows[0] if key.startswith("probability_")]
    if not names:
        raise FtError(f"--from: {path} holds no class probabilities (a score task?)")
    probs = np.array([[float(r[f"probability_{n}"]) for n in names] for r in rows])
    return [int(r["row"]) for r in rows], [r["label"] for r in rows], names, probs


def rank(given: list[str], names: list[str], probs: np.ndarray) -> list[dict[str, Any]]:
    """Every row by how likely its label is wrong: flagged first, then by label quality."""
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise FtError("--label-errors needs cleanlab: pip install 'ft-cli[checks]'") from None
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[g] for g in given])
    probs = probs / probs.sum(axis=1, keepdims=True)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    order = sorted(range(len(labels)), key=lambda i: (not flagged[i], quality[i]))
    return [
        {
            "position": i,
            "given": given[i],
            "suggested": names[int(probs[i].argmax())],
            "quality": round(float(quality[i]), 6),
            "flagged": bool(flagged[i]),
        }
        for i in order
    ]


def find(
    rows: list[int], given: list[str], names: list[str], probs: np.ndarray, target: Path
) -> list[dict[str, Any]]:
    """Rank the rows, write them to `target` (a CSV, most likely wrong first) and return
    the flagged ones."""
    ranked = rank(given, names, probs)
    for line in ranked:
        line["row"] = rows[line.pop("position")]
    with open(target, "w", newline="", encoding="utf-8") as handle:
        fields = ["row", "given", "suggested", "quality", "flagged"]
        out = csv.DictWriter(handle, fieldnames=fields)
        out.writeheader()
        out.writerows(ranked)
    return [line for line in ranked if line["flagged"]]
