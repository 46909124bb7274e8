"""What a task computes per batch: its collator, forward pass, loss and metrics.

The engine runs any task through this one interface: sequence classification
and regression (a label per row) and masked-LM pretraining (the masked tokens
of each row are the targets).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ft_cli.config.schema import TaskConfig
from ft_cli.data import batching
from ft_cli.data.batching import Collate, Collator
from ft_cli.data.encoded import EncodedSplit
from ft_cli.tasks import info, metrics, mlm, tagging

Batch = dict[str, torch.Tensor]


class Objective:
    """Classification / regression: the model's logits against the row labels."""

    pad_multiple = 1  # batches padded to a multiple of this many tokens (train.pad_to_multiple_of)
    pooling = "mean"  # data.window_pooling: a long input's windows combined for its metrics
    smaller_inputs = "lower data.max_length"  # how an out-of-memory message says to shrink a row

    def __init__(
        self,
        net: nn.Module,
        task: str,
        num_labels: int,
        pad_id: int,
        compile_model: bool,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
    ) -> None:
        self.task, self.num_labels, self.pad_id = task, num_labels, pad_id
        self.label_smoothing = label_smoothing
        self.class_weights = None if class_weights is None else torch.tensor(class_weights)
        # The compiled wrapper shares its parameters with `net`.
        self.forward = torch.compile(net, dynamic=True) if compile_model else net

    def collator(self, split: EncodedSplit, seed: int) -> Collate:
        """Evaluation batches; a long input's windows say which window each row is."""
        return self._collator(split, windows=getattr(split, "rows", None) is not None)

    def _collator(self, split: EncodedSplit, windows: bool) -> Collate:
        regression = info(self.task).targets == "score"
        return Collator(split, self.pad_id, regression, self.pad_multiple, windows)

    def train_collator(self, split: Any, seed: int) -> Collate:
        """The training batches' collator (an image task's also augments): a window is
        trained on as a row of its own."""
        if getattr(split, "rows", None) is None:
            return self.collator(split, seed)
        return self._collator(split, windows=False)

    def configure(self, data: Any) -> None:
        """Take what the data settings say about batches (images: augmentation, workers)."""
        self.pooling = data.window_pooling

    def inputs_vary(self) -> None:
        """Training batches are augmented: a row's inputs differ from epoch to epoch."""

    def count(self, batch: Batch) -> tuple[int, int, int]:
        """(rows, real tokens, tokens with padding) of a collated batch."""
        mask = batch["attention_mask"]
        return len(mask), int(mask.sum()), mask.numel()

    def input_shape(self, batch: Batch) -> str:
        """One row's input size, in words (for an out-of-memory message)."""
        return f"sequence length {batch['attention_mask'].shape[1]}"

    def set_epoch(self, collate: Collate, epoch: int) -> None:
        """Per-epoch state of a training collator (an augmenting one's)."""
        setter = getattr(collate, "set_epoch", None)
        if setter is not None:
            setter(epoch)

    def outputs(self, batch: Batch) -> tuple[torch.Tensor, Any]:
        """(predictions, targets) of one batch already on the device; evaluating a long
        input's windows, the targets are (labels, the window index of each row)."""
        window = batch.pop("window", None)
        labels = batch.pop("labels")
        logits = self.forward(**batch).logits
        return logits, labels if window is None else (labels, window)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return metrics.task_loss(
            self.task, logits, targets, self.label_smoothing, self.weights_on(logits.device)
        )

    def weights_on(self, device: torch.device) -> torch.Tensor | None:
        """The class weights on the logits' device (moved there once)."""
        if self.class_weights is not None and self.class_weights.device != device:
            self.class_weights = self.class_weights.to(device)
        return self.class_weights

    def train_loader(
        self,
        split: Any,
        collate: Collate,
        batch_size: int,
        seed: int,
        group_by_length: bool,
        rank: int,
        world: int,
    ) -> tuple[Any, Any]:
        """(the training loader, its sampler, which selects the epoch)."""
        return batching.train_loader(split, batch_size, seed, collate, group_by_length, rank, world)

    def eval_loader(
        self, split: Any, collate: Collate, batch_size: int, rank: int, world: int, even: bool
    ) -> Any:
        return batching.eval_loader(split, batch_size, collate, rank, world, even)

    def new_metrics(self, split: EncodedSplit | None = None) -> Any:
        """A fresh accumulator of the metrics over `split` (the evaluated rows; a long
        input's windows are scored as the input)."""
        own = metrics.EvalMetrics(self.task, self.num_labels)
        if getattr(split, "rows", None) is None:
            return own
        from ft_cli.tasks import documents

        return documents.PooledMetrics(own, split, self.pooling)


class MaskedLMObjective(Objective):
    """Masked-LM: fresh masks per batch; loss and metrics over the masked tokens."""

    def __init__(
        self, net: nn.Module, task: TaskConfig, tokenizer: Any, pad_id: int, compile_model: bool
    ) -> None:
        self.task, self.num_labels, self.pad_id = task.kind, 0, pad_id
        self.rule = mlm.MaskingRule.from_task(task, tokenizer)
        self.forward = self.model_forward(net, compile_model)

    def model_forward(self, net: nn.Module, compile_model: bool) -> Any:
        """What runs the model on a batch (the masked positions' logits only)."""
        return mlm.MaskedLMForward(net, compile_model)

    def collator(self, split: EncodedSplit, seed: int) -> Collate:
        return mlm.MaskingCollator(split, self.pad_id, self.rule, seed, self.pad_multiple)

    def set_epoch(self, collate: Collate, epoch: int) -> None:
        assert isinstance(collate, mlm.MaskingCollator)
        collate.set_epoch(epoch)

    def outputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(batch)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return mlm.mlm_loss(logits, targets)

    def new_metrics(self, split: EncodedSplit | None = None) -> Any:
        return mlm.MaskedLMMetrics()


class NextSentenceObjective(MaskedLMObjective):
    """Masked-LM plus next-sentence prediction: the two losses summed."""

    def model_forward(self, net: nn.Module, compile_model: bool) -> Any:
        from ft_cli.tasks import nsp

        return nsp.NextSentenceForward(net, compile_model)

    def collator(self, split: EncodedSplit, seed: int) -> Collate:
        from ft_cli.tasks import nsp

        return nsp.PairMaskingCollator(split, self.pad_id, self.rule, seed, self.pad_multiple)

    def loss(self, predictions: Any, targets: Any) -> torch.Tensor:
        from ft_cli.tasks import nsp

        (logits, pair_logits), (tokens, pairs) = predictions, targets
        return mlm.mlm_loss(logits, tokens) + nsp.nsp_loss(pair_logits, pairs)

    def new_metrics(self, split: EncodedSplit | None = None) -> Any:
        from ft_cli.tasks import nsp

        return nsp.NextSentenceMetrics()


class TaggingObjective(Objective):
    """Token classification: a tag per sub-token; targets carry the word starts for metrics."""

    def __init__(
        self,
        net: nn.Module,
        labels: list[str],
        pad_id: int,
        compile_model: bool,
        label_smoothing: float,
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__(
            net,
            "token_classification",
            len(labels),
            pad_id,
            compile_model,
            label_smoothing,
            class_weights,
        )
        self.labels = labels

    def _collator(self, split: EncodedSplit, windows: bool) -> Collate:
        return tagging.TaggedCollator(split, self.pad_id, self.pad_multiple, windows)

    def outputs(self, batch: Batch) -> tuple[torch.Tensor, Any]:
        """(logits [rows, tokens, tags], targets [rows, tokens, 2]: label id, word start;
        evaluating a long input's windows, with the window index of each row)."""
        window = batch.pop("window", None)
        labels, starts = batch.pop("labels"), batch.pop("word_starts")
        targets = torch.stack([labels, starts], dim=-1)
        return self.forward(**batch).logits, targets if window is None else (targets, window)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return tagging.tagging_loss(
            logits, targets, self.label_smoothing, self.weights_on(logits.device)
        )

    def new_metrics(self, split: EncodedSplit | None = None) -> Any:
        if getattr(split, "rows", None) is None:
            return tagging.TaggingMetrics(self.labels)
        from ft_cli.tasks import documents

        return documents.StitchedTagMetrics(self.labels, split)


def build_objective(
    net: nn.Module,
    task: TaskConfig,
    tokenizer: Any,
    compile_model: bool,
    label_smoothing: float = 0.0,
    labels: list[str] | None = None,
) -> Objective:
    """The task's objective (its module in ft_cli.tasks builds it)."""
    from ft_cli import tasks

    return tasks.get(task.kind).objective(
        net, task, tokenizer, labels, compile_model, label_smoothing
    )
