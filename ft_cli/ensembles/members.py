"""An ensemble's members: which runs, whether they fit together, and their outputs.

A path is a run dir (or its model/), a sweep dir (every finished run in it), or
an ensemble folder written by `ft ensemble` (its members). Members must share
the task and the label set; each keeps its own tokenizer and data settings, as
`ft eval` would use them, so the rows each sees are the same rows encoded its way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ft_cli import tasks
from ft_cli.errors import FtError
from ft_cli.models import trained
from ft_cli.rundir import records

FINISHED = ("done", "stopped early")


@dataclass
class Member:
    name: str  # as the tables show it
    found: trained.Trained
    spec: Any
    metric: str | None  # the run's monitored metric, its mode and best value
    mode: str | None
    best: float | None

    @property
    def regression(self) -> bool:
        return tasks.info(self.spec.task.kind).targets == "score"

    @property
    def labels(self) -> list[str] | None:
        return list(self.spec.task.labels) if self.spec.task.labels else None


def run_dirs(paths: list[str]) -> list[Path]:
    """The member run dirs (or model folders) the paths name, in a stable order."""
    from ft_cli.ensembles import manifest

    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if not path.is_dir():
            raise FtError(f"'{text}' is not a folder; pass run dirs, a sweep dir or an ensemble")
        saved = manifest.read(path)
        if saved is not None:
            found += saved.member_paths
        elif _is_run(path):
            found.append(path)
        else:
            rows = [r for r in records.summarise(path) if r.status in FINISHED]
            if not rows:
                raise FtError(f"'{text}': no finished runs in this sweep dir")
            found += sorted((Path(r.run_dir) for r in rows), key=_job_order)
    if len(found) < 2:
        raise FtError(f"an ensemble needs two or more members; found {len(found)} in {paths}")
    return found


def _is_run(path: Path) -> bool:
    marks = ("config.json", "metrics.json", "model")
    return any((path / mark).exists() for mark in marks) or (path / "checkpoints").is_dir()


def _job_order(path: Path) -> tuple[int, str]:
    """Sweep jobs 0, 1, ..., 10 in number order."""
    return (int(path.name), "") if path.name.isdigit() else (1 << 30, path.name)


def load(paths: list[Path], overrides: list[str]) -> list[Member]:
    """Every member with its spec; refuses members of different tasks or label sets."""
    members = []
    for path in paths:
        found = trained.locate(str(path))
        spec = trained.spec_for(found, overrides)
        members.append(Member(_name(path), found, spec, *_monitored(found.home)))
    _check_compatible(members)
    return members


def _name(path: Path) -> str:
    parts = path.resolve().parts
    return "/".join(parts[-2:]) if path.name in ("model",) or path.name.isdigit() else path.name


def _monitored(home: Path) -> tuple[str | None, str | None, float | None]:
    try:
        record = json.loads((home / "metrics.json").read_text())
        monitor = record["monitor"]
        best = monitor.get("best")
        return monitor.get("metric"), monitor.get("mode"), None if best is None else float(best)
    except (OSError, ValueError, KeyError, TypeError):
        return None, None, None


def _check_compatible(members: list[Member]) -> None:
    first = members[0]
    kind = first.spec.task.kind
    if not tasks.info(kind).ensembles:
        combined = " or ".join(tasks.named(lambda info: bool(info.ensembles)))
        raise FtError(f"{first.found.home}: task {kind}; ensembles combine {combined} runs")
    for member in members[1:]:
        other = member.spec.task.kind
        if other != kind:
            raise FtError(
                f"{member.found.home}: task {other}, but {first.found.home} is {kind}; an"
                " ensemble's members share one task"
            )
        if member.labels != first.labels:
            raise FtError(
                f"{member.found.home}: labels {member.labels}, but {first.found.home} has"
                f" {first.labels}; an ensemble's members share one label set, in one order"
            )


@dataclass
class Outputs:
    """Member outputs on some rows, as its task combines them ([rows, K]: probabilities,
    scores, a window's start and end logits), the targets, and what scores them."""

    values: torch.Tensor
    targets: torch.Tensor | None
    source: str
    rows: Any = None  # the EncodedSplit they are outputs of
    objective: Any = None  # its new_metrics(rows) scores combined outputs
    windows: torch.Tensor | None = None  # a long input's windows: each row's window index

    @property
    def inputs(self) -> int:
        """How many inputs the rows are: a long input's windows (or a question's) count once."""
        questions = getattr(self.rows, "questions", None)
        if questions is not None:
            return len(questions)
        owners = getattr(self.rows, "rows", None)
        return len(set(owners)) if owners is not None else len(self.values)

    def metrics(self, kind: str, combined: torch.Tensor) -> dict[str, float]:
        """The task's metrics of `combined` outputs on these rows (a long input's
        windows: pooled into the input's, as its evaluation pools them)."""
        scores = self.objective.new_metrics(self.rows)
        targets = self.targets if self.windows is None else (self.targets, self.windows)
        scores.update(tasks.get(kind).ensemble_logits(combined.float()), targets)
        return scores.compute()


def evaluated(member: Member, splits: list[tuple[str, str | None]]) -> list[Outputs]:
    """The member's outputs on each (split, file) pair, in row order; the model built once."""
    from ft_cli.hardware import parallel
    from ft_cli.training import evaluating
    from ft_cli.training import setup as run_setup

    results = []
    by_file: dict[str | None, Any] = {}
    for split, file in splits:
        if file not in by_file:
            by_file[file] = evaluating.built(member.found, member.spec, file)
        ready, hw = by_file[file]
        rows, source = evaluating.chosen_rows(ready, split, file)
        backend = parallel.Backend()
        loader = run_setup.eval_loader(ready, rows, backend.place, backend)
        task = tasks.get(member.spec.task.kind)
        values, targets, windows = _run(ready.forward, loader, rows.lengths(), hw, task)
        results.append(Outputs(values, targets, source, rows, ready.objective, windows))
    return results


def _run(
    forward: Any, loader: Any, lengths: list[int], hw: Any, task: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Each row's outputs as its task combines them, the targets and (a long input's
    windows) each row's window index, in row order (the loader's batches are by length)."""
    count, width = len(lengths), max(lengths)
    values: list[torch.Tensor | None] = [None] * count
    targets: list[torch.Tensor | None] = [None] * count
    windows: list[torch.Tensor | None] = [None] * count
    forward.eval()
    with torch.no_grad(), hw.autocast():
        for indices, batch in zip(loader.batch_sampler, loader, strict=True):
            batch = {k: v.to(hw.device) for k, v in batch.items()}
            logits, labels = forward(batch)
            labels, window = labels if isinstance(labels, tuple) else (labels, None)
            out = logits.float().cpu()
            for j, row in enumerate(indices):
                values[row] = task.ensemble_values(out[j], lengths[row], width)
                targets[row] = labels[j].cpu()
                windows[row] = None if window is None else window[j].cpu()
    found = None if windows[0] is None else torch.stack(windows)  # type: ignore[arg-type]
    return torch.stack(values), torch.stack(targets), found  # type: ignore[arg-type]
