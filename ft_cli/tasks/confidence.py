"""How well a classifier's confidence matches its accuracy: expected calibration error
over bins of equal counts (adaptive bins) and the points of a reliability diagram."""

from __future__ import annotations

import torch

ECE_BINS = 15  # equal-mass bins of the confidence


def adaptive_ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error over bins of equal counts: the mean gap between each
    bin's accuracy and its mean confidence, weighted by its rows."""
    confidence, guess = probs.float().max(-1)
    return ece_of(binned(confidence, guess == labels, bins))


def ece_of(found: list[tuple]) -> float:
    """The expected calibration error of `binned`'s bins: their gaps weighted by rows."""
    return sum(gap * rows for _, _, gap, rows in found) / max(sum(n for *_, n in found), 1)


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[tuple]:
    """(mean confidence, accuracy, rows) of each equal-mass bin, for a reliability diagram."""
    confidence, guess = probs.float().max(-1)
    return [(c, a, n) for c, a, _, n in binned(confidence, guess == labels, bins)]


def binned(confidence: torch.Tensor, right: torch.Tensor, bins: int = ECE_BINS) -> list[tuple]:
    """(mean confidence, accuracy, their gap, rows) of each bin of equal counts, by
    increasing confidence."""
    order = confidence.float().argsort()
    confidence, right = confidence.float()[order], right.float()[order]
    found = []
    for part in torch.tensor_split(torch.arange(len(order)), min(bins, max(len(order), 1))):
        if len(part):
            mean, accuracy = float(confidence[part].mean()), float(right[part].mean())
            found.append((mean, accuracy, abs(accuracy - mean), len(part)))
    return found
