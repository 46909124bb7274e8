"""Everything the training loop carries from step to step, so a checkpoint can restore it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoopState:
    """The loop's position and running records; plain values only (checkpoint-safe)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch the next batch comes from
    next_batch: int = 0  # index of the next batch within that epoch
    samples_seen: int = 0
    real_tokens: int = 0  # non-pad tokens fed to the model
    padded_tokens: int = 0  # all tokens fed to the model
    running_loss: float = 0.0  # loss summed since the last log step
    running_batches: int = 0
    skipped_steps: int = 0  # optimizer steps skipped (non-finite gradients)
    best_value: float | None = None  # early stopping: best monitored value
    bad_evals: int = 0  # early stopping: evaluations without improvement
    best_checkpoint: str | None = None  # folder name under checkpoints/
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    config_yaml: str = ""  # the resolved spec the run started with (drift checks)
    data_hash: str = ""  # of the tokenized training data (drift checks)

    def advance(self, epoch: int, index: int, batches_per_epoch: int) -> None:
        """One optimizer step done, its last batch `index` of `epoch`."""
        self.step += 1
        self.epoch, self.next_batch = epoch, index + 1
        if self.next_batch == batches_per_epoch:
            self.epoch, self.next_batch = epoch + 1, 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoopState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
