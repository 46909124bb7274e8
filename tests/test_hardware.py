"""Device and precision choice: auto picks bf16 on CPU only where it is native and faster."""

from __future__ import annotations

import pytest
import torch

from ft_cli.config.schema import Device, HardwareConfig, Precision
from ft_cli.errors import FtError
from ft_cli.hardware import device as hardware
from ft_cli.hardware import remembered


def fake_cpu(monkeypatch, native: bool, fp32_s: float = 1.0, bf16_s: float = 1.0) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    seconds = {torch.float32: fp32_s, torch.bfloat16: bf16_s}
    monkeypatch.setattr(hardware, "_matmul_seconds", lambda dtype: seconds[dtype])
    monkeypatch.setattr(remembered, "value", lambda name, measure: measure())  # no cache


@pytest.mark.parametrize(
    ("native", "bf16_s", "expected", "why"),
    [
        (False, 0.1, Precision.fp32, "no native bf16"),
        (True, 0.3, Precision.bf16, "3.3x faster"),
        (True, 0.95, Precision.fp32, "not faster"),
    ],
)
def test_auto_precision_on_cpu(monkeypatch, native, bf16_s, expected, why) -> None:
    fake_cpu(monkeypatch, native, bf16_s=bf16_s)
    hw = hardware.setup_hardware(HardwareConfig(device=Device.auto, precision=Precision.auto))
    assert hw.device.type == "cpu"
    assert hw.precision == expected
    assert why in hw.reason
    assert not hw.scaler.is_enabled()


def test_explicit_precision_is_kept(monkeypatch) -> None:
    fake_cpu(monkeypatch, native=False)
    hw = hardware.setup_hardware(HardwareConfig(precision=Precision.bf16))
    assert hw.precision == Precision.bf16
    with hw.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_cuda_requested_without_a_gpu(monkeypatch) -> None:
    fake_cpu(monkeypatch, native=False)
    with pytest.raises(FtError, match=r"^hardware.device=cuda but no CUDA GPU is visible"):
        hardware.setup_hardware(HardwareConfig(device=Device.cuda))


def test_probe_measures_real_matmuls() -> None:
    assert 0 < hardware._matmul_seconds(torch.float32, (64, 64, 64)) < 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_on_cuda_uses_a_grad_scaler() -> None:
    hw = hardware.setup_hardware(HardwareConfig(device=Device.cuda, precision=Precision.fp16))
    assert hw.scaler.is_enabled()


def test_the_probe_is_measured_once_per_machine(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path))
    calls = []

    def measure() -> float:
        calls.append(1)
        return 2.5

    assert remembered.value("speedup", measure) == 2.5
    assert remembered.value("speedup", lambda: 9.0) == 2.5  # remembered, not measured
    assert len(calls) == 1
    monkeypatch.setattr(remembered, "machine_key", lambda: "another cpu|torch 9")
    assert remembered.value("speedup", lambda: 1.1) == 1.1  # another machine measures
    (tmp_path / remembered.FILE).write_text("{not json")
    assert remembered.value("speedup", lambda: 3.0) == 3.0  # a damaged file is rewritten
    assert remembered.value("speedup", lambda: 4.0) == 3.0


def test_the_machine_key_names_the_cpu_and_torch() -> None:
    key = remembered.machine_key()
    assert f"torch {torch.__version__}" in key and "cores" in key
