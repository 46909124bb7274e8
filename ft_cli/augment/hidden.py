"""Model-level augmentation: noise on the input embeddings (NEFTune) and mixup.

Both are hooks on the model, armed per training batch by `AugmentedObjective`
and idle whenever the model is in eval mode:

- embedding noise: each row's editable token embeddings get uniform noise in
  +-alpha / sqrt(length * hidden) (Jain et al., 2023), `length` the row's real
  tokens; drawn per row for its own length, so a pure function of the row;
- mixup: the classifier's input (the sentence representation) becomes
  lam * x + (1 - lam) * x[partner], lam ~ Beta(alpha, alpha) per batch, and the
  loss the same mixture of the loss against each row's target and its
  partner's (for cross-entropy, the loss of the mixed label).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ft_cli.augment.randomness import draws
from ft_cli.config.schema import AugmentConfig
from ft_cli.errors import FtError


def classifier_of(net: nn.Module) -> nn.Module:
    """The head whose input is the sentence representation (`classifier` or `score`)."""
    found = [
        (name, module)
        for name, module in net.named_modules()
        if name.rsplit(".", 1)[-1] in ("classifier", "score")
    ]
    if not found:
        raise FtError(
            "augment.mixup: the model has no classifier (or score) module whose input could be"
            " mixed; use another augmentation"
        )
    return min(found, key=lambda item: item[0].count("."))[1]


class HiddenAugment:
    """The hooks and what one training batch armed them with."""

    def __init__(self, net: nn.Module, cfg: AugmentConfig, seed: int, tokenizer: Any) -> None:
        self.net, self.cfg, self.seed = net, cfg, seed
        self.special = torch.tensor(sorted(tokenizer.all_special_ids))
        self.rows: list[int] | None = None
        self.epoch = 0
        self.editable: torch.Tensor | None = None
        self.mix: tuple[float, torch.Tensor] | None = None
        if cfg.embedding_noise:
            net.get_input_embeddings().register_forward_hook(self._add_noise)
        if cfg.mixup:
            classifier_of(net).register_forward_pre_hook(self._mix_input)

    def arm(self, batch: dict[str, torch.Tensor]) -> None:
        """Take this batch's rows and epoch out of it (training batches carry them)."""
        rows, epoch = batch.pop("augment_rows", None), batch.pop("augment_epoch", None)
        if rows is None or epoch is None or not self.net.training:
            self.rows, self.mix = None, None
            return
        self.rows, self.epoch = rows.tolist(), int(epoch)
        ids = batch["input_ids"]
        special = torch.isin(ids, self.special.to(ids.device))
        self.editable = batch["attention_mask"].bool() & ~special
        self.mix = None
        if self.cfg.mixup and len(self.rows) > 1:
            rng = draws(self.seed, self.epoch, self.rows[0], "mixup")
            lam = float(rng.beta(self.cfg.mixup, self.cfg.mixup))
            self.mix = (lam, torch.from_numpy(rng.permutation(len(self.rows))))

    def noise(self, shape: torch.Size) -> torch.Tensor:
        """The noise of the armed batch, [rows, width, hidden], zero off editable tokens."""
        assert self.rows is not None and self.editable is not None
        _, width, hidden = shape
        editable = self.editable.cpu()
        noise = torch.zeros(len(self.rows), width, hidden)
        for j, row in enumerate(self.rows):
            length = int(editable[j].sum())
            if length == 0:
                continue
            scale = self.cfg.embedding_noise / math.sqrt(length * hidden)
            rng = draws(self.seed, self.epoch, row, "noise")
            values = rng.uniform(-scale, scale, (length, hidden))
            noise[j, editable[j]] = torch.from_numpy(values).float()
        return noise

    def _add_noise(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> Any:
        if self.rows is None or not self.net.training:
            return None
        return output + self.noise(output.shape).to(output.device, output.dtype)

    def _mix_input(self, module: nn.Module, args: tuple[Any, ...]) -> Any:
        if self.mix is None or not self.net.training:
            return None
        lam, partner = self.mix
        x = args[0]
        return (lam * x + (1 - lam) * x[partner.to(x.device)], *args[1:])


class AugmentedObjective:
    """A task objective whose training batches arm the hooks first; mixup mixes the loss."""

    def __init__(self, inner: Any, hidden: HiddenAugment) -> None:
        self.inner, self.hidden = inner, hidden

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def outputs(self, batch: dict[str, torch.Tensor]) -> Any:
        self.hidden.arm(batch)
        return self.inner.outputs(batch)

    def loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        mix = self.hidden.mix
        if mix is None:
            return self.inner.loss(predictions, targets)
        lam, partner = mix
        partner = partner.to(targets.device)
        own = self.inner.loss(predictions, targets)
        return lam * own + (1 - lam) * self.inner.loss(predictions, targets[partner])
