"""The seam between the training loop and the parallel backend: one process, DDP or FSDP.

The loop asks the backend for the few things that differ: wrap the forward
module, when gradients are synchronised, how a checkpoint is written and read,
how metrics from several processes merge, and the full weights for the export.
One process is the plain case; each backend below only adds what it changes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ft_cli.config.schema import HardwareConfig, Parallel, StrategyConfig
from ft_cli.errors import FtError
from ft_cli.hardware import distributed, sharded
from ft_cli.hardware.distributed import Dist
from ft_cli.rundir import checkpoint


class Backend:
    """The backend of one process, every operation the plain single-device one; the
    data-parallel backends below override what they change."""

    even_eval_batches = False  # FSDP: every rank must run the same number of forwards

    def __init__(self, place: Dist = distributed.SINGLE) -> None:
        self.place = place

    @property
    def is_main(self) -> bool:
        return self.place.is_main

    def check(self, plan: StrategyConfig) -> None:
        """Refuse strategies the backend cannot run."""

    def shard(self, forward: nn.Module, net: nn.Module) -> None:
        """Before the optimizer is built: split the parameters over the processes."""

    def wrap(self, forward: nn.Module, device: torch.device) -> Any:
        """The module the loop calls (again after the trainable set changed)."""
        return forward

    def sync(self, synced: Any, boundary: bool) -> contextlib.AbstractContextManager:
        """Gradients are averaged over the processes only at an accumulation boundary."""
        return contextlib.nullcontext()

    def save(
        self,
        root: Path,
        step: int,
        net: nn.Module,
        forward: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        state: dict[str, Any],
    ) -> None:
        checkpoint.save_checkpoint(root, step, net, optimizer, scheduler, scaler, state)

    def resume(
        self,
        folder: Path,
        net: nn.Module,
        forward: nn.Module,
        optimizer: torch.optim.Optimizer,
        saved: dict[str, Any],
    ) -> None:
        checkpoint.load_weights(net, folder)
        optimizer.load_state_dict(saved["optimizer"])

    def load_weights(
        self, folder: Path, net: nn.Module, forward: nn.Module, optimizer: torch.optim.Optimizer
    ) -> None:
        checkpoint.load_weights(net, folder)

    def full_weights(self, forward: nn.Module) -> dict[str, torch.Tensor] | None:
        """Weights for the export; None: the model's own state dict."""
        return None

    def merge(self, scores: Any) -> Any:
        """Metrics accumulated on every process, merged."""
        return scores


class DataParallel(Backend):
    """A model copy per process (DistributedDataParallel); rank 0 writes checkpoints."""

    def wrap(self, forward: nn.Module, device: torch.device) -> Any:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # Multi-task: a batch trains one task's head; the others get no gradient.
        partial = getattr(getattr(forward, "objective", None), "uses_part_of_model", False)
        return DistributedDataParallel(forward, device_ids=ids, find_unused_parameters=partial)

    def sync(self, synced: Any, boundary: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if boundary else synced.no_sync()

    def save(self, root, step, net, forward, optimizer, scheduler, scaler, state) -> None:
        # Every rank's RNG state is kept: its dropout masks differ from the others'.
        rng = distributed.gather(checkpoint.rng_state(), self.place)
        if self.is_main:
            checkpoint.save_checkpoint(root, step, net, optimizer, scheduler, scaler, state, rng)

    def merge(self, scores: Any) -> Any:
        parts = distributed.gather(scores, self.place)
        return parts[0].merge(parts[1:])


class FullySharded(DataParallel):
    """FSDP2: weights, gradients and optimizer state sharded; sharded checkpoints."""

    even_eval_batches = True

    def check(self, plan: StrategyConfig) -> None:
        sharded.check_supported(plan)

    def shard(self, forward: nn.Module, net: nn.Module) -> None:
        if getattr(getattr(forward, "objective", None), "uses_part_of_model", False):
            raise FtError(
                "hardware.distributed=fsdp cannot train task=multitask (each batch trains one"
                " task's head); use hardware.distributed=ddp"
            )
        sharded.shard(forward, net)

    def wrap(self, forward: nn.Module, device: torch.device) -> Any:
        return forward  # fully_shard wrapped it in place

    def sync(self, synced: Any, boundary: bool) -> contextlib.AbstractContextManager:
        sharded.set_gradient_sync(synced, boundary)
        return contextlib.nullcontext()

    def save(self, root, step, net, forward, optimizer, scheduler, scaler, state) -> None:
        rng = distributed.gather(checkpoint.rng_state(), self.place)
        if self.is_main:  # every rank writes its shards into rank 0's temporary folder
            checkpoint.begin(root, step, checkpoint.estimated_bytes(net, optimizer))
        distributed.barrier(self.place)
        tmp = root / f"{checkpoint.TMP_PREFIX}{checkpoint.checkpoint_name(step)}"
        groups = sharded.save(tmp, forward, optimizer)
        distributed.barrier(self.place)
        if self.is_main:
            checkpoint.commit(root, tmp, step, groups, scheduler, scaler, state, rng)

    def resume(self, folder, net, forward, optimizer, saved) -> None:
        sharded.load(folder, forward, optimizer, saved["optimizer_groups"])

    def load_weights(self, folder, net, forward, optimizer) -> None:
        sharded.load(folder, forward, optimizer, None)

    def full_weights(self, forward: nn.Module) -> dict[str, torch.Tensor] | None:
        # Gathered on rank 0 (every rank takes part); names without the wrapper's prefix.
        return sharded.full_weights(forward, "net.", self.is_main)


def for_run(cfg: HardwareConfig, place: Dist) -> Backend:
    """The backend for this process: one process, or torchrun's DDP or FSDP."""
    if not place.enabled:
        return Backend(place)
    backends = {Parallel.ddp: DataParallel, Parallel.fsdp: FullySharded}
    return backends[cfg.distributed](place)
