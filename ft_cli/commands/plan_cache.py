"""`ft explain`'s answers, remembered: a repeated explain reads one small JSON file.

Building the plan imports torch and transformers' model code (seconds) to lay
the model out on the meta device. The answer depends only on the composed
config, ft's own code, the files the run reads (the model folder, the data)
and the machine; the key is a SHA-256 of all of them, so any change to one
builds the plan afresh. Entries are plain JSON under $FT_CACHE_DIR/plans.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ft_cli import paths
from ft_cli.hardware import remembered

VERSION = "1"  # bump when the Plan's fields change
_MAX_FILES = 5000  # a data folder larger than this is fingerprinted by its first files


def key(overrides: list[str], spec: Any) -> str:
    from omegaconf import OmegaConf

    from ft_cli.config.schema import run_data

    digest = hashlib.sha256(f"{VERSION}|{remembered.machine_key()}".encode())
    for name in ("WORLD_SIZE", "CUDA_VISIBLE_DEVICES"):
        digest.update(f"|{name}={os.environ.get(name)}".encode())
    digest.update(json.dumps(overrides).encode())
    digest.update(OmegaConf.to_yaml(OmegaConf.structured(spec)).encode())
    roots = [paths.PACKAGE_DIR, *_model_files(spec)]
    for data in run_data(spec).values():
        roots += _data_files(data)
    for path in _walk(roots):
        stat = path.stat()
        digest.update(f"|{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def load(entry: str, plan_type: type) -> Any | None:
    try:
        fields = json.loads(_path(entry).read_text())
        fields["lr_at"] = {int(k): v for k, v in fields["lr_at"].items()}
        fields["origins"] = [tuple(row) for row in fields["origins"]]
        return plan_type(**fields)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged: build it again


def store(entry: str, plan: Any) -> None:
    paths.write_atomic(_path(entry), json.dumps(dataclasses.asdict(plan)))


def _path(entry: str) -> Path:
    return paths.cache_root() / "plans" / f"{entry}.json"


def _model_files(spec: Any) -> list[Path]:
    from ft_cli.models import model

    try:
        name = Path(model.resolved_name(spec.model))
    except Exception:  # an unresolvable model fails in the build, with its own message
        return []
    return [name] if name.exists() else []


def _data_files(data: Any) -> list[Path]:
    if data.path is None and not any(vars(data.files).values()):
        return []
    base = paths.resolve_path(data.path, "data.path") if data.path else None
    found = [Path(base)] if base else []
    for name in vars(data.files).values():
        if name:
            found.append(Path(paths.resolve_path(name, "data.files", base)))
    return [p for p in found if p.exists()]


def _walk(roots: list[Path]) -> Iterator[Path]:
    """Every file under `roots` (sorted, at most _MAX_FILES per root), ft's caches left out."""
    cache = paths.cache_root().resolve()
    for root in roots:
        if root.is_file():
            yield root
            continue
        found = (
            p
            for p in root.rglob("*")
            if p.is_file()
            and "__pycache__" not in p.parts
            and not p.resolve().is_relative_to(cache)
        )
        yield from sorted(itertools.islice(found, _MAX_FILES))  # a huge folder is not walked
