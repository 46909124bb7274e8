"""Fine-tuning strategies: which parameters train when, and how fast each part may move.

Parameters fall into layer groups by name: `embeddings`, `layer.0` (bottom)
... `layer.N-1` (top), and `head` (pooler, classifier, MLM head: everything
else). In a model built of stages (ResNet, ConvNeXt, Swin: `stages.K`), each
stage is a layer group and the stem (`embedder`) counts as the embeddings; so does
a speech model's convolutional feature encoder (wav2vec2, HuBERT, Whisper).
Depth counts down from the head: head 0, top layer 1, ..., embeddings
N+1; layer-wise lr decay gives a group `lr * lr_decay**depth`, and gradual
unfreezing opens the groups in order of depth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from ft_cli.config.schema import StrategyConfig, UnfreezeUnit
from ft_cli.errors import FtError

EMBEDDINGS, HEAD = "embeddings", "head"
# A block of layers: BERT's `layer.N`, Llama's and most decoders' `layers.N`, GPT-2's `h.N`,
# T5's `block.N` (whose sublayers are `layer.N`: the leftmost match, the block, wins). An
# encoder-decoder's encoder and decoder blocks at one depth share a group.
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")
_STAGE = re.compile(r"(?:^|\.)stages\.(\d+)\.")  # checked first: stages hold layers
# The stem: token or patch embeddings; a speech model's convolutional feature encoder,
# its projection and positional convolution (wav2vec2, HuBERT), Whisper's convolutions.
_STEM = (
    ".embeddings.",
    ".embedder.",
    ".feature_extractor.",
    ".feature_projection.",
    ".pos_conv_embed.",
    ".masked_spec_embed",
    ".conv1.",
    ".conv2.",
    ".embed_positions.",
    ".wte.",  # GPT-2's token and position tables
    ".wpe.",
    ".embed_tokens.",  # Llama-style decoders' token table
    ".shared.",  # an encoder-decoder's shared token table (T5, BART)
)


def group_of(name: str, backbone: bool = False) -> str:
    """The layer group of a parameter name (BERT-family naming, adapters included).
    `backbone`: the model is a backbone with a detector on top (`backbone_of`)."""
    if backbone and ".backbone." not in f".{name}":
        return HEAD  # a detector's encoder, decoder and heads train as its head
    match = _STAGE.search(name) or _LAYER.search(name)
    if match:
        return f"layer.{match.group(1)}"
    return EMBEDDINGS if any(stem in f".{name}" for stem in _STEM) else HEAD


def group_names(num_layers: int) -> list[str]:
    """Bottom to top: embeddings, layer.0 ... layer.N-1, head."""
    return [EMBEDDINGS, *(f"layer.{i}" for i in range(num_layers)), HEAD]


def depth(group: str, num_layers: int) -> int:
    if group == HEAD:
        return 0
    if group == EMBEDDINGS:
        return num_layers + 1
    return num_layers - int(group.split(".")[1])


def backbone_of(model: nn.Module) -> bool:
    """Whether the model is a vision backbone with a detection transformer on top (DETR,
    RT-DETR, ...): its layer groups are the backbone's stages, the rest is the head."""
    return any(".backbone." in f".{name}" for name, _ in model.named_parameters())


def groups_of(model: nn.Module) -> dict[str, str]:
    """{parameter name: its layer group} of every parameter of the model."""
    backbone = backbone_of(model)
    return {name: group_of(name, backbone) for name, _ in model.named_parameters()}


def num_layers_of(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if backbone_of(model):
        config = getattr(config, "backbone_config", config)
    depths = getattr(config, "depths", None)
    if isinstance(depths, (list, tuple)):  # a model of stages: one group per stage
        return len(depths)
    layers = getattr(config, "num_hidden_layers", None)
    # A decoder deeper than its encoder (num_hidden_layers counts the encoder's) has more.
    found = {int(m.group(1)) for n, _ in model.named_parameters() if (m := _LAYER.search(n))}
    return max(layers or 0, max(found) + 1 if found else 0)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of the backbone (BERT: encoder.layer)."""
    wanted = num_layers_of(model)
    for name, module in model.named_modules():
        if name.endswith("stages") and isinstance(module, nn.ModuleList) and len(module) == wanted:
            return module
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == wanted:
            return module
    raise FtError(
        f"strategy: cannot find the {wanted} encoder layers of {type(model).__name__};"
        " use strategy=full or strategy=freeze_backbone"
    )


def group_modules(model: nn.Module, need_layers: bool) -> dict[str, nn.Module]:
    """The module of each layer group that can be switched to eval mode when frozen.

    Strategies that pick layers (`need_layers`) fail without a layer stack;
    the others work on any model.
    """
    modules: dict[str, nn.Module] = {}
    try:
        layers = encoder_layers(model)
    except FtError:
        if need_layers:
            raise
        layers = nn.ModuleList()
    for index, layer in enumerate(layers):
        modules[f"layer.{index}"] = layer
    backbone = backbone_of(model)
    for name, module in model.named_modules():
        stem = name.endswith(("embeddings", "embedder"))
        if stem and group_of(f"{name}.x", backbone) == EMBEDDINGS:
            modules[EMBEDDINGS] = module
            break
    return modules


@dataclass
class AppliedStrategy:
    """What a strategy froze, and (gradual unfreezing) when each group opens."""

    num_layers: int
    frozen_groups: set[str] = field(default_factory=set)
    frozen_names: set[str] = field(default_factory=set)  # by pattern
    modules: dict[str, nn.Module] = field(default_factory=dict)
    unfreeze_every: int = 0  # 0: the frozen set never changes
    unfreeze_unit: UnfreezeUnit = UnfreezeUnit.epochs
    stage: int = -1

    def train_mode(self, model: nn.Module) -> None:
        """Training mode, with the frozen groups' modules in eval mode (no dropout)."""
        model.train()
        for group in self.frozen_groups:
            if group in self.modules:
                self.modules[group].eval()

    def stage_at(self, step: int, epoch: int) -> int:
        counter = epoch if self.unfreeze_unit == UnfreezeUnit.epochs else step
        return counter // self.unfreeze_every

    def update(self, model: nn.Module, step: int, epoch: int) -> bool:
        """Gradual unfreezing: open the groups due at (step, epoch); True when it changed."""
        if not self.unfreeze_every:
            return False
        stage = self.stage_at(step, epoch)
        if stage == self.stage:
            return False
        self.stage = stage
        order = sorted(group_names(self.num_layers), key=lambda g: depth(g, self.num_layers))
        self.frozen_groups = set(order[stage + 1 :])  # stage 0: the head alone trains
        _set_trainable(model, self)
        self.train_mode(model)
        return True


def _set_trainable(model: nn.Module, applied: AppliedStrategy) -> None:
    groups = groups_of(model)
    for name, param in model.named_parameters():
        frozen = groups[name] in applied.frozen_groups or name in applied.frozen_names
        param.requires_grad_(not frozen)


def unfreeze_steps(applied: AppliedStrategy, steps_per_epoch: int, total_steps: int) -> list[int]:
    """Optimizer steps at which gradual unfreezing opens another group."""
    if not applied.unfreeze_every:
        return []
    every = applied.unfreeze_every
    if applied.unfreeze_unit == UnfreezeUnit.epochs:
        every *= steps_per_epoch
    stages = applied.num_layers + 1  # one group per stage after the head
    return [s * every for s in range(1, stages + 1) if s * every < total_steps]


def apply_strategy(model: nn.Module, cfg: StrategyConfig) -> AppliedStrategy:
    """Freeze what the strategy says; the task head (and pooler) always trains."""
    from ft_cli import strategies

    plan = strategies.for_config(cfg)
    layers = num_layers_of(model)
    modules = {} if plan.wraps_model else group_modules(model, plan.picks_layers)
    applied = AppliedStrategy(num_layers=layers, modules=modules)
    plan.freeze(applied, model)
    if cfg.freeze_word_embeddings and not plan.wraps_model:
        applied.frozen_names |= word_embedding_names(model)
    if not plan.wraps_model:  # a wrapper (peft) already froze the base model
        _set_trainable(model, applied)
    if applied.unfreeze_every:
        applied.update(model, 0, 0)
    return applied


def word_embedding_names(model: nn.Module) -> set[str]:
    """Names of the input word embedding weights (every task model's, in a multi-task net)."""
    wanted = {
        id(m.get_input_embeddings().weight)
        for m in model.modules()
        if hasattr(m, "get_input_embeddings") and m.get_input_embeddings() is not None
    }
    return {name for name, param in model.named_parameters() if id(param) in wanted}


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total - trainable
