"""model/README.md: what the exported model is, how it was trained, how it scored."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Any

from ft_cli.config.schema import DataConfig, RunSpec

LIBRARIES = ("ft-cli", "torch", "transformers", "datasets", "peft", "torchmetrics")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _data_source(data: DataConfig) -> str:
    if data.hub_path:
        return f"hub `{data.hub_path}`" + (f" / `{data.hub_name}`" if data.hub_name else "")
    files = [f"{s}: `{getattr(data.files, s)}`" for s in ("train", "validation", "test")]
    files = [f for f in files if not f.endswith("`None`")]
    where = f" in `{data.path}`" if data.path else ""
    return f"{data.format.value} files{where} ({', '.join(files)})"


def _data_line(data: DataConfig, kind: str) -> str:
    from ft_cli import tasks

    return f"{_data_source(data)}, {tasks.modality(kind).describe(data)}"


def _task_lines(spec: RunSpec, record: dict[str, Any]) -> list[str]:
    """What the model was trained on: the task and its data (multitask: each task's)."""
    weights = record.get("class_weights") or {}
    labels = record.get("labels")
    from ft_cli import tasks

    if tasks.info(spec.task.kind).targets != "tasks":
        return [
            f"- **Data:** {_data_line(spec.data, spec.task.kind)}",
            f"- **Task:** {spec.task.kind}" + (f", labels {labels}" if labels else "")
            + (f", class weights {weights}" if weights else ""),
        ]
    lines = [f"- **Tasks:** {len(spec.task.tasks)} on one encoder, mixing {spec.task.mixing.value}"
             + " (`model/NAME` each; `model/encoder` the shared encoder)"]
    for name, sub in spec.task.tasks.items():
        own = (labels or {}).get(name)
        lines.append(
            f"  - **{name}:** {sub.kind}, loss weight {sub.weight:g}"
            + (f", labels {own}" if own else "")
            + (f", class weights {weights[name]}" if weights.get(name) else "")
            + f"; {_data_line(sub.data, sub.kind)}"
        )
    return lines


def _metrics_table(title: str, values: dict[str, float]) -> list[str]:
    rows = [f"| {k} | {v:.4f} |" for k, v in values.items() if isinstance(v, (int, float))]
    return [f"### {title}", "", "| metric | value |", "| --- | --- |", *rows, ""] if rows else []


def render(spec: RunSpec, record: dict[str, Any], command: str) -> str:
    base = spec.model.from_run or spec.model.name_or_path
    opt, plan = spec.optimizer, spec.strategy
    from ft_cli import tasks

    pipeline = tasks.get(spec.task.kind).pipeline_tag
    lines = [
        "---",
        "library_name: transformers",
        *([f"pipeline_tag: {pipeline}"] if pipeline else []),
        "tags: [ft]",
        "---",
        "",
        f"# {spec.task.kind} model trained with ft",
        "",
        f"- **Base model:** `{base}` ({spec.model.init.value})",
        *_task_lines(spec, record),
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
