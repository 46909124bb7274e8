"""Run records: the flattened config the loggers get, and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ft_cli.config.plain import plain


def flat_hparams(spec: Any) -> dict[str, float | int | str | bool]:
    """The run spec flattened to `group.key` scalars: every logger's params."""
    tree = plain(spec)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, (int, float, str, bool)):
            flat[prefix] = node
        else:
            flat[prefix] = str(node)

    walk("", tree)
    return flat


def write_metrics(run_dir: Path, record: dict[str, Any]) -> Path:
    path = run_dir / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
