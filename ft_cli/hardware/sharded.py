"""Fully sharded data parallel (hardware.distributed=fsdp): FSDP2 and its checkpoints.

Each encoder layer, and then the objective's forward module around the whole
model, is wrapped with `fully_shard`: every rank holds 1/N of the parameters,
gradients and optimizer state, and gathers a layer's weights only while it
runs. Checkpoints go through `torch.distributed.checkpoint`: each rank writes
its own shards, in safetensors files (`sharded/` in the checkpoint folder), so
no rank ever holds the whole state and nothing is pickled. The export gathers
the full weights on rank 0 and writes an ordinary `save_pretrained` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ft_cli.config.schema import StrategyConfig
from ft_cli.errors import FtError
from ft_cli.strategies import layers as strategy

SHARDS = "sharded"


def check_supported(plan: StrategyConfig) -> None:
    from ft_cli import strategies

    refusal = strategies.for_config(plan).fsdp_refusal
    if refusal is not None:
        raise FtError(
            f"hardware.distributed=fsdp: strategy={plan.kind.value} is not supported"
            f" ({refusal}); use hardware.distributed=ddp"
        )


def shard(root: nn.Module, net: nn.Module) -> None:
    """Shard `net`'s encoder layers one by one, then everything else under `root`."""
    from torch.distributed.fsdp import fully_shard

    try:
        layers = list(strategy.encoder_layers(net))
    except FtError:
        layers = []  # no layer stack found: one group for the whole model
    for layer in layers:
        fully_shard(layer)
    fully_shard(root)


def set_gradient_sync(root: Any, enabled: bool) -> None:
    """Reduce-scatter gradients only at an accumulation group's last batch."""
    root.set_requires_gradient_sync(enabled)


def _states(root: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    model_state = _untied(get_model_state_dict(root), root)
    return model_state, get_optimizer_state_dict(root, optimizer)


def _untied(state: dict[str, Any], root: nn.Module) -> dict[str, Any]:
    """One entry per parameter: a tied weight (masked-LM decoder = embeddings) is stored once."""
    seen: set[int] = set()
    aliases = set()
    for name, param in root.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            aliases.add(name)
        seen.add(id(param))
    return {name: tensor for name, tensor in state.items() if name not in aliases}


def save(folder: Path, root: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Every rank writes its shards of the weights and optimizer state into `folder/sharded`.

    Returns the optimizer's parameter groups (learning rates, parameter
    names): plain values for the checkpoint's state file.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    model_state, optim_state = _states(root, optimizer)
    writer = HuggingFaceStorageWriter(str(folder / SHARDS), save_distributed=True)
    dcp.save({"model": model_state, "optim": optim_state["state"]}, storage_writer=writer)
    return {"optimizer_groups": optim_state["param_groups"]}


def load(
    folder: Path,
    root: nn.Module,
    optimizer: torch.optim.Optimizer,
    groups: list[dict[str, Any]] | None,
) -> None:
    """Read a sharded checkpoint into the sharded model (and optimizer, given its groups)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    if not (folder / SHARDS).is_dir():
        raise FtError(
            f"{folder}: not written by a hardware.distributed=fsdp run (no {SHARDS}/);"
            " resume it with hardware.distributed=ddp"
        )
    model_state, optim_state = _states(root, optimizer)
    wanted = {"model": model_state}
    if groups is not None:
        wanted["optim"] = optim_state["state"]
    dcp.load(wanted, storage_reader=HuggingFaceStorageReader(str(folder / SHARDS)))
    # Not strict: a tied weight's second name is absent, and loading the first sets both.
    set_model_state_dict(root, wanted["model"], options=StateDictOptions(strict=False))
    if groups is not None:
        state = {"state": wanted["optim"], "param_groups": groups}
        set_optimizer_state_dict(root, optimizer, state)


def full_weights(root: nn.Module, prefix: str, main: bool) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on rank 0 (in CPU memory), names without `prefix`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(root, options=options)  # a collective: every rank calls it
    if not main:
        return None
    return {name.removeprefix(prefix): tensor for name, tensor in state.items()}
