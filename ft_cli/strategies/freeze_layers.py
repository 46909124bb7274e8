"""strategy=freeze_layers: freeze chosen encoder layers (bottom, top, by id, by name)."""

from __future__ import annotations

import re

from torch import nn

from ft_cli.config.schema import StrategyConfig
from ft_cli.errors import FtError
from ft_cli.strategies.base import Strategy
from ft_cli.strategies.layers import EMBEDDINGS, AppliedStrategy


class FreezeLayers(Strategy):
    picks_layers = True

    def freeze(self, applied: AppliedStrategy, net: nn.Module) -> None:
        ids = _layer_ids(self.cfg, applied.num_layers)
        applied.frozen_groups = {f"layer.{i}" for i in ids}
        if self.cfg.freeze_embeddings:
            applied.frozen_groups.add(EMBEDDINGS)
        if self.cfg.frozen_pattern:
            applied.frozen_names = _pattern_names(net, self.cfg.frozen_pattern)


def _layer_ids(cfg: StrategyConfig, num_layers: int) -> set[int]:
    ids: set[int] = set()
    counts = {"strategy.frozen_layers": cfg.frozen_layers}
    counts["strategy.frozen_top_layers"] = cfg.frozen_top_layers
    for key, count in counts.items():
        if not 0 <= count <= num_layers:
            raise FtError(
                f"{key}={count} is out of range: the model has {num_layers} encoder layers"
                f" (use 0..{num_layers})"
            )
    ids.update(range(cfg.frozen_layers))
    ids.update(range(num_layers - cfg.frozen_top_layers, num_layers))
    for index in cfg.frozen_layer_ids or []:
        if not 0 <= index < num_layers:
            raise FtError(
                f"strategy.frozen_layer_ids: layer {index} does not exist; the model has"
                f" layers 0..{num_layers - 1}"
            )
        ids.add(index)
    return ids


def _pattern_names(model: nn.Module, pattern: str) -> set[str]:
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise FtError(f"strategy.frozen_pattern: '{pattern}' is not a valid regex: {err}") from err
    names = {name for name, _ in model.named_parameters() if regex.search(name)}
    if not names:
        raise FtError(
            f"strategy.frozen_pattern: '{pattern}' matches no parameter name; names look"
            f" like '{next(iter(model.named_parameters()))[0]}'"
        )
    return names


STRATEGY = FreezeLayers
