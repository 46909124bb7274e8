"""What a model's forward pass returns, as one tensor of scores."""

from __future__ import annotations

from typing import Any

import torch


def logits_of(out: Any) -> torch.Tensor:
    """The scores of a transformers model's output: its `logits`, or for a span head (extractive
    question answering) its start and end logits stacked as [rows, tokens, 2], the form an
    exported graph returns them in."""
    if getattr(out, "logits", None) is not None:
        return out.logits
    return torch.stack((out.start_logits, out.end_logits), dim=-1)
