"""Next-sentence prediction beside masked-LM (`task=mlm task.nsp=true`): BERT's own
pretraining. Batches are masked segment pairs; the loss is the masked-LM loss plus
the cross-entropy of the pair's IsNext / NotNext label."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ft_cli.errors import FtError
from ft_cli.tasks import mlm

NSP_KEY = "next_sentence_label"


def check_head(net: nn.Module, model_name: str) -> None:
    """Refuse a pretraining model without a next-sentence head, in one line."""
    if NSP_KEY not in inspect.signature(net.forward).parameters:
        raise FtError(
            f"task.nsp=true: {model_name} pretrains as {type(net).__name__}, which has no"
            " next-sentence head (BERT-family models have one); set task.nsp=false"
        )


class PairMaskingCollator(mlm.MaskingCollator):
    """Masks the pairs like any masked-LM rows, and adds each pair's NSP label."""

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = super().__call__(indices)
        batch[NSP_KEY] = torch.tensor([self.split.labels[i] for i in indices], dtype=torch.long)
        return batch


class NextSentenceForward:
    """((masked-token logits, pair logits), (masked-token ids, pair labels)) of a batch.

    BERT-style heads (`cls.predictions`, `cls.seq_relationship`) run the vocabulary
    layer on the masked positions only; other models compute every position's.
    """

    def __init__(self, net: nn.Module, compile_model: bool = False) -> None:
        heads = getattr(net, "cls", None)
        self.split = all(hasattr(heads, n) for n in ("predictions", "seq_relationship"))
        self.net = net
        self.body = getattr(net, net.base_model_prefix) if self.split else net
        if compile_model:
            self.body = torch.compile(self.body, dynamic=True)

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        targets, positions = batch.pop("labels"), batch.pop("mlm_positions")
        pairs = batch.pop(NSP_KEY)
        if self.split:
            hidden, pooled = self.body(**batch)[:2]
            selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
            heads = self.net.cls
            logits, pair_logits = heads.predictions(selected), heads.seq_relationship(pooled)
        else:
            out = self.body(**batch)
            every = out.prediction_logits
            logits = every.reshape(-1, every.shape[-1]).index_select(0, positions)
            pair_logits = out.seq_relationship_logits
        return (logits, pair_logits), (targets, pairs)


def nsp_loss(pair_logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(pair_logits.float(), pairs)


class NextSentenceMetrics(mlm.MaskedLMMetrics):
    """The masked-LM metrics, and the pairs' loss and accuracy (nsp_loss, nsp_accuracy)."""

    def __init__(self) -> None:
        super().__init__()
        self.pair_loss, self.pair_correct, self.pairs = 0.0, 0, 0

    def update(self, predictions: Any, targets: Any) -> None:
        (logits, pair_logits), (tokens, pairs) = predictions, targets
        super().update(logits, tokens)
        pair_logits = pair_logits.detach().float()
        self.pair_loss += float(F.cross_entropy(pair_logits, pairs, reduction="sum"))
        self.pair_correct += int((pair_logits.argmax(-1) == pairs).sum())
        self.pairs += len(pairs)

    def merge(self, others: list[Any]) -> NextSentenceMetrics:
        super().merge(others)
        for other in others:
            self.pair_loss += other.pair_loss
            self.pair_correct += other.pair_correct
            self.pairs += other.pairs
        return self

    def compute(self) -> dict[str, float]:
        return {
            **super().compute(),
            "nsp_loss": self.pair_loss / max(self.pairs, 1),
            "nsp_accuracy": self.pair_correct / max(self.pairs, 1),
        }
