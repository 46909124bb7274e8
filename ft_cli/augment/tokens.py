"""Token-level augmentation of collated training batches.

Each value of the `augment` group is the share of a row's editable tokens
(real tokens that are not special: never [CLS], [SEP], [PAD] or padding) it
changes, in expectation: `token_mask` replaces them with the mask token,
`token_delete` drops them (the row closes up; each segment keeps at least one),
`token_swap` swaps disjoint neighbouring pairs within a segment, `span_cutoff`
hides one contiguous span of them from attention. Applied in that order:
swap, delete, mask, cutoff.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ft_cli.augment.randomness import draws, stochastic_round
from ft_cli.config.schema import AugmentConfig


class AugmentingCollator:
    """A training collator whose batches come out augmented for the current epoch.

    `add_rows`: also put the batch's row indices and epoch into it, for the
    model-level augmentations (`hidden`), which draw per row too.
    """

    def __init__(
        self,
        inner: Callable[[list[int]], dict[str, torch.Tensor]],
        cfg: AugmentConfig,
        seed: int,
        tokenizer: Any,
        add_rows: bool,
    ) -> None:
        self.inner, self.cfg, self.seed, self.add_rows = inner, cfg, seed, add_rows
        self.special = set(tokenizer.all_special_ids)
        self.mask_id = tokenizer.mask_token_id
        self.pad_id = tokenizer.pad_token_id or 0
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        setter = getattr(self.inner, "set_epoch", None)
        if setter is not None:
            setter(epoch)

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.inner(indices)
        if self.cfg.token_level():
            self.augment(batch, indices)
        if self.add_rows:
            batch["augment_rows"] = torch.tensor(indices)
            batch["augment_epoch"] = torch.tensor(self.epoch)
        return batch

    def augment(self, batch: dict[str, torch.Tensor], indices: list[int]) -> None:
        """Rewrite the batch's token ids, attention mask and token types in place."""
        ids, attention = batch["input_ids"], batch["attention_mask"]
        types = batch.get("token_type_ids")
        for j, row in enumerate(indices):
            length = int(attention[j].sum())
            tokens = ids[j, :length].tolist()
            kinds = types[j, :length].tolist() if types is not None else [0] * length
            tokens, kinds, hidden = self.augment_row(tokens, kinds, row)
            ids[j] = self.pad_id
            ids[j, : len(tokens)] = torch.tensor(tokens)
            attention[j] = 0
            attention[j, : len(tokens)] = 1
            attention[j, hidden] = 0
            if types is not None:
                types[j] = 0
                types[j, : len(kinds)] = torch.tensor(kinds)

    def augment_row(
        self, tokens: list[int], kinds: list[int], row: int
    ) -> tuple[list[int], list[int], list[int]]:
        """(new tokens, their segment ids, positions hidden from attention) of one row."""
        cfg, seed, epoch = self.cfg, self.seed, self.epoch
        editable = [t not in self.special for t in tokens]
        if cfg.token_swap:
            tokens = swapped(
                tokens, kinds, editable, cfg.token_swap, draws(seed, epoch, row, "swap")
            )
        if cfg.token_delete:
            keep = kept(kinds, editable, cfg.token_delete, draws(seed, epoch, row, "delete"))
            tokens = [t for t, k in zip(tokens, keep, strict=True) if k]
            kinds = [t for t, k in zip(kinds, keep, strict=True) if k]
            editable = [t for t, k in zip(editable, keep, strict=True) if k]
        if cfg.token_mask and self.mask_id is not None:
            rng = draws(seed, epoch, row, "mask")
            chosen = rng.random(len(tokens)) < cfg.token_mask
            tokens = [
                self.mask_id if e and c else t
                for t, e, c in zip(tokens, editable, chosen, strict=True)
            ]
        hidden: list[int] = []
        if cfg.span_cutoff:
            hidden = cut_span(editable, cfg.span_cutoff, draws(seed, epoch, row, "cutoff"))
        return tokens, kinds, hidden


def swapped(
    tokens: list[int],
    kinds: list[int],
    editable: list[bool],
    share: float,
    rng: np.random.Generator,
) -> list[int]:
    """Disjoint neighbouring pairs of editable tokens of one segment swapped, about
    `share` of the editable tokens moved."""
    pairs = [
        p
        for p in range(len(tokens) - 1)
        if editable[p] and editable[p + 1] and kinds[p] == kinds[p + 1]
    ]
    wanted = stochastic_round(share * sum(editable) / 2, rng)
    out, used = list(tokens), set()
    for p in rng.permutation(pairs).tolist() if pairs else []:
        if wanted == 0:
            break
        if p in used or p + 1 in used:
            continue
        out[p], out[p + 1] = out[p + 1], out[p]
        used.update((p, p + 1))
        wanted -= 1
    return out


def kept(
    kinds: list[int], editable: list[bool], share: float, rng: np.random.Generator
) -> list[bool]:
    """Which tokens stay: each editable one goes with probability `share`; every segment
    keeps at least one editable token."""
    gone = rng.random(len(kinds)) < share
    keep = [not (e and g) for e, g in zip(editable, gone, strict=True)]
    for segment in set(kinds):
        own = [p for p, k in enumerate(kinds) if k == segment and editable[p]]
        if own and not any(keep[p] for p in own):
            keep[own[int(rng.integers(len(own)))]] = True
    return keep


def cut_span(editable: list[bool], share: float, rng: np.random.Generator) -> list[int]:
    """Positions of one contiguous run (in editable-token order) of about `share` of them."""
    positions = [p for p, e in enumerate(editable) if e]
    span = min(stochastic_round(share * len(positions), rng), len(positions))
    if span == 0:
        return []
    start = int(rng.integers(len(positions) - span + 1))
    return positions[start : start + span]


def preview(collate: Any, row: int, tokenizer: Any) -> tuple[str, str]:
    """(row `row` of the training split as collated, and as augmented in epoch 0)."""
    assert isinstance(collate, AugmentingCollator)
    collate.set_epoch(0)
    plain, augmented = collate.inner([row]), collate([row])

    def text(batch: dict[str, torch.Tensor]) -> str:
        ids, attention = batch["input_ids"][0], batch["attention_mask"][0]
        end = int(attention.nonzero().max()) + 1 if attention.any() else 0
        shown = [
            tokenizer.convert_ids_to_tokens(int(t)) if attention[p] else "░"
            for p, t in enumerate(ids[:end].tolist())
        ]
        return " ".join(shown)

    return text(plain), text(augmented)
