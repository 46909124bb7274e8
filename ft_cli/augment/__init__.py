"""Training-batch augmentation (`augment` config group), on the fly and every epoch anew.

- `tokens`: masking, deletion, neighbour swaps and span cutoff on the collated
  token ids of a training batch (evaluation batches never pass through it);
- `hidden`: noise on the input embeddings (NEFTune) and mixup of sentence
  representations with mixed targets, as hooks active in training only.

Every draw comes from a generator seeded by (train.seed, epoch, row index,
what it is for), so an augmented batch is a pure function of those: the same
rows in a resumed epoch get the same augmentation, and resume stays bit-exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ft_cli.config.schema import AugmentConfig

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
}


def draws(seed: int, epoch: int, row: int, purpose: str) -> np.random.Generator:
    """The generator of one row's (or batch's) augmentation in one epoch."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, row, SALT[purpose]])


def stochastic_round(value: float, rng: np.random.Generator) -> int:
    """floor(value) or one more, so the expectation is `value` (short rows still augment)."""
    whole = int(np.floor(value))
    return whole + int(rng.random() < value - whole)


def for_training(objective: Any, net: Any, cfg: AugmentConfig, seed: int, tokenizer: Any) -> Any:
    """The objective training uses: wrapped to arm the model-level hooks when any is on."""
    from ft_cli.augment import hidden

    if not cfg.model_level():
        return objective
    return hidden.AugmentedObjective(objective, hidden.HiddenAugment(net, cfg, seed, tokenizer))


def training_collator(collate: Any, cfg: AugmentConfig, seed: int, tokenizer: Any) -> Any:
    """The training collator: augmented when any augmentation is on."""
    from ft_cli.augment import tokens

    if not cfg.active():
        return collate
    return tokens.AugmentingCollator(collate, cfg, seed, tokenizer, cfg.model_level())
