"""Training-batch augmentation (`augment` config group), on the fly and every epoch anew.

- `tokens`: masking, deletion, neighbour swaps and span cutoff on the collated
  token ids of a training batch (evaluation batches never pass through it);
- `hidden`: noise on the input embeddings (NEFTune) and mixup of sentence
  representations with mixed targets, as hooks active in training only;
- audio clips (gain, noise, shift, speed, SpecAugment masks) are changed by their
  own collator (`ft_cli.inputs.sounds`), which reads the `audio_*` keys.

Every draw comes from a generator seeded by (train.seed, epoch, row index,
what it is for), so an augmented batch is a pure function of those: the same
rows in a resumed epoch get the same augmentation, and resume stays bit-exact.
"""

from __future__ import annotations

from typing import Any

from ft_cli.augment.randomness import SALT, draws, stochastic_round
from ft_cli.config.schema import AugmentConfig

__all__ = ["SALT", "draws", "for_training", "stochastic_round", "training_collator"]


def for_training(objective: Any, net: Any, cfg: AugmentConfig, seed: int, tokenizer: Any) -> Any:
    """The objective training uses: wrapped to arm the model-level hooks when any is on."""
    from ft_cli.augment import hidden

    if not cfg.model_level():
        return objective
    return hidden.AugmentedObjective(objective, hidden.HiddenAugment(net, cfg, seed, tokenizer))


def training_collator(collate: Any, cfg: AugmentConfig, seed: int, tokenizer: Any) -> Any:
    """The training collator: augmented when any augmentation is on. A collator of other
    inputs than tokens augments its own (`augmented_with`: a copy that reads the keys it
    knows, such as the audio ones)."""
    from ft_cli.augment import tokens

    own = getattr(collate, "augmented_with", None)
    if own is not None:
        return own(cfg)
    if not cfg.text_level():
        return collate
    return tokens.AugmentingCollator(collate, cfg, seed, tokenizer, cfg.model_level())
