"""Sequence to sequence (T5, BART, mT5, ... `AutoModelForSeq2SeqLM`): a source text in,
a target text out.

The source is `task.prefix` + `data.prompt_column`, cut at `data.max_length`; the
target is `data.response_column`, cut at `data.max_target_length`. The decoder reads
the target shifted right behind the model's start token, and the loss reads every
target token, none of the padding. Every evaluation generates each validation
source's text (`task.generation`) and scores it against the target: ROUGE-1, -2, -L
(torchmetrics), corpus BLEU (sacreBLEU's tokenization), exact match and token F1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ft_cli.config.schema import DataConfig, TaskConfig
from ft_cli.data import token_cache
from ft_cli.data.batching import padded_width
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.tasks import generation
from ft_cli.tasks.causal_lm import CausalLM, _limit
from ft_cli.tasks.objective import Objective

SCORES = ("rouge1", "rouge2", "rougeL", "bleu")


def sources(cfg: DataConfig, task: TaskConfig, values: list[Any]) -> list[str]:
    return [task.prefix + ("" if v is None else str(v)) for v in values]


class Seq2Seq(CausalLM):
    name = "seq2seq"
    pipeline_tag = "text2text-generation"

    def input_columns(self, cfg: DataConfig) -> dict[str, str]:
        return {"data.prompt_column": cfg.prompt_column}

    def settle(self, task: TaskConfig, prepared: Any, key: str = "task.") -> TaskConfig:
        return task

    def encode(
        self,
        cfg: DataConfig,
        task: TaskConfig,
        tokenizer: Any,
        dataset: Any,
        labels: list[str] | None,
        split: str,
    ) -> EncodedSplit:
        texts = sources(cfg, task, dataset[cfg.prompt_column])

        def tokenize() -> EncodedSplit:
            ids = tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
            return EncodedSplit(ids, token_type_ids=None, labels=[])

        how = f"seq2seq source|{cfg.max_length}"
        encoded = token_cache.cached(
            token_cache.cache_key(tokenizer, [texts], how), cfg.cache, tokenize
        )
        if cfg.response_column not in dataset.column_names:
            if split != "test":
                raise FtError(
                    f"data.response_column: column '{cfg.response_column}' is not in the"
                    f" {split} data; its columns are: {', '.join(dataset.column_names)}"
                )
            encoded.labels = [[] for _ in texts]  # unlabelled test rows: predictions only
            return encoded
        targets = ["" if v is None else str(v) for v in dataset[cfg.response_column]]

        def tokenize_targets() -> EncodedSplit:
            found = tokenizer(
                text_target=targets, truncation=True, max_length=cfg.max_target_length
            )
            return EncodedSplit(found["input_ids"], token_type_ids=None, labels=[])

        how = f"seq2seq target|{cfg.max_target_length}"
        answers = token_cache.cached(
            token_cache.cache_key(tokenizer, [targets], how), cfg.cache, tokenize_targets
        )
        encoded.labels = answers.input_ids
        return encoded

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        return {}, "AutoModelForSeq2SeqLM"

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        tokenizer: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Any:
        return Seq2SeqObjective(net, task, tokenizer, compile_model, label_smoothing)

    def predict_inputs(
        self,
        read: Any,
        tokenizer: Any,
        cfg: DataConfig,
        labels: list[str] | None,
        task: TaskConfig | None = None,
    ) -> tuple[Any, Any, Any]:
        """(each row's source ids, None, each row's cap on new tokens)."""
        assert task is not None
        texts = sources(cfg, task, read("data.prompt_column", cfg.prompt_column))
        ids = tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
        return ids, None, [_limit(None, task.generation)] * len(ids)


class Seq2SeqCollator:
    """Sources padded with their attention mask; targets padded with -100; each up to a
    multiple of `multiple` tokens (not past the split's longest source or target)."""

    def __init__(self, split: EncodedSplit, pad_id: int, multiple: int = 1) -> None:
        self.split, self.pad_id, self.multiple = split, pad_id, multiple
        self.caps = (0, 0)  # the split's longest source and target, when rounding
        if multiple > 1:
            targets = [len(a) for a in split.labels]  # type: ignore[arg-type]
            self.caps = (max(split.lengths(), default=0), max(targets, default=0))

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = [self.split.input_ids[i] for i in indices]
        answers = [list(self.split.labels[i]) for i in indices]  # type: ignore[arg-type]
        width, long = max(len(r) for r in rows), max(1, max(len(a) for a in answers))
        width = padded_width(width, self.multiple, self.caps[0])
        long = padded_width(long, self.multiple, self.caps[1])
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), long), -100, dtype=torch.long)
        for j, (row, answer) in enumerate(zip(rows, answers, strict=True)):
            ids[j, : len(row)] = torch.tensor(row)
            mask[j, : len(row)] = 1
            labels[j, : len(answer)] = torch.tensor(answer, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def shifted(labels: torch.Tensor, start: int, pad: int) -> torch.Tensor:
    """The decoder's inputs: the targets one step later, behind the start token."""
    inputs = torch.full_like(labels, pad)
    inputs[:, 0] = start
    inputs[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] < 0, pad)
    return inputs


class Seq2SeqObjective(Objective):
    """Cross-entropy over the target tokens; generated targets scored at evaluation."""

    def __init__(
        self,
        net: nn.Module,
        task: TaskConfig,
        tokenizer: Any,
        compile_model: bool,
        label_smoothing: float,
    ) -> None:
        self.task, self.num_labels, self.label_smoothing = task.kind, 0, label_smoothing
        self.pad_id = tokenizer.pad_token_id or 0
        config = net.config
        start = getattr(config, "decoder_start_token_id", None)
        self.start = self.pad_id if start is None else int(start)
        self.net, self.tokenizer, self.settings = net, tokenizer, task.generation
        self.forward = torch.compile(net, dynamic=True) if compile_model else net

    def collator(self, split: EncodedSplit, seed: int) -> Any:
        return Seq2SeqCollator(split, self.pad_id, self.pad_multiple)

    def train_collator(self, split: Any, seed: int) -> Any:
        return self.collator(split, seed)

    def count(self, batch: dict[str, torch.Tensor]) -> tuple[int, int, int]:
        mask, labels = batch["attention_mask"], batch["labels"]
        real = int(mask.sum()) + int((labels >= 0).sum())
        return len(mask), real, mask.numel() + labels.numel()

    def outputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """(logits of the target tokens [tokens, vocabulary], (their ids, the batch's
        sources, masks and padded targets): what generation is scored with)."""
        labels = batch.pop("labels")
        decoder = shifted(labels, self.start, self.pad_id)
        logits = self.forward(**batch, decoder_input_ids=decoder, use_cache=False).logits
        read = labels >= 0
        return logits[read], (labels[read], batch["input_ids"], batch["attention_mask"], labels)

    def loss(self, logits: torch.Tensor, targets: Any) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets[0], label_smoothing=self.label_smoothing)

    def new_metrics(self, split: EncodedSplit | None = None) -> Any:
        limit = self.settings.eval_rows
        return TextMetrics(self if limit != 0 else None, limit)


class TextMetrics(generation.GeneratedScores):
    """Loss over the target tokens; each source's text generated and scored (ROUGE, BLEU,
    exact match, token F1) against its target."""

    def update(self, logits: torch.Tensor, targets: Any) -> None:
        tokens, ids, mask, labels = targets
        self.add_loss(logits, tokens)
        if self.room() != 0:
            lengths = mask.sum(-1).cpu()
            sources = [row[: int(n)].tolist() for row, n in zip(ids.cpu(), lengths, strict=True)]
            self.answer(sources, [[t for t in row.tolist() if t >= 0] for row in labels.cpu()])

    def compute(self) -> dict[str, float]:
        return self.scores(SCORES)


TASK = Seq2Seq()
