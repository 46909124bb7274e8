"""Fine-tuning strategies: which parameters train, and keeping frozen parts in eval mode."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ft_cli.errors import FtError
from ft_cli.schema import StrategyConfig, StrategyKind


@dataclass
class AppliedStrategy:
    """The modules a strategy froze; `train_mode` keeps their dropout off."""

    frozen: list[nn.Module] = field(default_factory=list)

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        for module in self.frozen:
            module.eval()


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of the backbone (BERT: encoder.layer)."""
    backbone = model.base_model
    wanted = getattr(model.config, "num_hidden_layers", None)
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) == wanted:
            return module
    raise FtError(
        f"strategy: cannot find the {wanted} encoder layers of {type(model).__name__};"
        " use strategy=full or strategy=freeze_backbone"
    )


def backbone_body(model: nn.Module) -> list[nn.Module]:
    """Embeddings and encoder: the backbone without head-side parts such as the pooler."""
    return [m for name, m in model.base_model.named_children() if name != "pooler"]


def apply_strategy(model: nn.Module, cfg: StrategyConfig) -> AppliedStrategy:
    """Freeze what the strategy says; the task head (and pooler) always trains."""
    for param in model.parameters():
        param.requires_grad_(True)
    frozen: list[nn.Module] = []
    if cfg.kind == StrategyKind.freeze_backbone:
        frozen = backbone_body(model)
    elif cfg.kind == StrategyKind.freeze_layers:
        layers = encoder_layers(model)
        if not 0 <= cfg.frozen_layers <= len(layers):
            raise FtError(
                f"strategy.frozen_layers={cfg.frozen_layers} is out of range: the model has"
                f" {len(layers)} encoder layers (use 0..{len(layers)})"
            )
        frozen = list(layers[: cfg.frozen_layers])
        if cfg.freeze_embeddings:
            frozen.insert(0, _embeddings_block(model))
    for module in frozen:
        for param in module.parameters():
            param.requires_grad_(False)
    return AppliedStrategy(frozen)


def _embeddings_block(model: nn.Module) -> nn.Module:
    # BERT-family models group word, position and type embeddings plus their
    # LayerNorm under `embeddings`: freeze that whole block where it exists.
    block = getattr(model.base_model, "embeddings", None)
    return block if isinstance(block, nn.Module) else model.base_model.get_input_embeddings()


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total - trainable
