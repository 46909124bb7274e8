"""A trained model to use: find its run, the spec it was trained with, and its weights.

`ft eval` and `ft predict` take a run dir, its `model/` export, a checkpoint
(`checkpoints/step-N`) or any exported model folder. The run's recorded
overrides recompose its spec, so data columns, max length and labels are the
ones the model was trained with; the user's overrides come last.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ft_cli import strategies, tasks
from ft_cli.config.schema import SCRATCH_SIZES, RunSpec
from ft_cli.errors import FtError
from ft_cli.rundir import checkpoint, records

# Recorded overrides that say where and how a run ran, not what it trained.
_NOT_CARRIED = (
    "hydra.",
    "hydra/",
    "resume",
    "output_dir",
    "model.from_run",
    "+search",
    "+launcher",
)


@dataclass
class Trained:
    run_dir: Path | None
    export: Path | None  # save_pretrained folder: config, weights, tokenizer
    checkpoint: Path | None  # step-N folder whose weights replace the export's
    overrides: list[str]  # what the run was launched with
    task: str | None = None  # a multi-task run: the task whose model this is

    @property
    def home(self) -> Path:
        """Where results about this model are written (the run dir, else the export)."""
        folder = self.run_dir or self.export
        assert folder is not None
        return folder


def locate(path: str, task: str | None = None) -> Trained:
    """The model at `path`; `task`: which task's model of a multi-task run."""
    found = _find(path)
    if found.export is not None:
        model_config(found.export)  # a damaged config.json is named here, in one line
    tasks_of = _multitask_names(found)
    if tasks_of is None:
        if task is not None:
            raise FtError(f"--task {task}: '{path}' is not a multi-task run; drop --task")
        return found
    if found.checkpoint is not None:
        raise FtError(
            f"{found.checkpoint}: a multi-task checkpoint holds every task's weights; use the"
            " run's model/ export with --task NAME"
        )
    if task is None and found.task is None:
        raise FtError(
            f"'{path}' is a multi-task run: pass --task NAME (its tasks: {', '.join(tasks_of)})"
        )
    chosen = task or found.task
    if chosen not in tasks_of:
        raise FtError(f"--task {chosen}: not a task of this run; its tasks: {', '.join(tasks_of)}")
    assert found.run_dir is not None
    export = found.run_dir / "model" / chosen
    return Trained(found.run_dir, export, None, found.overrides, chosen)


def _multitask_names(found: Trained) -> list[str] | None:
    """The task names of a multi-task run (None for a single-task one)."""
    from ft_cli.models import multitask

    if found.run_dir is None:
        return None
    manifest = multitask.read_manifest(found.run_dir / "model")
    if manifest is not None:
        return list(manifest["tasks"])
    recorded = found.run_dir / "config.yaml"
    if not recorded.is_file():
        return None
    from omegaconf import OmegaConf

    task = OmegaConf.load(recorded).get("task", {})
    from ft_cli import tasks

    info = tasks.TASKS.get(str(task.get("kind")))
    return list(task.get("tasks", {})) if info and info.targets == "tasks" else None


def _find(path: str) -> Trained:
    from ft_cli.models import multitask

    target = Path(path)
    if not target.is_dir():
        raise FtError(f"'{path}' is not a folder; pass a run dir, its model/ or a checkpoint")
    if (target / checkpoint.MANIFEST).is_file():
        run = target.parent.parent
        export = run / "model" if (run / "model" / "config.json").is_file() else None
        return Trained(run, export, target, records.recorded_overrides(run))
    if multitask.read_manifest(target.parent) is not None and (target / "config.json").is_file():
        run = target.parent.parent  # model/NAME of a multi-task run
        return Trained(run, target, None, records.recorded_overrides(run), target.name)
    if (target / "config.json").is_file():
        run = target.parent if (target.parent / "config.yaml").is_file() else None
        return Trained(run, target, None, records.recorded_overrides(run) if run else [])
    if (target / "model" / "config.json").is_file():
        return Trained(target, target / "model", None, records.recorded_overrides(target))
    if multitask.read_manifest(target) is not None:  # model/ of a multi-task run
        run = target.parent
        return Trained(run, None, None, records.recorded_overrides(run))
    if multitask.read_manifest(target / "model") is not None:
        return Trained(target, None, None, records.recorded_overrides(target))
    newest = checkpoint.newest_valid(target / "checkpoints", lambda _: None)
    if newest is not None:  # a run stopped before its export: its newest checkpoint
        return _find(str(newest))
    if any(target.glob("*/metrics.json")):
        raise FtError(
            f"'{path}' is a sweep dir: name one of its runs (ft runs {path} --best) or combine"
            " them with --ensemble METHOD"
        )
    raise FtError(
        f"'{path}' holds no ft run, exported model (config.json) or checkpoint (manifest.json)"
    )


# Recorded overrides that would widen what code runs: only the user's command line says them.
_CODE_KEYS = ("model.trust_remote_code",)


def spec_for(trained: Trained, overrides: list[str]) -> RunSpec:
    """The run's spec, recomposed from its overrides, with the user's on top.

    Nothing recorded in a run may make ft run code: `model.trust_remote_code`
    is taken from the user's own overrides only. For one task of a multi-task
    run, the spec is that task's alone (its settings and data as `task` and
    `data`), and the user's `data.`/`task.` keys are that task's.
    """
    from ft_cli.config import compose

    kept = [
        o for o in trained.overrides if not o.lstrip("~+").startswith(_NOT_CARRIED + _CODE_KEYS)
    ]
    if trained.task is not None:
        overrides = [_into_task(o, trained.task) for o in overrides]
    extra = []
    if trained.export:
        # The saved config holds the architecture: a fresh model's sizes (a recipe's
        # model.layers, ...) describe what was trained, not what to build.
        extra = [compose.override("model.from_run", trained.export)]
        extra += [f"model.{key}=null" for key in SCRATCH_SIZES]
    spec = compose.to_spec(compose.compose_config([*kept, *extra, *overrides]))
    if trained.task is not None:
        spec = _one_task(spec, trained.task)
    labels = _export_labels(trained)
    if tasks.get(spec.task.kind).named_labels and labels is not None:
        spec.task.labels = labels  # the model's own label ids, whatever the data holds
    return spec


def spec_of_trained(trained: Trained, spec: RunSpec) -> RunSpec:
    """`spec_for` of a run whose spec is in hand (the run that just trained, inside its
    own Hydra app, where nothing may be composed again): its model read back from the
    export."""
    import dataclasses

    assert trained.export is not None
    model = dataclasses.replace(
        spec.model,
        from_run=str(trained.export),
        **{key: None for key in SCRATCH_SIZES},
    )
    spec = dataclasses.replace(spec, model=model)
    labels = _export_labels(trained)
    if tasks.get(spec.task.kind).named_labels and labels is not None:
        spec = dataclasses.replace(spec, task=dataclasses.replace(spec.task, labels=labels))
    return spec


def _into_task(override: str, task: str) -> str:
    """`data.KEY=V` / `task.KEY=V` of the command line, as keys of one multi-task task."""
    head = override[: len(override) - len(override.lstrip("~+"))]
    body = override[len(head) :]
    if body.startswith("task.tasks."):
        return override  # already a task's key
    for group in ("data.", "task."):
        if body.startswith(group):
            inner = body if group == "data." else body[len(group) :]
            return f"{head}task.tasks.{task}.{inner}"
    return override


def _one_task(spec: RunSpec, name: str) -> RunSpec:
    """The spec of one task of a multi-task run, as if it had been trained alone."""
    import dataclasses

    from ft_cli.config.schema import TaskConfig, TaskSettings

    sub = spec.task.tasks[name]
    own = {f.name: getattr(sub, f.name) for f in dataclasses.fields(TaskSettings)}
    return dataclasses.replace(spec, task=TaskConfig(**own), data=sub.data)


def model_config(folder: Path) -> dict[str, Any]:
    """An exported model's config.json, or one line naming what is wrong with it."""
    import json

    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        why = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise FtError(
            f"{path} is damaged or unreadable ({why}); train or export the run again, or use"
            " one of its checkpoints (RUN/checkpoints/step-N)"
        ) from err
    if not isinstance(config, dict):
        raise FtError(f"{path} holds no model config (a JSON object); export the run again")
    return config


def _export_labels(trained: Trained) -> list[str] | None:
    if trained.export is None:
        return None
    names = model_config(trained.export).get("id2label") or {}
    try:
        return [str(names[key]) for key in sorted(names, key=int)] or None
    except (ValueError, TypeError, AttributeError) as err:
        raise FtError(
            f"{trained.export / 'config.json'}: id2label is damaged ({err}); export the run again"
        ) from err


def check_loadable(trained: Trained, spec: RunSpec) -> None:
    """Checkpoints that load only where they were written say so in one line."""
    if trained.checkpoint is not None and strategies.for_config(spec.strategy).partial_checkpoints:
        raise FtError(
            f"{trained.checkpoint}: a LoRA checkpoint holds adapter weights only; evaluate the"
            " run's model/ export (adapters merged) instead"
        )
    if trained.checkpoint is not None and (trained.checkpoint / "sharded").is_dir():
        raise FtError(
            f"{trained.checkpoint}: a sharded (fsdp) checkpoint loads only under torchrun;"
            " use the run's model/ export"
        )


def load_checkpoint(trained: Trained, net: Any) -> None:
    """A checkpoint's weights replace the export's (or the base model's) when one was given."""
    if trained.checkpoint is not None:
        checkpoint.load_weights(net, trained.checkpoint)


def load_net(trained: Trained, spec: RunSpec, labels: list[str] | None, vocab: int) -> Any:
    """The trained model, in eval mode, with the checkpoint's weights when one was given."""
    check_loadable(trained, spec)
    net = tasks.get(spec.task.kind).load_trained(spec.model, spec.task, labels, vocab)
    load_checkpoint(trained, net)
    return net.eval()
