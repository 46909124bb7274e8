"""model/README.md: what the exported model is, how it was trained, how it scored."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Any

from ft_cli.config.schema import RunSpec

LIBRARIES = ("ft-cli", "torch", "transformers", "datasets", "peft", "torchmetrics")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _data_source(spec: RunSpec) -> str:
    data = spec.data
    if data.hub_path:
        return f"hub `{data.hub_path}`" + (f" / `{data.hub_name}`" if data.hub_name else "")
    files = [f"{s}: `{getattr(data.files, s)}`" for s in ("train", "validation", "test")]
    files = [f for f in files if not f.endswith("`None`")]
    where = f" in `{data.path}`" if data.path else ""
    return f"{data.format.value} files{where} ({', '.join(files)})"


def _metrics_table(title: str, values: dict[str, float]) -> list[str]:
    rows = [f"| {k} | {v:.4f} |" for k, v in values.items() if isinstance(v, (int, float))]
    return [f"### {title}", "", "| metric | value |", "| --- | --- |", *rows, ""] if rows else []


def render(spec: RunSpec, record: dict[str, Any], command: str) -> str:
    base = spec.model.from_run or spec.model.name_or_path
    opt, plan = spec.optimizer, spec.strategy
    lines = [
        "---",
        "library_name: transformers",
        "tags: [ft]",
        "---",
        "",
        f"# {spec.task.kind.value} model trained with ft",
        "",
        f"- **Base model:** `{base}` ({spec.model.init.value})",
        f"- **Data:** {_data_source(spec)}, text column `{spec.data.text_column}`"
        + (f" + `{spec.data.text_pair_column}`" if spec.data.text_pair_column else "")
        + f", max_length {spec.data.max_length}",
        f"- **Task:** {spec.task.kind.value}"
        + (f", labels {record['labels']}" if record.get("labels") else ""),
        f"- **Strategy:** {plan.kind.value}",
        f"- **Training:** {record['steps']} steps ({record['epochs']} epochs), batch"
        f" {spec.train.batch_size} x {spec.train.grad_accum} accumulation, {opt.name.value}"
        f" lr {opt.lr:g}, weight decay {opt.weight_decay:g}, {spec.schedule.name.value} schedule,"
        f" seed {spec.train.seed}, {record['precision']} on {record['device']}",
        f"- **Weights:** {record['exported_from']}; monitored metric"
        f" {record['monitor']['metric']} ({record['monitor']['mode']})",
        "",
        "## Evaluation",
        "",
        *_metrics_table(
            "Best (exported)", {k: v for k, v in record["best"].items() if k != "step"}
        ),
        *_metrics_table("Final", record["final"]),
        *_metrics_table("Test", record["test"]),
        "## Reproduce",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Libraries",
        "",
        f"Python {platform.python_version()}; "
        + ", ".join(f"{name} {_version(name)}" for name in LIBRARIES),
        "",
    ]
    return "\n".join(lines)


def write(export_dir: Path, spec: RunSpec, record: dict[str, Any], overrides: list[str]) -> Path:
    command = " ".join(["ft train", *overrides]) if overrides else "ft train"
    path = export_dir / "README.md"
    path.write_text(render(spec, record, command))
    return path
