"""`ft models [MODEL ...] [--seq N] [--image N] [--batch N] [--rows N] [--for OVERRIDES...]`.

A table to choose the model to start from: the model presets (configs/model)
and any hub id, local folder or preset name given, each with its family, the
ft tasks it has heads for, parameters, depth and width, training FLOPs per
token (or image), memory for weights + gradients + AdamW state and for one
batch's activations, its domain from the model card, and the time an epoch
would take on this machine at its measured matmul rate. Configs only: no
weights are read.

`--for +recipe=X [KEY=VALUE ...]` takes the sequence length, image size,
batch size, precision and training rows from that run spec, and profiles its
model.
"""

from __future__ import annotations

from typing import Any

from ft_cli import paths
from ft_cli.errors import FtError

USAGE = (
    "usage: ft models [MODEL ...] [--seq N] [--image N] [--batch N] [--rows N]\n"
    "       ft models --for +recipe=NAME [KEY=VALUE ...]"
)
DEFAULTS = {"--seq": 128, "--batch": 32, "--rows": 10_000}
Numbers = dict[str, int | None]  # --seq, --image, --batch, --rows as given (None: not given)


def main(args: list[str]) -> int:
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    names, numbers, spec_overrides = _parse(args)
    if spec_overrides is not None:
        names, numbers, precision = _from_spec(spec_overrides, names, numbers)
    else:
        precision = _precision()
    if not names:
        names = [name for name, _ in presets()]
    rate = _rate(precision)
    rows = [_row(name, numbers) for name in names]
    _print(rows, numbers, precision, rate)
    return 0


def _parse(args: list[str]) -> tuple[list[str], Numbers, list[str] | None]:
    names: list[str] = []
    numbers: Numbers = {"--seq": None, "--image": None, "--batch": None, "--rows": None}
    overrides: list[str] | None = None  # after --for: the run spec's overrides
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--for":
            overrides = []
            index += 1
            continue
        if arg in numbers:
            value = args[index + 1] if index + 1 < len(args) else ""
            if not value.isdigit() or int(value) < 1:
                raise FtError(f"{arg} {value or '(missing)'}: give a positive whole number")
            numbers[arg] = int(value)
            index += 2
            continue
        if arg.startswith("-"):
            raise FtError(f"unknown option {arg}; {USAGE.splitlines()[0][7:]}")
        (names if overrides is None else overrides).append(arg)
        index += 1
    return names, numbers, overrides


def presets() -> list[tuple[str, str]]:
    """(preset name, name_or_path) of each configs/model/*.yaml."""
    from omegaconf import OmegaConf

    found = []
    for path in sorted((paths.config_dir() / "model").glob("*.yaml")):
        found.append((path.stem, str(OmegaConf.load(path).get("name_or_path", ""))))
    return found


def _resolve(name: str) -> tuple[str, str]:
    """(what to show, the folder or hub id to read): a preset name, a folder or a hub id."""
    target = dict(presets()).get(name, name)
    if target.startswith(paths.PKG_PREFIX):
        target = paths.resolve_path(target, "model")
    return name, target


def _from_spec(
    overrides: list[str], names: list[str], numbers: Numbers
) -> tuple[list[str], Numbers, str]:
    """Fill the data-dependent numbers from a run spec (the user's own flags win)."""
    from ft_cli import tasks
    from ft_cli.config import compose
    from ft_cli.config.schema import DataFormat, has_validation

    compose.check_overrides(overrides)
    spec = compose.compose_spec(overrides)
    numbers = dict(numbers)
    numbers["--seq"] = numbers["--seq"] or spec.data.max_length
    numbers["--batch"] = numbers["--batch"] or spec.train.batch_size
    if numbers["--rows"] is None:
        table = tasks.get(spec.task.kind).load_raw(spec.data).splits["train"]
        count = len(table)
        own_validation = spec.data.files.validation is not None or spec.data.format in (
            DataFormat.hub,
            DataFormat.glue_tsv,
        )
        if not own_validation and has_validation(spec.data):
            count -= round(count * spec.data.validation_fraction)
        limit = spec.data.max_train_samples
        numbers["--rows"] = min(count, limit) if limit else count
    from ft_cli.models import model as loading

    shown = spec.model.name_or_path if spec.model.from_run is None else None
    names = names or [shown or loading.resolved_name(spec.model)]
    precision = spec.hardware.precision.value
    return names, numbers, precision if precision != "auto" else _precision()


def _precision() -> str:
    """The precision hardware=auto would train in here (CPU: bf16 where it is native)."""
    from ft_cli.hardware import device

    return "bf16" if device.cpu_bf16_is_faster()[0] else "fp32"


def _rate(precision: str) -> tuple[float, float]:
    """(the matmul rate here, the share of it a training step reaches), for `precision`."""
    from ft_cli.models import profile

    name = "bf16" if precision in ("bf16", "fp16") else "fp32"
    return profile.matmul_flops_per_second(name), profile.step_efficiency(name)


def _row(name: str, numbers: Numbers) -> Any:
    from ft_cli.models import profile

    shown, target = _resolve(name)
    try:
        config, note = profile.load_config(target)
    except FtError as err:
        return shown, str(err)
    seq, batch = numbers["--seq"] or DEFAULTS["--seq"], numbers["--batch"] or DEFAULTS["--batch"]
    image = numbers["--image"] or profile.processor_side(target)
    try:
        found = profile.profile(shown, config, seq, batch, image, profile.card_domain(target), note)
    except ImportError as err:  # a backbone from a package ft does not install (timm)
        first = next((line for line in str(err).splitlines() if line.strip()), "")
        return shown, f"cannot build {config.model_type}: {first.strip()}"
    except Exception as err:  # a family whose forward cannot run on the meta device
        return (
            shown,
            f"cannot profile {config.model_type} on the meta device ({type(err).__name__})",
        )
    return found, None


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def _bytes(value: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _print(rows: list[Any], numbers: Numbers, precision: str, rate: tuple[float, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    seq, batch = numbers["--seq"] or DEFAULTS["--seq"], numbers["--batch"] or DEFAULTS["--batch"]
    count = numbers["--rows"] or DEFAULTS["--rows"]
    half = precision in ("bf16", "fp16")
    peak, share = rate
    title = (
        f"models at {seq} tokens (images: their processor's size; audio: a second, or the"
        f" spectrogram its config fixes), batch {batch},"
        f" {count:,} training rows, {precision}"
    )
    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    for column in (
        "family",
        "ft tasks",
        "params",
        "w/o emb.",
        "layers x width",
        "train FLOPs",
        "weights+grads+AdamW",
        "activations",
        "domain",
        "epoch here",
    ):
        table.add_column(column, overflow="fold")
    notes = []
    for found, error in rows:
        if error is not None:
            table.add_row(found, "-", "-", "-", "-", "-", "-", "-", "-", "-", "-")
            notes.append(f"{found}: {error}")
            continue
        unit = {
            "images": f"/image ({found.input_size}px)",
            "seconds": f"/s of audio ({found.input_size:g} s clips)",
        }.get(found.unit, "/token")
        activations = found.activation_bytes / (2 if half else 1)
        name = found.name + ("*" if found.notes else "")
        table.add_row(
            name,
            found.family,
            ", ".join(found.heads) or "-",
            _size(found.params),
            _size(found.params_without_embeddings),
            f"{found.layers} x {found.width}",
            f"{_size(found.train_flops)}{unit}",
            _bytes(found.state_bytes),
            _bytes(activations),
            _short(found.domain) or "-",
            _duration(found.epoch_seconds(count, peak * share)),
        )
        notes += [f"{found.name}*: {note}" for note in found.notes]
    console = Console(highlight=False)
    console.print(table)
    console.print(
        "train FLOPs = 3 x forward (counted on the meta device); memory in fp32 for every"
        " parameter trained; activations: what one batch saves for backward"
        + (" (halved for 16-bit autocast)" if half else "")
        + f"; epoch time: FLOPs at {share:.0%} of this machine's {peak / 1e9:.0f} GFLOP/s"
        f" {precision} matmul rate, the share a small BERT's training step reached here",
        soft_wrap=True,
    )
    for note in notes:
        console.print(note, soft_wrap=True)
