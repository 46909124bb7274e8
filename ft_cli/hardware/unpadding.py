"""Encoder layers on real tokens only, so that no FLOP goes to padding.

A padded batch of B rows of length L holds T real tokens. Every part of a BERT-style
encoder layer but attention works token by token (the linear layers, GELU, layer norm,
dropout, residual adds), so it can run on the T real tokens packed into one row instead
of the B x L padded ones. Attention, the one part that mixes tokens, spreads query, key
and value back to the padded layout and applies the padding mask as before: the same
values at the real tokens, the same gradients, and T / (B x L) of the work elsewhere.

Packing costs a gather before the encoder, a scatter after it and three scatters and a
gather per layer, so it is used only for batches with at least `MIN_PADDING` of their
tokens padded; ft's length-grouped batches mostly stay under it and keep the padded
path. Only training forwards pack: the outputs at pad positions (zeros here) are read
by no training loss, while inference (evaluation, prediction, serving, a teacher's
soft targets) keeps the model's own values everywhere, so exports and their checks
see the same numbers as before. Decoders and cross-attention are left alone, and so
is any traced or exported forward: the graph an export writes names no ft code. CPU
only, like the other fast paths: it was not measured on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ft_cli.hardware import first_token

MIN_PADDING = 0.05  # the share of pad tokens from which packing pays (bench/unpadded.py)
PACKING = "ft_packing"  # the keyword the packed rows' layout travels by to attention

# BERT-style encoders (transformers' classes, by module and name): `forward(hidden_states,
# attention_mask, **kwargs)` runs token-wise layers whose attention goes through
# transformers' attention interface with those keyword arguments; each is tested. Left
# out: encoders whose positions live inside them (DeBERTa's, MPNet's relative ones).
_ENCODERS = frozenset(
    f"transformers.models.{family}.modeling_{family}.{name}"
    for family, name in [
        ("bert", "BertEncoder"),
        ("roberta", "RobertaEncoder"),
        ("xlm_roberta", "XLMRobertaEncoder"),
        ("camembert", "CamembertEncoder"),
        ("electra", "ElectraEncoder"),
        ("ernie", "ErnieEncoder"),
        ("distilbert", "Transformer"),
        ("albert", "AlbertTransformer"),
    ]
)


@dataclass(frozen=True)
class Packing:
    """Where the real tokens of a (B, L) batch sit: `index` into its B x L positions."""

    rows: int
    length: int
    index: torch.Tensor  # (T,) positions of the real tokens, row-major
    mask: torch.Tensor  # the encoder's own attention mask, (B, 1, L, L) bool

    def spread(self, packed: torch.Tensor) -> torch.Tensor:
        """(T, *feature) -> (B, L, *feature), zeros at the pad positions."""
        flat = packed.new_zeros(self.rows * self.length, *packed.shape[1:])
        return flat.index_copy(0, self.index, packed).view(
            self.rows, self.length, *packed.shape[1:]
        )

    def gather(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, L, *feature) -> (T, *feature)."""
        return padded.reshape(self.rows * self.length, *padded.shape[2:]).index_select(
            0, self.index
        )

    def first_tokens(self) -> first_token.FirstTokens | None:
        """Each row's first position in the packed row; None where a row's first position
        is padding (left-padded rows), which the packed row does not hold."""
        keep = self.mask[:, 0, 0, :]
        if not bool(keep[:, 0].all()):
            return None
        counts = keep.sum(1)
        return first_token.FirstTokens(counts.cumsum(0) - counts)


def training_on_cpu(hidden: Any) -> bool:
    """A training forward on the CPU, neither traced nor compiled: the only kind changed."""
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        return False
    if not torch.is_grad_enabled() or hidden.device.type != "cpu":
        return False  # inference, and CUDA (not measured there), keep the model's path
    # torch.export (ONNX) traces under is_compiling too.
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling())


def packing_for(hidden: torch.Tensor, mask: Any) -> Packing | None:
    """The packing of a batch, or None where the padded path is the one to take: no
    padding mask, too little padding, a mask that is more than padding, or a trace."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 4:
        return None
    if not training_on_cpu(hidden):
        return None
    rows, length = hidden.shape[:2]
    if mask.shape != (rows, 1, length, length):
        return None
    keep = mask[:, 0, 0, :]
    real = int(keep.sum())
    if real > (1 - MIN_PADDING) * rows * length or real == 0:
        return None
    if not torch.equal(mask, keep[:, None, None, :].expand_as(mask)):
        return None  # a mask that is not only padding (none such in these encoders)
    return Packing(rows, length, keep.reshape(-1).nonzero().squeeze(1), mask)


def packed_attention(
    attend: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    packing: Packing,
) -> torch.Tensor:
    """Attention over packed rows: (1, H, T, D) in, (1, T, H, D) out, computed on the
    padded layout by `attend((B, H, L, D) x 3, mask)`, which returns (B, L, H, D)."""

    def padded(x: torch.Tensor) -> torch.Tensor:
        return packing.spread(x[0].transpose(0, 1)).transpose(1, 2)

    out = attend(padded(query), padded(key), padded(value), packing.mask)
    return packing.gather(out).unsqueeze(0)


def unpad_encoders(net: nn.Module, attention: str) -> int:
    """Hook every BERT-style encoder in `net` whose attention is `attention` (a function
    that takes the packed path) to run its layers on real tokens only, and its last
    layer on the first token where the model's head reads only that; the number hooked.
    The state dict and the saved config do not change."""
    narrowed = first_token.first_token_parts(net)
    hooked = 0
    for module in net.modules():
        # Its own config, or (DistilBERT's encoder holds none) its first layer's.
        config = next((m.config for m in module.modules() if hasattr(m, "config")), None)
        if (
            f"{type(module).__module__}.{type(module).__qualname__}" in _ENCODERS
            and getattr(config, "_attn_implementation", None) == attention
            and not getattr(config, "is_decoder", False)
            and not getattr(module, "_ft_unpadded", False)
        ):
            last = first_token.last_layer(module) if id(module) in narrowed else None
            _hook(module, last is not None)
            if last is not None:
                first_token.hook_last_layer(last)
            hooked += 1
    return hooked


@dataclass(frozen=True)
class _Call:
    """How one encoder call runs: packed or not, its last layer narrowed or not."""

    packing: Packing | None
    first: first_token.FirstTokens | None
    length: int = 0


def _hook(encoder: nn.Module, narrow_last: bool) -> None:
    pending: list[_Call] = []  # one per call in flight (checkpointed reruns nest)

    def pack(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        # Models pass the hidden states and the mask by position or by name.
        named = dict(zip(("hidden_states", "attention_mask"), args[:2], strict=False))
        given = {**named, **kwargs}
        plain = (
            len(args) <= 2
            and given.get("encoder_hidden_states") is None
            and given.get("cache") is None
        )
        hidden, mask = given.get("hidden_states"), given.get("attention_mask")
        packing = packing_for(hidden, mask) if plain else None
        first = None
        if narrow_last and plain and training_on_cpu(hidden):
            first = packing.first_tokens() if packing is not None else None
            if first is None:  # the head reads position 0, a pad in left-padded rows
                packing, first = None, first_token.FirstTokens()
        call = _Call(packing, first, hidden.shape[1] if first is not None else 0)
        pending.append(call)
        if packing is None and first is None:
            return None
        hidden = given.pop("hidden_states")
        if packing is not None:
            hidden = packing.gather(hidden).unsqueeze(0)
            given.update({"attention_mask": None, PACKING: packing})
        if first is not None:
            given[first_token.FIRST_TOKEN] = first
        return (hidden,), given

    def spread(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        call = pending.pop()
        out = output.last_hidden_state
        if call.first is not None:  # (1, B, H) packed or (B, 1, H) padded
            rows = out[0] if call.packing is not None else out[:, 0]
            output.last_hidden_state = first_token.spread(rows, call.length)
        elif call.packing is not None:
            output.last_hidden_state = call.packing.spread(out[0])
        return output

    encoder.register_forward_pre_hook(pack, with_kwargs=True)
    encoder.register_forward_hook(spread, with_kwargs=True)
    encoder._ft_unpadded = True
