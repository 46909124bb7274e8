"""Where every augmentation draws from: a generator per (seed, epoch, row, purpose)."""

from __future__ import annotations

import numpy as np

# One stream per purpose, so turning one augmentation on never shifts another's draws.
SALT = {
    "mask": 1,
    "delete": 2,
    "swap": 3,
    "cutoff": 4,
    "noise": 5,
    "mixup": 6,
    "crop": 7,
    "flip": 8,
    "speed": 9,
    "shift": 10,
    "gain": 11,
    "audio_noise": 12,
    "time_mask": 13,
    "freq_mask": 14,
}


def draws(seed: int, epoch: int, row: int, purpose: str) -> np.random.Generator:
    """The generator of one row's (or batch's) augmentation in one epoch."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, row, SALT[purpose]])


def stochastic_round(value: float, rng: np.random.Generator) -> int:
    """floor(value) or one more, so the expectation is `value` (short rows still augment)."""
    whole = int(np.floor(value))
    return whole + int(rng.random() < value - whole)
