"""Faster training paths for transformers models: dropout masks, attention, the layout
of a convolutional feature encoder's activations, GPT-2's GELU, and unpadded encoders.

Costs the profile (`bench/profile_step.py`) found in a CPU training step:

- PyTorch's CPU dropout draws one Bernoulli sample per element, which in bf16
  costs more than all the model's matrix multiplies together. Here the mask
  comes from 16-bit random integers, four per 64-bit draw of the same torch
  generator, compared with a threshold: the same distribution (keep
  probability exact to 1/65536), seeded and resumed like any torch draw.
- Without dropout, SDPA on the CPU takes its flash-attention kernel, whose
  backward is several times slower than the plain matmul path. Training uses
  the matmul path (softmax(QK^T) V, with the cheap dropout on the weights);
  inference keeps SDPA, whose forward is the fastest.
- A wav2vec2-style feature encoder whose convolutions are layer-normalised
  (`feat_extract_norm="layer"`: wav2vec2-large, XLS-R, HuBERT, WavLM) hands
  GELU a transposed view; GELU's backward on it, against a contiguous
  gradient, falls off the vectorised path: 12x slower on the tiny wav2vec2's
  first layer, and the next convolution copies it again. The activation gets
  a contiguous input here (the same values, one cheap copy).
- GPT-2's "gelu_new" (also T5 v1.1's gated GELU) is the tanh approximation
  written as six element-wise ops, each a pass over the activations forward
  and more backward; PyTorch computes the same formula in one kernel
  (`gelu(approximate="tanh")`).
- A BERT-style encoder spends the same work on a pad token as on a real one; with
  random batches of short rows that is a quarter to a third of the step. Its layers run
  on the real tokens only (`unpadding`), attention on the padded layout.
- A classification head reads the encoder's output at the first token only; the last
  layer computes it for that token alone (`first_token`).

On CUDA dropout and attention stay PyTorch's own (already fused there); the two
activation swaps compute the same values on any device.
The swap changes no parameter and no saved config: exports load in plain
transformers.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from ft_cli.hardware import first_token, unpadding

ATTENTION = "ft_matmul"  # the name registered with transformers' attention interfaces
_SWAPPABLE = ("sdpa", "eager")  # implementations the matmul path computes exactly


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - p (to 1/65536)."""
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # all 64 bits uniform: four 16-bit draws per word
    draws = words.view(torch.int16)[:count].view(shape)
    return draws >= round(p * 65536) - 32768


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout with `keep_mask`; PyTorch's own where it is already fast (CUDA)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training)
    # x * mask * scale in one pass; its gradient is the same op on the gradient.
    return torch.ops.aten.native_dropout_backward(x, keep_mask(x.shape, p, x.device), 1 / (1 - p))


class ContiguousActivation(nn.Module):
    """An activation module that lays its input out contiguously first (no parameters:
    the state dict is the original's)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous())


def _norm_conv_layer(module: nn.Module) -> bool:
    """A convolution, then a layer norm over channels (a transposed view), then an
    activation: the layer-normalised conv layer of wav2vec2 and the models built on it."""
    children = dict(module.named_children())
    return (
        isinstance(children.get("conv"), nn.Conv1d)
        and isinstance(children.get("layer_norm"), nn.LayerNorm)
        and isinstance(children.get("activation"), nn.Module)
        and not isinstance(children["activation"], ContiguousActivation)
    )


class TanhGELU(nn.Module):
    """GELU's tanh approximation in one kernel: what transformers' NewGELUActivation
    computes op by op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x, approximate="tanh")


class MaskDropout(nn.Dropout):
    """nn.Dropout with `dropout`'s masks; a drop-in for the modules of a loaded model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def matmul_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,  # the probability, by the name transformers passes it
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention as transformers' interface calls it: (B, H, L, D) in, (B, L, H, D) out.

    `attention_mask`: SDPA's layout (True = attend, or an additive float mask),
    broadcast over heads; None when nothing is padded, and then a decoder's attention
    is causal as SDPA's is (`is_causal`, else the module's own flag). Fewer key and
    value heads than query heads (grouped-query attention) are shared by groups, and a
    `position_bias` (T5's relative positions) is added to the scores, as in SDPA's.
    """
    packing = kwargs.pop(unpadding.PACKING, None)
    kwargs.pop(first_token.FIRST_TOKEN, None)  # for the last layer's hooks (first_token)
    if packing is not None:  # packed rows (see unpadding): attention on the padded layout

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
            return matmul_attention(module, q, k, v, mask, scaling, dropout, **kwargs)[0]

        return unpadding.packed_attention(attend, query, key, value, packing), None
    is_causal = kwargs.get("is_causal")
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    length = query.shape[2]
    if attention_mask is None and is_causal and length > 1:
        attention_mask = torch.ones(
            length, key.shape[2], dtype=torch.bool, device=query.device
        ).tril(key.shape[2] - length)
    if any(kwargs.get(name) is not None for name in _THEIRS_ONLY):
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            zero = torch.zeros((), dtype=query.dtype, device=query.device)
            attention_mask = _additive(attention_mask, zero)  # the eager functions add it
        attend = _models_own(module)
        return attend(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    if key.shape[1] != query.shape[1]:  # each key and value head serves a group of queries
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    bias = kwargs.get("position_bias")
    if bias is not None:  # one additive mask: the bias where attended, the minimum elsewhere
        if attention_mask is None:
            attention_mask = bias
        elif attention_mask.dtype == torch.bool:
            attention_mask = _additive(attention_mask, bias)
        else:
            attention_mask = bias + attention_mask
    # SDPA where it is the faster: inference, CUDA, and fp32 without dropout (its
    # flash kernel's backward is slow only in bf16).
    if (
        not torch.is_grad_enabled()
        or query.device.type != "cpu"
        or (dropout == 0.0 and query.dtype == torch.float32)
    ):
        out = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
        )
        return out.transpose(1, 2).contiguous(), None
    scale = query.size(-1) ** -0.5 if scaling is None else scaling
    out = attention_by_matmul(query, key, value, attention_mask, scale, dropout, module.training)
    return out.transpose(1, 2).contiguous(), None


# Attention arguments this path does not compute (logit soft-capping, attention sinks):
# a call that has them runs the model's own function.
_THEIRS_ONLY = ("softcap", "s_aux", "sinks")


def _additive(mask: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A boolean mask (True = attend) as an additive one: `bias` where attended, the
    dtype's minimum elsewhere."""
    return torch.where(mask, bias, torch.finfo(bias.dtype).min)


def _modeling_file(module: nn.Module) -> Any:
    return sys.modules.get(type(module).__module__)


def _models_own(module: nn.Module) -> Any:
    """The eager attention function of `module`'s modeling file (transformers' reference
    for it), else SDPA's."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return getattr(_modeling_file(module), "eager_attention_forward", sdpa_attention_forward)


def attention_by_matmul(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    p: float,
    training: bool,
) -> torch.Tensor:
    """softmax(Q K^T * scale + mask) V with `dropout` on the weights; (B, H, L, D).

    Each pass over the (B, H, L, L) weights costs more than one over the output: the
    mask is applied by `where` (one pass each way, where masked_fill clones first), and
    dropout keeps or zeroes the weights by `where` too, its 1 / (1 - p) applied to the
    (B, H, L, D) output instead (the same product; the bool mask is never converted).
    """
    scores = torch.matmul(query * scale, key.transpose(-1, -2))
    if mask is not None and mask.dtype == torch.bool:
        scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
    elif mask is not None:
        scores = scores + mask
    weights = scores.softmax(dim=-1).to(value.dtype)
    if not training or p == 0.0 or p >= 1.0 or weights.device.type != "cpu":
        return torch.matmul(dropout(weights, p, training), value)
    kept = torch.where(keep_mask(weights.shape, p, weights.device), weights, 0.0)
    return torch.matmul(kept, value).mul_(1 / (1 - p))


def register() -> None:
    """Make ATTENTION known to transformers (idempotent): the function and its mask layout."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, matmul_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def speed_up(net: nn.Module) -> dict[str, int]:
    """Swap `net`'s dropout modules, attention, feature-encoder activations and GPT-2's
    GELU for the paths above, and hook its BERT-style encoders to skip padding, in place.

    Returns how many of each were swapped (for `ft explain` and tests).
    """
    from transformers.activations import NewGELUActivation

    register()
    swapped = {"dropout": 0, "attention": 0, "activation": 0, "gelu": 0, "unpadded": 0}
    swapped["first_token"] = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, MaskDropout(child.p, child.inplace))
                swapped["dropout"] += 1
            elif type(child) is NewGELUActivation:
                setattr(parent, name, TanhGELU())
                swapped["gelu"] += 1
        if _norm_conv_layer(parent):
            parent.activation = ContiguousActivation(parent.activation)
            swapped["activation"] += 1
    configs: dict[int, Any] = {}
    computes_own: set[int] = set()  # configs of models that compute attention themselves
    for module in net.modules():
        config = getattr(module, "config", None)
        if _is_config(config):
            configs[id(config)] = config
            if _is_model(module) and not _routes_attention(module):
                computes_own.add(id(config))
    for key, config in configs.items():
        if getattr(config, "_attn_implementation", None) in _SWAPPABLE and key not in computes_own:
            config._attn_implementation = ATTENTION
            swapped["attention"] += 1
    if swapped["attention"]:  # packed rows need ATTENTION's packed path
        swapped["unpadded"] = unpadding.unpad_encoders(net, ATTENTION)
        swapped["first_token"] = sum(first_token.is_narrowed(m) for m in net.modules())
    return swapped


def _routes_attention(model: nn.Module) -> bool:
    """Whether `model`'s modeling file calls attention through transformers' interface.
    One that computes its own (MPNet, DeBERTa, WavLM) keeps its implementation's name:
    the name also sets the layout of the masks it is handed (additive for eager, boolean
    for SDPA and ATTENTION), and its own attention adds them."""
    return hasattr(_modeling_file(model), "ALL_ATTENTION_FUNCTIONS")


def _is_model(value: Any) -> bool:
    from transformers import PreTrainedModel

    return isinstance(value, PreTrainedModel)


def _is_config(value: Any) -> bool:
    from transformers import PretrainedConfig

    return isinstance(value, PretrainedConfig)
