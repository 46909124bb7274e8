"""A vocabulary embedding's gradient written into last step's memory, not fresh memory.

A BERT vocabulary's embedding gradient is a dense 47 MB tensor (MiniLM's 30,522 x 384 in
fp32) that each backward builds as zeros plus the rows the batch looked up, and that
the next `zero_grad` frees. glibc hands a block that size out as a fresh mapping and
unmaps it when freed, so the zero fill pays a page fault per 4 KiB: 15 to 18 ms a step
on a 2-core EPYC, against 2 ms to zero the same memory once it is mapped, plus the unmap.
Here the lookup's backward takes the tensor that was the weight's gradient at the last
step, once the optimizer has let it go (the weight has no gradient and nothing else
holds it), zeroes it and adds the rows into it, and autograd adopts it as the new
gradient without a copy. Wherever that is not so (the first step, a second micro-batch
before the optimizer's step, a gradient someone kept, other devices), the lookup's own
backward runs. Both sum each row's contributions in the order the batch looked them up:
the gradients are equal.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.weak import WeakIdKeyDictionary

# Smaller tables come from the allocator's heap, where nothing is mapped afresh.
MIN_BYTES = 4 << 20

# Parameter -> the tensor that was its gradient after its last backward.
_LAST_GRAD = WeakIdKeyDictionary()
_HOOKED = WeakIdKeyDictionary()  # parameters that remember their gradient


class ReusedGradEmbedding(nn.Embedding):
    """An `nn.Embedding` whose CPU training backward reuses its weight's last gradient.

    Holds the original's own weight parameter, so ties (an output layer sharing the
    table) and the state dict are unchanged.
    """

    @classmethod
    def taking_over(cls, old: nn.Embedding) -> ReusedGradEmbedding:
        new = cls(
            old.num_embeddings,
            old.embedding_dim,
            old.padding_idx,
            old.max_norm,
            old.norm_type,
            old.scale_grad_by_freq,
            old.sparse,
            _weight=old.weight,
        )
        new.weight = old.weight  # the same object: ties and hooks stay
        if new.weight not in _HOOKED:  # modules sharing a table (T5's) hook it once
            new.weight.register_post_accumulate_grad_hook(_remember_grad)
            _HOOKED[new.weight] = True
        return new

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if weight.device.type != "cpu" or not (torch.is_grad_enabled() and weight.requires_grad):
            return super().forward(ids)
        return _Lookup.apply(weight, ids, self.padding_idx)


def takes_over(module: nn.Module) -> bool:
    """Whether `module` is a plain embedding large enough to gain, with options the
    reused path computes (no max_norm renormalisation, no frequency scaling, dense)."""
    return (
        type(module) is nn.Embedding
        and module.weight.numel() * module.weight.element_size() >= MIN_BYTES
        and module.max_norm is None
        and not module.scale_grad_by_freq
        and not module.sparse
    )


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, ids: torch.Tensor, padding_idx: int | None):
        ctx.save_for_backward(ids)
        ctx.weight, ctx.padding_idx = weight, padding_idx
        return nn.functional.embedding(ids, weight, padding_idx)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor):
        (ids,) = ctx.saved_tensors
        weight, padding_idx = ctx.weight, ctx.padding_idx
        target = _free_last_grad(weight, grad)
        if target is None:
            rows = weight.shape[0]
            pad = -1 if padding_idx is None else padding_idx
            fresh = torch.ops.aten.embedding_dense_backward(grad, ids, rows, pad, False)
            return fresh, None, None
        target.zero_()
        target.index_add_(0, ids.reshape(-1), grad.reshape(-1, weight.shape[1]))
        if padding_idx is not None:
            target[padding_idx] = 0  # the lookup's own backward skips the padding row
        return target, None, None


def _remember_grad(weight: torch.Tensor) -> None:
    _LAST_GRAD[weight] = weight.grad


def _free_last_grad(weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
    """The weight's last gradient if nothing else holds it any more, else None."""
    last = _LAST_GRAD.pop(weight, None)
    if last is None or weight.grad is not None:
        return None  # first step, or still the gradient being accumulated
    if last.shape != weight.shape or last.dtype != like.dtype or last.device != like.device:
        return None
    # Anyone else holding it (a name in Python, a view, its memory) must not see it
    # change; the counts include `last` itself and the call's own argument.
    storage = last.untyped_storage()
    if (
        sys.getrefcount(last) != 2
        or last._use_count() != 1
        or torch._C._storage_Use_Count(storage._cdata) != 2
    ):
        return None
    return last
