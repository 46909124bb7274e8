"""strategy=gradual_unfreeze: the head trains first; one more layer group opens every
N epochs or steps, from the top down (`layers.AppliedStrategy.update`)."""

from torch import nn

from ft_cli.strategies.base import Strategy
from ft_cli.strategies.layers import AppliedStrategy


class GradualUnfreeze(Strategy):
    include_frozen = True  # they open stage by stage, keeping their optimizer groups
    picks_layers = True
    fsdp_refusal = "it changes the trainable parameters after sharding"

    def freeze(self, applied: AppliedStrategy, net: nn.Module) -> None:
        applied.unfreeze_every = self.cfg.unfreeze_every
        applied.unfreeze_unit = self.cfg.unfreeze_unit


STRATEGY = GradualUnfreeze
