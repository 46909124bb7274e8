"""LoRA adapters through peft; the export merges them into a plain transformers model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ft_cli.config.schema import LoraSettings
from ft_cli.errors import FtError
from ft_cli.strategies.base import Strategy


def head_modules(model: nn.Module) -> list[str]:
    """Names of the task-head modules, which train fully next to the adapters: a model's
    children besides its backbone, but not its token tables (a language model's output
    layer, an encoder-decoder's encoder, decoder and shared table hold them)."""
    if hasattr(model, "task_models"):  # several task models on one encoder: every head
        return sorted({name for net in model.task_models() for name in head_modules(net)})
    prefix = getattr(model, "base_model_prefix", "")
    tables = {id(p) for p in _token_tables(model)}
    names = [
        name
        for name, child in model.named_children()
        if name != prefix
        and any(True for _ in child.parameters())
        and not tables & {id(p) for p in child.parameters()}
    ]
    backbone = getattr(model, prefix, None)
    if backbone is not None and getattr(backbone, "pooler", None) is not None:
        names.append("pooler")
    return names


def _token_tables(model: nn.Module) -> list[nn.Parameter]:
    """The input and output token tables' parameters (none where the model has none)."""
    found = []
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(model, getter)()
        except (AttributeError, NotImplementedError):
            module = None
        if isinstance(module, nn.Module):
            found += list(module.parameters())
    return found


def apply_lora(model: nn.Module, cfg: LoraSettings) -> Any:
    """Wrap `model` in a peft model: base weights frozen, adapters and head trainable."""
    from peft import LoraConfig, get_peft_model

    if cfg.r < 1:
        raise FtError(f"strategy.lora.r={cfg.r} must be at least 1")
    targets = target_modules(model, cfg)
    config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        modules_to_save=head_modules(model),
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        from transformers.pytorch_utils import Conv1D

        takes = (nn.Linear, Conv1D)  # GPT-2's projections are transformers' Conv1D
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, takes)}
        )
        raise FtError(
            f"strategy.lora.target_modules={targets} matches no layer that can"
            f" take an adapter; linear layers of this model: {', '.join(linear)}"
        ) from err


def target_modules(model: nn.Module, cfg: LoraSettings) -> list[str]:
    """The layers given, or the model family's attention projections as peft lists them."""
    if cfg.target_modules:
        return list(cfg.target_modules)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    inner = model.task_models()[0] if hasattr(model, "task_models") else model
    family = getattr(getattr(inner, "config", None), "model_type", None)
    return list(
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(family) or ["query", "value"]
    )


def merged(model: Any, adapter_dir: Path | None) -> nn.Module:
    """The plain model with the adapters merged in; saves the adapter first if asked."""
    if adapter_dir is not None:
        model.save_pretrained(adapter_dir)
    return model.merge_and_unload()


class LoRA(Strategy):
    """strategy=lora: adapters on the chosen linear layers; the export merges them."""

    wraps_model = True
    partial_checkpoints = True
    fsdp_refusal = "its adapters are merged into a full model at the end"

    def wrap(self, net: nn.Module) -> nn.Module:
        return apply_lora(net, self.cfg.lora)

    def export(self, net: nn.Module, run_dir: Path, main: bool) -> nn.Module:
        keep = self.cfg.lora.keep_adapter and main
        return merged(net, run_dir / "adapter" if keep else None)


STRATEGY = LoRA
