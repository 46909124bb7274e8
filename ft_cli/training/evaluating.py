"""A trained model made ready to run over one split or file, as training sets up its own
evaluation: what `ft eval`, `ft export`'s check, `ft report` and ensembles share.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ft_cli.errors import FtError


@dataclass
class EvalSetup:
    """A trained model ready to run over one split: what evaluation and reports share."""

    found: Any  # trained.Trained
    spec: Any
    rows: Any  # the EncodedSplit
    source: str
    labels: list[str] | None
    forward: Any  # engine.StepForward
    objective: Any
    loader: Any
    hw: Any


def batches(ready: Any, size: int = 16) -> Iterator[tuple[list[int], Any, Any]]:
    """The evaluated rows through the model, `size` at a time: (their indices, the
    objective's outputs, its targets), without gradients."""
    import torch

    collate = ready.objective.collator(ready.rows, 0)
    ready.forward.eval()
    with torch.no_grad(), ready.hw.autocast():
        for start in range(0, len(ready.rows), size):
            indices = list(range(start, min(start + size, len(ready.rows))))
            batch = {k: v.to(ready.hw.device) for k, v in collate(indices).items()}
            outputs, targets = ready.forward(batch)
            yield indices, outputs, targets


def setup(
    folder: str,
    overrides: list[str],
    split: str = "validation",
    file: str | None = None,
    task: str | None = None,
    spec: Any = None,
) -> EvalSetup:
    """The trained model and the rows to evaluate, from the setup call training makes
    (`spec`: the run's own, in hand; else recomposed from its record and `overrides`)."""
    from ft_cli.hardware import parallel
    from ft_cli.models import trained
    from ft_cli.training import setup as run_setup

    found = trained.locate(folder, task)
    if spec is None:
        spec = trained.spec_for(found, overrides)
    else:
        spec = trained.spec_of_trained(found, spec)
    ready, hw = built(found, spec, file)
    rows, source = chosen_rows(ready, split, file)
    backend = parallel.Backend()
    loader = run_setup.eval_loader(ready, rows, backend.place, backend)
    return EvalSetup(
        found, spec, rows, source, ready.labels, ready.forward, ready.objective, loader, hw
    )


def built(found: Any, spec: Any, file: str | None = None) -> tuple[Any, Any]:
    """(the evaluation RunSetup with the trained weights, the hardware); a file's rows
    become its `prepared.train`."""
    from ft_cli import tasks
    from ft_cli.data import dataset
    from ft_cli.hardware import parallel
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.models import trained
    from ft_cli.training import setup as run_setup

    trained.check_loadable(found, spec)
    hw = setup_hardware(spec.hardware)
    given = None
    if file is not None:
        labels = spec.task.labels or None
        kind = tasks.get(spec.task.kind)
        tokenizer = kind.processor(spec.model)
        table = kind.load_file(file, spec.data)
        rows = dataset.encode_split(spec.data, spec.task, tokenizer, table, labels, "eval", file)
        given = dataset.PreparedData(rows, None, None, labels, {"file": file})
    ready = run_setup.build(
        spec, run_setup.Purpose.evaluate, parallel.Backend(), hw, prepared=given
    )
    trained.load_checkpoint(found, ready.net)
    return ready, hw


def chosen_rows(ready: Any, split: str, file: str | None) -> tuple[Any, str]:
    """(the rows to evaluate: a split of the run's data or the file's, where they come from)."""
    from ft_cli.data import dataset

    if file is not None:
        rows, source = ready.prepared.train, file
    else:
        rows = getattr(ready.prepared, split, None) if split in dataset.SPLITS else None
        if rows is None:
            raise FtError(
                f"--split {split}: the run's data has no such split; splits: "
                + ", ".join(s for s in dataset.SPLITS if getattr(ready.prepared, s) is not None)
            )
        source = ready.prepared.source.get(split, split)
    if getattr(rows, "labels", None) and all(label == -1 for label in rows.labels):
        raise FtError(f"{source}: no labels to evaluate against; ft predict gives predictions")
    return rows, source
