"""`ft explain [OVERRIDES]`: what `ft train` with these overrides would do, without training.

The composed config (each value that differs from the schema default, with
where it came from), the parameters each layer group trains after the
strategy, the optimizer groups and their peak learning rates, the batch and
step counts, the learning-rate schedule as a text plot, the device and
precision with the reason, and a rough peak memory per step. The model is
built on PyTorch's meta device from its config: no weights are read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ft_cli import tasks
from ft_cli.errors import FtError

PLOT_WIDTH, PLOT_HEIGHT = 60, 8


@dataclass
class Plan:
    origins: list[tuple[str, str, str]]  # key, value, where it came from
    strategy: dict[str, Any]  # strategy_report's record
    processes: int
    batch_size: int
    grad_accum: int
    train_rows: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    lr_at: dict[int, float]  # step -> lr of the first optimizer group after that step
    schedule: list[float] = field(repr=False, default_factory=list)  # the multiplier per step
    device: str = ""
    precision: str = ""
    reason: str = ""
    memory: dict[str, float] = field(default_factory=dict)  # MiB by part
    tasks: list[list[str]] = field(default_factory=list)  # multitask: a row per task
    augmented: list[list[str]] = field(default_factory=list)  # what augmentation does, shown
    long_inputs: list[list[str]] = field(default_factory=list)  # truncation and windows, shown
    data_check: list[str] = field(default_factory=list)  # ft train's data check, a line each

    @property
    def effective_batch(self) -> int:
        return self.processes * self.batch_size * self.grad_accum


def main(args: list[str]) -> int:
    if args and args[0] in ("-h", "--help"):
        print(
            "usage: ft explain [--fresh] [OVERRIDES]   (the overrides of ft train,"
            " +recipe=NAME too; --fresh: build the plan even if an unchanged one is remembered)"
        )
        return 0
    fresh = "--fresh" in args
    overrides = [a for a in args if a != "--fresh"]
    folders = [a for a in overrides if Path(a).is_dir()]
    if folders:
        raise FtError(
            f"'{folders[0]}' is a folder: ft explain takes the overrides of ft train (ft explain"
            " +recipe=demo optimizer.lr=3e-5), not a run dir; ft eval and ft report read a"
            f" finished run, whose config is {Path(folders[0]) / 'config.yaml'}"
        )
    show(remembered_plan(overrides, fresh))
    return 0


def _data_check_lines(spec: Any) -> list[str]:
    """What ft train's data check will say (nothing when data.checks=off)."""
    from ft_cli.checks import run

    found = run.before_training(spec)
    return [] if found is None else found.lines()


def remembered_plan(overrides: list[str], fresh: bool = False) -> Plan:
    """`plan(overrides)`, read back when nothing it depends on has changed since."""
    from ft_cli.commands import plan_cache
    from ft_cli.config import compose

    compose.check_overrides(overrides)
    entry = plan_cache.key(overrides, compose.compose_spec(overrides))
    found = None if fresh else plan_cache.load(entry, Plan)
    if found is None:
        found = plan(overrides)
        plan_cache.store(entry, found)
    return found


def plan(overrides: list[str]) -> Plan:
    """What `ft train OVERRIDES` would do, from the same setup call training makes."""
    from ft_cli.config import compose
    from ft_cli.hardware import distributed, parallel
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.strategies import report as strategy_report
    from ft_cli.training import optim, setup

    compose.check_overrides(overrides)
    spec = compose.compose_spec(overrides)
    origins = value_origins(overrides)
    # WORLD_SIZE=N plans for N data-parallel processes (rank 0's share of the data).
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    place = distributed.Dist(rank=0, world=processes)
    hw = setup_hardware(spec.hardware)
    ready = setup.build(spec, setup.Purpose.explain, parallel.Backend(place), hw, place)
    steps = ready.steps
    assert steps is not None and ready.unfreeze_at is not None
    record = strategy_report.strategy_record(
        spec.strategy.kind.value, ready.net, ready.optimizer, ready.applied, ready.unfreeze_at
    )
    total = steps.total_steps
    factor = optim.lr_factor(spec.schedule, total, ready.unfreeze_at, spec.strategy.rewarm_steps)
    schedule = [factor(step) for step in range(total + 1)]
    groups = ready.optimizer.param_groups
    peak = groups[0].get("initial_lr", groups[0]["lr"]) if groups else spec.optimizer.lr
    chosen = sorted({1, optim.warmup_steps(spec.schedule, total), total // 2, total} - {0})
    net = getattr(ready.net, "encoder", ready.net)  # multitask: the shared encoder's config
    config = getattr(net, "config", None)
    t = spec.train
    return Plan(
        origins=origins,
        strategy=record,
        processes=processes,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        train_rows=len(ready.prepared.train),
        steps_per_epoch=steps.steps_per_epoch,
        total_steps=total,
        epochs=steps.epochs,
        lr_at={step: peak * schedule[step] for step in chosen},
        schedule=schedule,
        device=hw.device.type,
        precision=hw.precision.value,
        reason=hw.reason,
        memory=memory_estimate(spec, config, record, ready, hw.precision.value),
        tasks=task_rows(spec, ready),
        augmented=augment_rows(spec, ready, config),
        long_inputs=tasks.get(spec.task.kind).long_input_rows(spec.data, ready.tokenizer),
        data_check=_data_check_lines(spec),
    )


def augment_rows(spec: Any, ready: Any, config: Any) -> list[list[str]]:
    """A training row as collated and as augmented in epoch 0; what the model-level ones do."""
    aug = spec.augment
    rows: list[list[str]] = []
    train = ready.prepared.train
    if not aug.active() or len(train) == 0:
        return rows
    lengths = train.lengths()
    row = next((i for i, n in enumerate(lengths) if n >= 12), 0)
    if aug.token_level():
        from ft_cli.augment import tokens

        original, changed = tokens.preview(ready.collate, row, ready.tokenizer)
        rows += [[f"train row {row}", original], ["augmented, epoch 0", changed]]
    hidden = getattr(config, "hidden_size", None)
    if aug.embedding_noise and hidden:
        words = lengths[row] - 2  # the row's tokens less [CLS] and [SEP]
        bound = aug.embedding_noise / math.sqrt(max(words, 1) * hidden)
        rows.append(
            [
                "embedding noise",
                f"uniform in +-{aug.embedding_noise:g}/sqrt({words} tokens"
                f" x {hidden}) = +-{bound:.4f} on this row's input embeddings",
            ]
        )
    if aug.mixup:
        rows.append(
            [
                "mixup",
                f"classifier input and labels mixed with a shuffled partner row,"
                f" weight ~ Beta({aug.mixup:g}, {aug.mixup:g})",
            ]
        )
    return rows


def task_rows(spec: Any, ready: Any) -> list[list[str]]:
    """Multitask: each task's kind, data, loss weight and share of the batches of an epoch."""
    counts = getattr(ready.sampler, "counts", None)
    if tasks.info(spec.task.kind).targets != "tasks" or counts is None:
        return []
    train, validation = ready.prepared.train, ready.prepared.validation
    held = validation.sizes() if validation is not None else {}
    total = sum(counts)
    rows = []
    for (name, sub), count in zip(spec.task.tasks.items(), counts, strict=True):
        rows.append(
            [
                name,
                sub.kind,
                f"{train.sizes()[name]:,}",
                f"{held.get(name, 0):,}",
                f"{count} ({count / total:.1%})",
                f"{sub.weight:g}",
            ]
        )
    return rows


def value_origins(overrides: list[str]) -> list[tuple[str, str, str]]:
    """Every value that differs from the schema default, and where it was set.

    Composes the config three times, adding one source each time: the group
    options (configs/GROUP/OPTION.yaml), then the recipe, then the rest of the
    command line; a value belongs to the last source that changed it.
    """
    from omegaconf import OmegaConf

    from ft_cli.config import compose, schema

    recipe = [o for o in overrides if o.lstrip("+").startswith(f"{compose.RECIPE_GROUP}=")]
    rest = [o for o in overrides if o not in recipe]
    stages = [("schema default", None), ("group file", []), ("recipe", recipe)]
    stages.append(("command line", [*recipe, *rest]))
    flat_stages = []
    for _, given in stages:
        if given is None:
            tree = OmegaConf.structured(schema.RunSpec)
            choices: dict[str, str] = {}
        else:
            tree, choices = compose.compose_with_choices(given)
        flat_stages.append((_flatten(OmegaConf.to_container(tree, enum_to_str=True)), choices))
    rows = []
    final, final_choices = flat_stages[-1]
    final_choices = {**_listed_choices(overrides), **final_choices}
    for key, value in final.items():
        where = None
        for index in range(1, len(stages)):
            before = flat_stages[index - 1][0].get(key, "<unset>")
            if flat_stages[index][0].get(key, "<unset>") != before:
                where = index
        if where is None:
            continue
        group = key.split(".")[0]
        source = stages[where][0]
        if source == "group file" or (
            source != "recipe" and group in final_choices and not _set_directly(key, rest)
        ):
            source = _option_file(key, final_choices.get(group))
        elif source == "recipe":
            name = recipe[-1].split("=", 1)[1]
            source = f"recipe {name}"
            if key not in _recipe_keys(name) and group in final_choices:
                source = f"{_option_file(key, final_choices[group])} (chosen by recipe {name})"
        rows.append((key, str(value), source))
    return rows


def _listed_choices(overrides: list[str]) -> dict[str, list[str]]:
    """Groups given several options (`logger=[tensorboard,mlflow]`), which Hydra does not
    record among its choices."""
    from ft_cli.config import schema

    found = {}
    for override in overrides:
        group, _, value = override.lstrip("+").partition("=")
        if group in schema.GROUPS and value.startswith("["):
            found[group] = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return found


def _option_file(key: str, choice: str | list[str] | None) -> str:
    """The option file that set `key`; of several options, the one named like the key's
    section (`logger.mlflow.enabled`: configs/logger/mlflow.yaml)."""
    group, _, rest = key.partition(".")
    if isinstance(choice, list):
        section = rest.split(".")[0]
        choice = section if section in choice else choice[-1]
    return f"configs/{group}/{choice}.yaml"


def _recipe_keys(name: str) -> set[str]:
    """The dotted keys a recipe file sets itself (not through its group choices)."""
    from omegaconf import OmegaConf

    from ft_cli.config import compose

    path = next(p for p in compose.recipe_files() if p.stem == name)
    return set(_flatten(OmegaConf.to_container(OmegaConf.load(path))))


def _set_directly(key: str, given: list[str]) -> bool:
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in given)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: node}


def memory_estimate(
    spec: Any, config: Any, record: dict[str, Any], ready: Any, precision: str
) -> dict[str, float]:
    """Rough peak memory of one training step, in MiB, by part.

    Weights stay fp32 under autocast (4 bytes each); gradients of the trainable
    ones (4); Adam(W) keeps two moments (8), SGD with momentum one (4).
    Activations kept for the backward pass follow the usual transformer-layer
    estimate: batch x sequence x hidden x (34 + 5 x heads x sequence / hidden)
    bytes per layer in 16-bit, twice that in fp32, over the layers gradients
    flow through; the sequence is the longest tokenized row. Other inputs (images)
    may count what a forward pass of one batch saves, on the meta device.
    """
    mib = 1024 * 1024
    total = sum(g["trainable"] + g["frozen"] for g in record["groups"])
    trainable = sum(g["trainable"] for g in record["groups"])
    name = spec.optimizer.name.value
    per_param = 8 if name in ("adam", "adamw") else (4 if spec.optimizer.momentum else 0)
    hidden = getattr(config, "hidden_size", 0)
    heads = getattr(config, "num_attention_heads", 1)
    width = 2 if precision in ("bf16", "fp16") else 4
    train = ready.prepared.train
    measured = tasks.modality(spec.task.kind).activation_bytes(ready, spec.train.batch_size)
    if measured is None:
        seq = max((len(row) for row in train.input_ids), default=0)
        layers = [g for g in record["groups"] if g["group"].startswith("layer.")]
        trains = any(g["trainable"] for g in record["groups"] if g["group"] == "embeddings")
        first = next((i for i, g in enumerate(layers) if g["trainable"]), len(layers))
        active = len(layers) if trains else len(layers) - first
        per_layer = spec.train.batch_size * seq * hidden * (34 + 5 * heads * seq / max(hidden, 1))
        activations = per_layer * active * width / 2
    else:
        activations = measured * width / 4
    parts = {
        "weights": total * 4 / mib,
        "gradients": trainable * 4 / mib,
        "optimizer state": trainable * per_param / mib,
        "activations": activations / mib,
    }
    parts["total"] = sum(parts.values())
    return parts


def text_plot(values: list[float], peak: float) -> list[str]:
    """A small line plot of the lr multiplier over the steps (peak lr at the top)."""
    if not values:
        return []
    columns = [values[round(c * (len(values) - 1) / (PLOT_WIDTH - 1))] for c in range(PLOT_WIDTH)]
    top = max(max(columns), 1e-12)
    lines = []
    for row in range(PLOT_HEIGHT, 0, -1):
        low, high = (row - 1) / PLOT_HEIGHT, row / PLOT_HEIGHT
        marks = "".join(
            "*" if low < v / top <= high or (row == 1 and v == 0) else " " for v in columns
        )
        label = "          |"
        if row == PLOT_HEIGHT:
            label = f"{peak * top:9.2e} |"
        elif row == 1:
            label = f"{0:9.2g} |"
        lines.append(label + marks)
    lines.append("          +" + "-" * PLOT_WIDTH)
    steps = f"step 0{' ' * (PLOT_WIDTH - 8 - len(str(len(values) - 1)))}{len(values) - 1}"
    lines.append("           " + steps)
    return lines


def show(p: Plan) -> None:
    from rich.console import Console

    from ft_cli.outputs.console import RunConsole
    from ft_cli.strategies import report as strategy_report

    ui = RunConsole(Console(highlight=False))
    ui.table(
        "config: values that differ from the schema default",
        ["key", "value", "set by"],
        [list(row) for row in p.origins],
    )
    ui.table(
        f"strategy {p.strategy['kind']}",
        ["layer group", "trainable", "frozen", "lr"],
        strategy_report.table_rows(p.strategy),
    )
    ui.table(
        "optimizer groups",
        ["group", "parameters", "peak lr", "weight decay"],
        [
            [g["name"], f"{g['parameters']:,}", f"{g['lr']:.2e}", f"{g['weight_decay']:g}"]
            for g in p.strategy["optimizer_groups"]
        ],
    )
    ui.table(
        "steps",
        ["what", "value"],
        [
            ["train rows", f"{p.train_rows:,}"],
            [
                "effective batch",
                f"{p.effective_batch} = {p.processes} process(es) x batch"
                f" {p.batch_size} x grad_accum {p.grad_accum}",
            ],
            ["steps per epoch", str(p.steps_per_epoch)],
            ["total steps", f"{p.total_steps} ({p.epochs} epoch(s))"],
            *[[f"lr after step {s}", f"{lr:.3e}"] for s, lr in p.lr_at.items()],
            ["device, precision", f"{p.device} {p.precision} ({p.reason})"],
        ],
    )
    if p.tasks:
        ui.table(
            "tasks (each batch comes from one)",
            ["task", "kind", "train", "validation", "batches/epoch", "weight"],
            p.tasks,
        )
    if p.long_inputs:
        ui.table("inputs and their length (the train split)", ["what", "found"], p.long_inputs)
    if p.data_check:
        ui.table(
            "data check (ft data check: near duplicates too)",
            ["finding"],
            [[line] for line in p.data_check],
        )
    if p.augmented:
        ui.table("augmentation (training batches only)", ["what", "tokens"], p.augmented)
    peak = p.strategy["optimizer_groups"][0]["lr"] if p.strategy["optimizer_groups"] else 0.0
    ui.info("learning rate over the steps (first optimizer group):")
    for line in text_plot(p.schedule, peak):
        ui.info(line)
    ui.table(
        "memory per step (rough estimate)",
        ["part", "MiB"],
        [[k, f"{v:,.0f}"] for k, v in p.memory.items()],
    )
