"""Masked-LM pretraining: the text's own tokens, some masked, are the targets."""

from __future__ import annotations

from typing import Any

from torch import nn

from ft_cli.config.schema import DataConfig, TaskConfig
from ft_cli.data import corpus
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.tasks.base import Task


class MaskedLM(Task):
    name = "mlm"
    uses_labels = False
    named_labels = False

    def encode(self, cfg: DataConfig, task: TaskConfig, tokenizer: Any, dataset: Any,
               labels: list[str] | None, split: str) -> EncodedSplit:  # fmt: skip
        return corpus.encode_corpus(cfg, task, tokenizer, dataset, split)

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        return {}, "AutoModelForMaskedLM"

    def objective(self, net: nn.Module, task: TaskConfig, tokenizer: Any,
                  labels: list[str] | None, compile_model: bool,
                  label_smoothing: float) -> Any:  # fmt: skip
        from ft_cli.tasks.objective import MaskedLMObjective

        return MaskedLMObjective(net, task, tokenizer, tokenizer.pad_token_id or 0, compile_model)

    def check_predictable(self) -> None:
        raise FtError("a masked-LM model predicts tokens, not rows; fine-tune it first")


TASK = MaskedLM()
