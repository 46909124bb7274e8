"""The last encoder layer on the first token only, for heads that read nothing else.

A sequence-classification or multiple-choice head of a BERT-style model reads the
encoder's output at the first position ([CLS], <s>) and nowhere else, yet the last layer
computes every position's output: its attention output projection, residuals, layer
norms and feed-forward block, three quarters of the layer's matrix work, for values no
loss reads. Here that layer's attention still runs on every token (its keys and values
need them all, and transformers' attention modules shape their outputs by their input),
and its output is cut to the first tokens, so the rest of the layer runs on those rows
alone. The first position's value and every gradient are the model's own (up to the
order of floating-point sums); the other positions of `last_hidden_state` are zeros, as
nothing reads them.

The encoder's hooks (`unpadding`) decide per call and pass a `FirstTokens` down to the
layers by the FIRST_TOKEN keyword, in the padded or the packed layout: training forwards
on the CPU only, so inference, exports and traces keep the model's own path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

FIRST_TOKEN = "ft_first_token"  # the keyword the encoder tells its layers by

# Models whose head reads the encoder's output at the first position only (a pooler or
# a classifier over [:, 0]; each is tested). Left out: heads over every token, and
# ELECTRA's multiple-choice summary, whose position is a setting (first, last, mean).
_HEADS = frozenset(
    f"transformers.models.{family}.modeling_{family}.{prefix}For{head}"
    for family, prefix in [
        ("bert", "Bert"),
        ("roberta", "Roberta"),
        ("xlm_roberta", "XLMRoberta"),
        ("camembert", "Camembert"),
        ("ernie", "Ernie"),
        ("distilbert", "DistilBert"),
        ("electra", "Electra"),
    ]
    for head in ("SequenceClassification", "MultipleChoice")
    if (family, head) != ("electra", "MultipleChoice")
)


@dataclass(frozen=True)
class FirstTokens:
    """Where each row's first token sits: `starts` in the packed row, or None (padded:
    position 0 of each row). `every_token`: the last layer's input, set once the layer
    runs on the first tokens, for its attention (a checkpointed layer reruns its forward
    without its hooks, so this travels with the call's own arguments)."""

    starts: torch.Tensor | None = None
    every_token: torch.Tensor | None = None

    def of(self, hidden: torch.Tensor) -> torch.Tensor:
        """(1, T, H) packed -> (1, B, H); (B, L, H) padded -> (B, 1, H)."""
        return hidden[:, :1] if self.starts is None else hidden.index_select(1, self.starts)


def reads_first_token_only(model: nn.Module) -> bool:
    return f"{type(model).__module__}.{type(model).__qualname__}" in _HEADS


def first_token_parts(net: nn.Module) -> set[int]:
    """The ids of the modules only models with first-token heads run: a multi-task
    model's shared encoder also serves heads over every token, and stays whole."""
    from transformers import PreTrainedModel

    first, other = set(), set()
    for model in net.modules():
        if isinstance(model, PreTrainedModel) and model.base_model is not model:
            parts = first if reads_first_token_only(model) else other
            parts.update(id(part) for part in model.modules())
    return first - other


def last_layer(encoder: nn.Module) -> nn.Module | None:
    """The encoder's last layer, where its layers are a list (ALBERT shares one layer
    across depths, so it has no last one to change) and its attention is found."""
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        return None
    return layers[-1] if _attention_of(layers[-1]) is not None else None


def is_narrowed(layer: nn.Module) -> bool:
    return getattr(layer, "_ft_first_token", False)


def hook_last_layer(layer: nn.Module) -> None:
    """Run `layer` on the first tokens when its call carries a FirstTokens: its attention
    on every token (keys and values need them all), then its output cut to the first
    tokens, so that the residual, the output projection and the feed-forward block run
    on those alone."""
    attention = _attention_of(layer)
    assert attention is not None

    def narrow(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        first = kwargs.get(FIRST_TOKEN)
        if first is None or first.every_token is not None:
            return None
        hidden = args[0]
        first = dataclasses.replace(first, every_token=hidden)
        return (first.of(hidden), *args[1:]), {**kwargs, FIRST_TOKEN: first}

    def every_token(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        first = kwargs.get(FIRST_TOKEN)
        if first is None or first.every_token is None:
            return None
        if args:
            return (first.every_token, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": first.every_token}

    def first_only(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        first = kwargs.get(FIRST_TOKEN)
        if first is None or first.every_token is None:
            return output
        return (first.of(output[0]), *output[1:])

    layer.register_forward_pre_hook(narrow, with_kwargs=True)
    attention.register_forward_pre_hook(every_token, with_kwargs=True)
    attention.register_forward_hook(first_only, with_kwargs=True)
    layer._ft_first_token = True


def _attention_of(layer: nn.Module) -> nn.Module | None:
    """The layer's self-attention: the module that holds its key and value projections."""
    for module in layer.modules():
        names = {name for name, _ in module.named_children()}
        if {"key", "value"} <= names or {"k_lin", "v_lin"} <= names:
            return module
    return None


def spread(first: torch.Tensor, length: int) -> torch.Tensor:
    """(B, H) first-token outputs -> (B, length, H), zeros after the first position."""
    rest = first.new_zeros(first.shape[0], length - 1, *first.shape[1:])
    return torch.cat([first.unsqueeze(1), rest], dim=1)
