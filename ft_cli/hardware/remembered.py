"""Small answers ft remembers between runs: what a probe measured on this machine.

Stored as JSON under the cache root, keyed by what the answer depends on (the
CPU model and flags, the core count, torch's version), so another machine or
another torch measures afresh. A missing, damaged or read-only file only costs
a new measurement.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from ft_cli import paths

FILE = "machine.json"


def machine_key() -> str:
    """What a CPU measurement depends on, without importing torch."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and not model:
                model = value.strip()
            elif name.strip() == "flags" and not flags:
                flags = value.strip()
    except OSError:
        pass
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "?"
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{model or 'unknown cpu'}|flags {digest}|{os.cpu_count()} cores|torch {torch_version}"


def value(name: str, measure: Callable[[], float]) -> float:
    """This machine's remembered `name`, or `measure()` (then remembered)."""
    path = paths.cache_root() / FILE
    key = machine_key()
    known = _read(path)
    entry = known.get(key) if isinstance(known.get(key), dict) else {}
    if isinstance(entry.get(name), (int, float)):
        return float(entry[name])
    result = measure()
    known[key] = {**entry, name: result}
    _write(path, known)
    return result


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, known: dict) -> None:
    paths.write_atomic(path, json.dumps(known, indent=1))
