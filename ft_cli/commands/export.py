"""`ft export RUN [--format onnx] [--quantize int8] [--output DIR] [--overwrite] [--task NAME]
[--opset N]`.

Writes RUN/onnx/ (RUN/onnx-step-N for a checkpoint, or DIR): the ONNX graph, an
int8 copy when asked, the tokenizer or image processor, the model's config
(label map) and onnx.json (opset, inputs, the weights it was made from, every
file's hash, and how each variant agreed with torch on the validation split).
A folder that holds anything but an earlier export is never written to; an
earlier export is replaced only with --overwrite. See `ft_cli.deploy`.
"""

from __future__ import annotations

from pathlib import Path

from ft_cli.commands.arguments import parse_many
from ft_cli.errors import FtError

USAGE = (
    "usage: ft export RUN_OR_MODEL_DIR [--format onnx] [--quantize int8] [--output DIR]"
    " [--overwrite] [--task NAME] [--opset N] [KEY=VALUE ...]"
)


def main(args: list[str]) -> int:
    flags = {
        "--format": "onnx",
        "--quantize": "int8",
        "--output": "the folder to write (new, empty, or an earlier export)",
        "--task": "a task of a multi-task run",
        "--opset": "an ONNX opset (18)",
    }
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    folders, given, overrides = parse_many(args, flags, ("--overwrite",))
    if len(folders) != 1:
        raise FtError(
            f"export one model: give one run dir, model folder or checkpoint, not {len(folders)}"
        )
    if given.get("--format", "onnx") != "onnx":
        raise FtError(f"--format {given['--format']}: the one export format is onnx")
    quantize = given.get("--quantize")
    if quantize not in (None, "int8"):
        raise FtError(f"--quantize {quantize}: the one quantization is int8")
    opset = given.get("--opset", "18")
    if not opset.isdigit() or not 14 <= int(opset) <= 23:
        raise FtError(f"--opset {opset}: give an ONNX opset from 14 to 23")
    from ft_cli import tasks
    from ft_cli.deploy import export_folder, onnx_export
    from ft_cli.models import trained
    from ft_cli.training import evaluating

    onnx_export.require_onnx()
    found = trained.locate(folders[0], given.get("--task"))
    spec = trained.spec_for(found, overrides)
    kind = tasks.get(spec.task.kind)
    if not kind.exportable:
        exportable = [name for name in tasks.TASKS if tasks.get(name).exportable]
        raise FtError(
            f"task={spec.task.kind} is not exported ({kind.not_exported});"
            f" exportable: {', '.join(exportable)}"
        )
    target = Path(given.get("--output") or onnx_export.default_folder(found))
    if not target.resolve().parent.is_dir():
        raise FtError(f"--output {target}: folder '{target.parent}' does not exist")
    replace = export_folder.check_target(target, "--overwrite" in given)
    for stale in export_folder.clean_stale_staging(target.resolve().parent, target.name):
        print(f"removed {stale}: the staging folder of an export that was interrupted")
    # Checked in fp32 on the CPU: the graph is compared with the model as saved.
    ready = evaluating.setup(
        folders[0],
        [*overrides, "hardware.device=cpu", "hardware.precision=fp32"],
        task=given.get("--task"),
    )
    try:
        record = onnx_export.export(ready, target, quantize == "int8", int(opset), replace)
    except OSError as err:
        raise FtError(
            f"cannot write the export to {target} ({err.strerror}); nothing was written"
        ) from err
    _print(record, target)
    return 0


def _print(record: dict, target: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    checks = record["checks"]
    metrics = list(checks["torch"]["metrics"])
    table = Table(title=f"ONNX export checked on {record['checked_rows']} validation rows")
    for column in ("variant", "file", "max |logit - torch|", *metrics):
        table.add_column(column)
    files = {
        "torch": "-",
        "onnx fp32": record["files"]["fp32"],
        "onnx int8": record["files"].get("int8", "-"),
    }
    for name, found in checks.items():
        diff = "-" if name == "torch" else f"{found['max_diff']:.2e}"
        size = "-"
        if name != "torch":
            size = f"{files[name]} ({(target / files[name]).stat().st_size / 2**20:.1f} MiB)"
        table.add_row(name, size, diff, *(f"{found['metrics'][m]:.4f}" for m in metrics))
    Console(highlight=False).print(table)
    print(f"written: {target}")
