"""strategy=freeze_backbone: only the task head (and pooler) trains."""

from torch import nn

from ft_cli.strategies.base import Strategy
from ft_cli.strategies.layers import HEAD, AppliedStrategy, group_names


class FreezeBackbone(Strategy):
    def freeze(self, applied: AppliedStrategy, net: nn.Module) -> None:
        applied.frozen_groups = set(group_names(applied.num_layers)) - {HEAD}


STRATEGY = FreezeBackbone
