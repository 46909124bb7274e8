"""Data-parallel processes (torchrun, or SLURM tasks): who this process is, and collectives.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a SLURM job step with several
tasks (the submitit launcher's `tasks_per_node`) sets SLURM_PROCID and friends,
which submitit's helper maps to the same variables. One process alone is world
size 1 and every function here is then a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()  # one process: every collective below is a no-op


def from_env() -> Dist:
    """This process's place, from torchrun's (or SLURM's) environment."""
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        _export_slurm_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return Dist(rank=rank, world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def _export_slurm_env() -> None:
    # submitit's helper derives MASTER_ADDR/PORT, RANK, WORLD_SIZE and
    # LOCAL_RANK from the SLURM step; without submitit, torchrun is the way.
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        return
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init() -> Dist:
    """Join the process group (once) when there are several processes."""
    import torch
    import torch.distributed as dist

    place = from_env()
    if place.enabled and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(gpu_index(place))
            # NCCL for the model's tensors, gloo for small CPU-side objects.
            backend = "cpu:gloo,cuda:nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend=backend)
    return place


def gpu_index(place: Dist) -> int:
    """This process's GPU: its local rank, or GPU 0 where SLURM gives each task just one."""
    import torch

    return place.local_rank % max(torch.cuda.device_count(), 1)


def broadcast(value: T, place: Dist) -> T:
    """Rank 0's `value` on every rank."""
    if not place.enabled:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T, place: Dist) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not place.enabled:
        return [value]
    import torch.distributed as dist

    boxes: list[Any] = [None] * place.world
    dist.all_gather_object(boxes, value)
    return boxes


def any_rank(flag: bool, place: Dist) -> bool:
    """True on every rank when `flag` is true on any (stop signals: checked every step).

    A one-element CPU tensor: gloo carries it, with no pickling and no GPU sync.
    """
    if not place.enabled:
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean(value: Any, place: Dist) -> Any:
    """A tensor averaged over the ranks (in place)."""
    if place.enabled:
        import torch.distributed as dist

        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= place.world
    return value


def full_tensor(value: Any) -> Any:
    """A sharded DTensor (a gradient norm, a penalty under FSDP) as one ordinary tensor."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def barrier(place: Dist) -> None:
    if place.enabled:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first(place: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (it fills caches), the others after it."""
    if not place.is_main:
        barrier(place)
    yield
    if place.is_main:
        barrier(place)


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
