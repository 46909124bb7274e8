"""K-fold cross-validation (`train.folds=K`): K trainings in one run dir, each holding out
one fold of the train split as its validation (`data.folds`), then their metrics' mean
and spread and the out-of-fold predictions of every training row.

RUN/fold-k/ is each fold's own run (ft eval, ft report, ft runs read it as any other);
RUN/folds.json holds each fold's best metrics with their mean, sample std, min and max
(as seed statistics are figured); RUN/oof_predictions.csv each training row's
prediction by the model that did not train on it: what label-error finding reads.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ft_cli import tasks
from ft_cli.data import folds

FOLDS_RECORD, OUT_OF_FOLD = "folds.json", "oof_predictions.csv"


def run_folds(
    spec: Any, run_dir: str | Path, overrides: list[str], records: Any = None, sweep: Any = None
) -> Any:
    """Train every fold; the result's metric is the mean of the folds' best."""
    from ft_cli.outputs.console import RunConsole
    from ft_cli.rundir import seeds
    from ft_cli.training.engine import RunResult, train

    root, count = Path(run_dir), spec.train.folds
    assigned = _assignment(spec, count)  # the folds each run's data prepares alike
    results, predicted = [], []
    for k in range(count):
        fold_spec = dataclasses.replace(
            spec,
            data=dataclasses.replace(spec.data, fold=[k, count]),
            train=dataclasses.replace(spec.train, folds=1),
        )
        fold_dir = root / f"fold-{k}"
        own = [*overrides, f"data.fold=[{k},{count}]", "train.folds=1"]
        results.append(train(fold_spec, fold_dir, own, records, sweep))
        held = folds.held_out(assigned, k)[1] if assigned is not None else []
        predicted.append(_held_out_outputs(fold_dir, fold_spec, held))
    name = results[0].metric_name
    metrics = sorted({key for r in results for key in r.best if key != "step"})
    table = {key: [r.best.get(key) for r in results] for key in metrics}
    summary = {
        key: seeds.describe([v for v in values if v is not None]) for key, values in table.items()
    }
    record = {
        "folds": count,
        "monitor": name,
        "per_fold": [
            {"fold": k, "run_dir": str(root / f"fold-{k}"), **r.best} for k, r in enumerate(results)
        ],
        "summary": summary,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / FOLDS_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    written = _write_out_of_fold(root / OUT_OF_FOLD, spec, predicted)
    ui = RunConsole()
    rows = [
        [key, *(_shown(v) for v in table[key]), _shown(s["mean"]), _shown(s["std"])]
        for key, s in summary.items()
    ]
    heads = ["metric", *(f"fold {k}" for k in range(count)), "mean", "std"]
    ui.table(f"{count}-fold cross-validation (best checkpoint of each fold)", heads, rows)
    if written:
        ui.info(f"out-of-fold predictions of {written} training rows: {root / OUT_OF_FOLD}")
    mean = summary.get(name, {}).get("mean")
    return RunResult(name, mean, {k: s["mean"] for k, s in summary.items()}, run_dir=root)


def _shown(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _assignment(spec: Any, count: int) -> list[int] | None:
    """Each training row's fold, as data.fold prepares it (None: no output per row to
    predict, so no out-of-fold file)."""
    info = tasks.info(spec.task.kind)
    if info.targets not in ("classes", "score"):
        return None
    train = tasks.get(spec.task.kind).load_raw(spec.data).splits["train"]
    stratify = spec.data.label_column if info.targets == "classes" else None
    return folds.assignment(train, count, spec.train.seed, stratify, spec.data.group_column)


def _held_out_outputs(fold_dir: Path, spec: Any, held: list[int]) -> tuple | None:
    """(the held-out rows' indices in the train split, the fold model's outputs on them, the
    run's labels, each row's own label), or None when the task has no output per row."""
    from ft_cli.training import evaluating

    if not held or not (fold_dir / "model").is_dir():
        return None
    ready = evaluating.setup(str(fold_dir), [], spec=spec)
    if getattr(ready.rows, "rows", None) is not None:
        return None  # a long input's windows: no single output per row
    found = [outputs.float().cpu() for _, outputs, _ in evaluating.batches(ready, 64)]
    rows = held[: len(ready.rows)]
    return rows, torch.cat(found), ready.labels, list(ready.rows.labels)


def _write_out_of_fold(path: Path, spec: Any, predicted: list[Any]) -> int:
    """oof_predictions.csv: row (in the train split), fold, the given label, then the
    prediction: the most probable class and each class's probability (a score: the
    predicted value)."""
    if any(p is None for p in predicted):
        return 0
    lines = []
    for fold, (rows, outputs, labels, truth) in enumerate(predicted):
        for row, output, given in zip(rows, outputs, truth, strict=True):
            if labels:
                probs = output.softmax(-1).tolist()
                best = max(range(len(probs)), key=probs.__getitem__)
                own = {"label": labels[int(given)], "predicted_label": labels[best]}
                own |= {f"probability_{n}": p for n, p in zip(labels, probs, strict=True)}
            else:
                own = {"label": float(given), "prediction": float(output.reshape(-1)[0])}
            lines.append({"row": row, "fold": fold, **own})
    lines.sort(key=lambda line: line["row"])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.DictWriter(handle, fieldnames=list(lines[0]))
        out.writeheader()
        out.writerows(lines)
    return len(lines)
