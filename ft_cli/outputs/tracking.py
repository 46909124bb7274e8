"""Run records: TensorBoard scalars and hyperparameters, and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def flat_hparams(spec: Any) -> dict[str, float | int | str | bool]:
    """The run spec flattened to `group.key` scalars for TensorBoard's HPARAMS tab."""
    tree = OmegaConf.to_container(OmegaConf.structured(spec), resolve=True, enum_to_str=True)
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


class Tracker:
    """Writes TensorBoard event files under `run_dir/tensorboard`."""

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        """`purge_step`: a resumed run drops the events logged after its checkpoint."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text)

    def hparams(self, hparams: dict[str, Any], results: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metric_tags = {f"hparam/{k}": v for k, v in results.items()}
        experiment, session_start, session_end = hparams_summary(hparams, metric_tags)
        file_writer = self.writer.file_writer
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)
        for tag, value in metric_tags.items():
            self.writer.add_scalar(tag, value)

    def close(self) -> None:
        self.writer.close()


class NoTracker(Tracker):
    """What data-parallel ranks other than rank 0 track: nothing."""

    def __init__(self) -> None:
        pass

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        pass

    def text(self, tag: str, text: str) -> None:
        pass

    def hparams(self, hparams: dict[str, Any], results: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def write_metrics(run_dir: Path, record: dict[str, Any]) -> Path:
    path = run_dir / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
