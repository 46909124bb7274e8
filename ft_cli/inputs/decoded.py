"""Decoded inputs (images, clips) a training process keeps from one epoch to the next, so
that each file is read and decoded once per run instead of once per epoch."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch

# What one collator keeps at most; past it, the rest is decoded again each epoch.
BUDGET_BYTES = 1 << 30


class DecodedCache:
    """Key (a row, a file) -> its decoded input, up to BUDGET_BYTES, for a collator that
    reads its split again and again (training; `enabled`). A loader's worker process keeps
    nothing: it lives for one epoch, and what it held would only take memory; nor does a
    single pass (evaluation, prediction), which would never read it back."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.kept: dict[Hashable, Any] = {}
        self.bytes = 0

    def get(self, key: Hashable) -> Any:
        return self.kept.get(key)

    def keep(self, key: Hashable, decoded: Any, size: int) -> None:
        if not self.enabled or torch.utils.data.get_worker_info() is not None:
            return
        if key not in self.kept and self.bytes + size <= BUDGET_BYTES:
            self.kept[key] = decoded
            self.bytes += size
