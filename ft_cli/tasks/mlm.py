"""Masked-LM pretraining: masking, the batch collator, the loss and the metrics.

Masks are a pure function of (seed, epoch, batch): every epoch draws new ones,
and a resumed run draws exactly the masks the uninterrupted run would have.
Only the masked positions go through the vocabulary-sized output layer, which
for a small encoder costs as much as the encoder itself when run on every token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ft_cli.config.schema import TaskConfig
from ft_cli.data.batching import Collator
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError

IGNORE = -100
EVAL_EPOCH = 2**31 - 1  # validation masks: fixed, so evaluations compare


@dataclass
class MaskingRule:
    probability: float
    mask_replace_prob: float
    random_replace_prob: float
    whole_word: bool
    mask_id: int
    vocab_size: int
    special_ids: torch.Tensor

    @classmethod
    def from_task(cls, task: TaskConfig, tokenizer: Any) -> MaskingRule:
        if tokenizer.mask_token_id is None:
            raise FtError(
                "task=mlm: the tokenizer of model.name_or_path has no mask token; use a"
                " masked-LM model's tokenizer (BERT family)"
            )
        return cls(
            probability=task.mlm_probability,
            mask_replace_prob=task.mask_replace_prob,
            random_replace_prob=task.random_replace_prob,
            whole_word=task.whole_word_mask,
            mask_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            special_ids=torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long),
        )


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rule: MaskingRule,
    generator: torch.Generator,
    continues: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs with masks applied, labels: the original id where masked, else -100).

    Padding and special tokens are never chosen. With `continues` (True where a
    token continues the previous token's word), a word is chosen or not as a whole.
    """
    candidates = attention_mask.bool() & ~torch.isin(input_ids, rule.special_ids)
    chosen = torch.rand(input_ids.shape, generator=generator) < rule.probability
    if continues is not None:
        starts = ~(continues & candidates)
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        word_start = torch.where(starts, positions, 0).cummax(dim=1).values
        chosen = chosen.gather(1, word_start)
    chosen &= candidates
    labels = torch.where(chosen, input_ids, IGNORE)
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (roll < rule.mask_replace_prob)
    to_random = chosen & ~to_mask & (roll < rule.mask_replace_prob + rule.random_replace_prob)
    random_ids = torch.randint(rule.vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(to_mask, rule.mask_id, input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


class MaskingCollator:
    """Pads rows like `Collator`, then masks them with the batch's own generator.

    The batch's seed comes from (seed, epoch, first row index); the rows of one
    epoch's batches are disjoint, so no two batches of an epoch share a seed.
    """

    def __init__(
        self, split: EncodedSplit, pad_id: int, rule: MaskingRule, seed: int, multiple: int = 1
    ) -> None:
        self.pad = Collator(split, pad_id, regression=False, multiple=multiple)
        self.split, self.rule, self.seed = split, rule, seed
        self.epoch = EVAL_EPOCH

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.pad(indices)
        state = np.random.SeedSequence([self.seed, self.epoch, indices[0]]).generate_state(2)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        continues = None
        if self.split.word_continues is not None and self.rule.whole_word:
            continues = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
            for j, i in enumerate(indices):
                row = self.split.word_continues[i]
                continues[j, : len(row)] = torch.tensor(row, dtype=torch.bool)
        masked, labels = mask_tokens(
            batch["input_ids"], batch["attention_mask"], self.rule, generator, continues
        )
        batch["input_ids"] = masked
        # Flat positions and targets of the masked tokens, found here on the CPU:
        # the device never has to sync to learn how many there are.
        flat = labels.view(-1)
        positions = (flat != IGNORE).nonzero().squeeze(1)
        batch["mlm_positions"] = positions
        batch["labels"] = flat[positions]
        return batch


class MaskedLMForward:
    """Forward pass of a masked-LM model that returns logits of the masked tokens only.

    Models made of the backbone plus one head module (BERT: bert + cls) run
    the head on the masked positions only; others compute every position's
    logits and then select.
    """

    def __init__(self, net: nn.Module, compile_model: bool = False) -> None:
        children = dict(net.named_children())
        prefix = getattr(net, "base_model_prefix", "")
        heads = [m for name, m in children.items() if name != prefix]
        self.split = prefix in children and len(heads) == 1
        if self.split:
            self.body, self.head = children[prefix], heads[0]
        else:
            self.body, self.head = net, None
        if compile_model:
            self.body = torch.compile(self.body, dynamic=True)

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [masked tokens, vocab], target ids [masked tokens])."""
        targets = batch.pop("labels")
        positions = batch.pop("mlm_positions")
        if self.split:
            hidden = self.body(**batch)[0]
            selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
            return self.head(selected), targets
        logits = self.body(**batch).logits
        return logits.reshape(-1, logits.shape[-1]).index_select(0, positions), targets


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # Mean over the masked tokens; a batch without any gives 0, not NaN.
    total = F.cross_entropy(logits.float(), targets, reduction="sum")
    return total / max(len(targets), 1)


class MaskedLMMetrics:
    """Masked-token loss, perplexity and accuracy over an evaluation pass."""

    def __init__(self) -> None:
        self.loss_sum, self.correct, self.count = 0.0, 0, 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits = logits.detach().float()
        self.loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
        self.correct += int((logits.argmax(-1) == targets).sum())
        self.count += len(targets)

    def merge(self, others: list[MaskedLMMetrics]) -> MaskedLMMetrics:
        for other in others:
            self.loss_sum += other.loss_sum
            self.correct += other.correct
            self.count += other.count
        return self

    def compute(self) -> dict[str, float]:
        loss = self.loss_sum / max(self.count, 1)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 80.0)),  # exp(80) already says "untrained"
            "accuracy": self.correct / max(self.count, 1),
        }
