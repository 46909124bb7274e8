"""Masked-LM pretraining: the text's own tokens, some masked, are the targets."""

from __future__ import annotations

from typing import Any

from torch import nn

from ft_cli.config.schema import DataConfig, ModelConfig, TaskConfig
from ft_cli.data import corpus, sentence_pairs
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.tasks.base import Task


class MaskedLM(Task):
    name = "mlm"
    exportable = False
    pipeline_tag = "fill-mask"
    uses_labels = False
    named_labels = False

    def encode(
        self,
        cfg: DataConfig,
        task: TaskConfig,
        tokenizer: Any,
        dataset: Any,
        labels: list[str] | None,
        split: str,
    ) -> EncodedSplit:
        if task.nsp:
            return sentence_pairs.encode_pairs(cfg, task, tokenizer, dataset, split)
        return corpus.encode_corpus(cfg, task, tokenizer, dataset, split)

    def auto_class(self, task: TaskConfig) -> str | None:
        return "AutoModelForPreTraining" if task.nsp else None

    def build_model(
        self,
        cfg: ModelConfig,
        task: TaskConfig,
        labels: Any,
        vocab: int,
        dropout: float | None,
        meta: bool,
    ) -> tuple[nn.Module, set[str]]:
        net, new = super().build_model(cfg, task, labels, vocab, dropout, meta)
        if task.nsp:
            from ft_cli.models import model
            from ft_cli.tasks import nsp

            nsp.check_head(net, model.resolved_name(cfg))
        return net, new

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        return {}, "AutoModelForMaskedLM"

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        tokenizer: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Any:
        from ft_cli.tasks.objective import MaskedLMObjective, NextSentenceObjective

        kind = NextSentenceObjective if task.nsp else MaskedLMObjective
        return kind(net, task, tokenizer, tokenizer.pad_token_id or 0, compile_model)

    def check_predictable(self) -> None:
        raise FtError("a masked-LM model predicts tokens, not rows; fine-tune it first")


TASK = MaskedLM()
