"""Penalties added to the loss: L2-SP toward the pretrained weights, and plain L1/L2.

L2-SP (Li et al., 2018) pulls the pretrained parameters toward their starting
values, `alpha/2 * ||w - w0||^2`, and only the new ones (the task head)
toward zero, `beta/2 * ||w||^2`: fine-tuning then forgets less of what
pretraining learned than with weight decay toward zero.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ft_cli import strategies
from ft_cli.config.schema import StrategyConfig
from ft_cli.errors import FtError
from ft_cli.hardware.distributed import full_tensor


class Penalty:
    """A callable returning the penalty of the current weights (a scalar tensor)."""

    def __init__(self, model: nn.Module, cfg: StrategyConfig, new_names: set[str]) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.l1, self.l2 = cfg.l1, cfg.l2
        self.params = [p for _, p in named]
        self.alpha = self.beta = 0.0
        self.anchored: list[nn.Parameter] = []
        self.anchors: list[torch.Tensor] = []
        self.new: list[nn.Parameter] = []
        if strategies.for_config(cfg).anchored:
            self.alpha, self.beta = cfg.l2sp_alpha, cfg.l2sp_beta
            for name, param in named:
                if name in new_names:
                    self.new.append(param)
                else:
                    self.anchored.append(param)
                    self.anchors.append(param.detach().clone())
            if not self.anchored:
                raise FtError(
                    "strategy=l2sp regularises toward pretrained weights, but the model has"
                    " none (model.init=scratch); use model.init=pretrained or another strategy"
                )

    @property
    def active(self) -> bool:
        return any((self.l1, self.l2, self.alpha, self.beta))

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), device=self.params[0].device)
        if self.alpha:
            pairs = zip(self.anchored, self.anchors, strict=True)
            total = total + self.alpha / 2 * _sum((p - a).float().pow(2) for p, a in pairs)
        if self.beta:
            total = total + self.beta / 2 * _sum(p.float().pow(2) for p in self.new)
        if self.l2:
            total = total + self.l2 / 2 * _sum(p.float().pow(2) for p in self.params)
        if self.l1:
            total = total + self.l1 * _sum(p.float().abs() for p in self.params)
        return total


def _sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    # Under FSDP each parameter is a shard (DTensor): its sum is gathered whole.
    return sum(full_tensor(term.sum()) for term in terms)
