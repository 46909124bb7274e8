"""The seam between the loop and the hardware: device, autocast, grad scaler.

Set up once before the loop so that the loop itself has no precision branches.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch

from ft_cli.config.schema import Device, HardwareConfig, Precision
from ft_cli.errors import FtError
from ft_cli.hardware import remembered

_DTYPES = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


@dataclass
class StepOutcome:
    """What one optimizer step did."""

    grad_norm: torch.Tensor  # before clipping
    nonfinite: bool = False  # not taken: the gradients were not finite
    skipped: bool = False  # not taken, for that or because fp16's scaler found inf/nan


@dataclass
class Hardware:
    device: torch.device
    precision: Precision
    reason: str  # why this device/precision, for the console and run summary
    scaler: torch.amp.GradScaler

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == Precision.fp32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def backward(self, loss: torch.Tensor) -> None:
        """Backward through the loss scaler (a no-op scaler outside fp16)."""
        self.scaler.scale(loss).backward()

    def optimizer_step(
        self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], max_norm: float
    ) -> StepOutcome:
        """Unscale, clip, check, step, update the scaler and clear the gradients.

        Without a scaler, non-finite gradients skip the step here (one scalar
        sync per step); fp16's GradScaler makes that check itself and skips the
        step by lowering its scale.
        """
        self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: sharded
        if not self.scaler.is_enabled() and not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)
            return StepOutcome(norm, nonfinite=True, skipped=True)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        skipped = scale is not None and self.scaler.get_scale() < scale
        return StepOutcome(norm, skipped=skipped)


def cpu_bf16_is_faster() -> tuple[bool, str]:
    """Whether bf16 matmuls beat fp32 on this CPU, and why: native support, then a probe.

    Without native bf16 (AVX512-BF16 or AMX) torch emulates it, several times
    slower than fp32; with it, a short timed probe decides.
    """
    native = (
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )
    if not native:
        return False, "no native bf16 on this CPU"
    # Measured once per machine (CPU model, flags, torch version), then remembered.
    speedup = remembered.value("bf16_matmul_speedup", _bf16_speedup)
    if speedup > 1.25:
        return True, f"bf16 matmul {speedup:.1f}x faster than fp32 here"
    return False, f"bf16 matmul not faster than fp32 here ({speedup:.1f}x)"


def _bf16_speedup() -> float:
    return _matmul_seconds(torch.float32) / _matmul_seconds(torch.bfloat16)


def _matmul_seconds(dtype: torch.dtype, size: tuple[int, int, int] = (1024, 384, 1536)) -> float:
    a = torch.randn(size[0], size[1], dtype=dtype)
    b = torch.randn(size[1], size[2], dtype=dtype)
    a @ b  # warm-up: first calls pick and JIT kernels
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def setup_hardware(cfg: HardwareConfig, gpu_index: int = 0, decided: Any = None) -> Hardware:
    """Device, precision and scaler; `decided`: (precision, reason) another rank chose."""
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    cuda = torch.cuda.is_available()
    if cfg.device == Device.cuda and not cuda:
        raise FtError("hardware.device=cuda but no CUDA GPU is visible; use hardware=cpu or auto")
    use_cuda = cfg.device != Device.cpu and cuda
    device = torch.device("cuda", gpu_index) if use_cuda else torch.device("cpu")
    precision, reason = cfg.precision, f"hardware.precision={cfg.precision.value}"
    if decided is not None:
        precision, reason = decided
    elif precision == Precision.auto:
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
            precision = Precision.bf16 if native else Precision.fp16
            reason = "auto: bf16 on this GPU" if native else "auto: fp16 (no native bf16 on GPU)"
        else:
            faster, why = cpu_bf16_is_faster()
            precision = Precision.bf16 if faster else Precision.fp32
            reason = f"auto: {precision.value}, {why}"
    if precision == Precision.fp16 and device.type != "cuda":
        raise FtError(
            "hardware.precision=fp16 needs a CUDA GPU (none in use); use hardware.precision=bf16"
            " or fp32 on CPU"
        )
    # A GradScaler only for fp16: bf16 has fp32's range and needs no loss scaling.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == Precision.fp16)
    return Hardware(device, precision, reason, scaler)
