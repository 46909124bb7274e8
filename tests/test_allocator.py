"""hardware/allocator.py: a large block a step frees stays with the process for the next
step instead of going back to the system (glibc maps every block above its mmap
threshold, 32 MiB at most, afresh and unmaps it when freed)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Resident memory given back by freeing a 64 MiB tensor whose pages were written, before
# and after the policy (in a fresh interpreter: the policy is process-wide).
SCRIPT = """
import os, torch
from ft_cli.hardware import allocator

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def given_back_by_a_step():
    block = torch.empty(16 * 2**20)  # 64 MiB of float32
    block.fill_(1.0)
    held = resident()
    del block
    return (held - resident()) / 2**20

mapped = given_back_by_a_step()
kept = allocator.keep_freed_memory()
given_back_by_a_step()
print(mapped, kept, given_back_by_a_step())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_freed_large_block_stays_with_the_process() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    mapped, kept, kept_back = done.stdout.split()
    assert kept == "True"  # glibc took the policy
    assert float(mapped) > 60  # unmapped at once, to be mapped and faulted in again
    assert float(kept_back) < 1


@pytest.mark.parametrize("keep", [True, False])
def test_training_asks_for_the_policy_only_when_the_key_says_so(
    tmp_path, monkeypatch, keep
) -> None:
    from conftest import run_train

    from ft_cli.hardware import allocator

    asked: list[bool] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: asked.append(True) or True)
    run_train(tmp_path, ["train.max_steps=1", f"hardware.keep_freed_memory={keep}"])
    assert asked == ([True] if keep else [])
