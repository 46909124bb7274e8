"""strategy=llrd: every parameter trains, lower layers more slowly.

Layer-wise lr decay itself (`strategy.lr_decay`, 0.9 in configs/strategy/llrd.yaml)
works with any strategy: the optimizer groups give a layer at depth d below the
head `lr * lr_decay**d` (`training.optim`).
"""

from ft_cli.strategies.base import Strategy

STRATEGY = Strategy
