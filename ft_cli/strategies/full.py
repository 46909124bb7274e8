"""strategy=full: every parameter trains (the default)."""

from ft_cli.strategies.base import Strategy

STRATEGY = Strategy
