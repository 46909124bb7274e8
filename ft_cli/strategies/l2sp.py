"""strategy=l2sp: a penalty keeps the pretrained weights near their starting point.

alpha/2 * ||w - w0||^2 over the pretrained weights, beta/2 * ||w||^2 over the new
head (`strategies.regularize`).
"""

from ft_cli.strategies.base import Strategy


class L2SP(Strategy):
    anchored = True


STRATEGY = L2SP
