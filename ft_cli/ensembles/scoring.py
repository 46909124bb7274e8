"""Fit an ensemble on the members' validation outputs and score it next to each member.

The combination is always fit on the validation split (the rows model
selection already used). Scored on another split or a file, every number is
out of sample; scored on the validation split itself, `weighted` and `greedy`
are in-sample (the table says so) and `stack` is cross-validated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ft_cli import tasks
from ft_cli.config.schema import Mode, default_mode
from ft_cli.ensembles import combine, members
from ft_cli.ensembles.combine import Combiner
from ft_cli.errors import FtError

NEEDS_VALIDATION = ("weighted", "greedy", "stack")
FIT_ON_OUTPUTS = ("greedy", "stack")  # weighted reads each member's recorded metric instead


@dataclass
class Row:
    name: str
    metrics: dict[str, float]
    fit: str  # how the row's numbers relate to the rows they are scored on


@dataclass
class Scored:
    rows: list[Row]
    combiners: dict[str, Combiner]
    metric: str
    source: str
    count: int
    members: list[members.Member] = field(default_factory=list)


def parse_methods(text: str) -> list[str]:
    chosen = list(combine.METHODS) if text == "all" else [m.strip() for m in text.split(",")]
    unknown = [m for m in chosen if m not in combine.METHODS]
    if unknown or not chosen:
        raise FtError(
            f"--ensemble {text}: unknown method {', '.join(unknown) or '(none)'}; methods:"
            f" {', '.join(combine.METHODS)} or all"
        )
    return chosen


def parse_weights(text: str | None, count: int) -> list[float] | None:
    if text is None:
        return None
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        weights = []
    usable = all(math.isfinite(w) and w >= 0 for w in weights)
    if len(weights) != count or not usable or sum(weights) <= 0:
        raise FtError(
            f"--weights {text}: give {count} non-negative numbers, one per member, not all 0"
            " (e.g. --weights " + ",".join(["1"] * count) + ")"
        )
    return weights


def member_weights(found: list[members.Member]) -> list[float]:
    """Weights from each member's best validation metric (1 / value for a lower-is-better one)."""
    weights = []
    for member in found:
        if member.best is None or not (member.best > 0 and math.isfinite(member.best)):
            raise FtError(
                f"--ensemble weighted: {member.found.home} has no positive validation metric in"
                " its metrics.json to weigh it by; give --weights W1,W2,..."
            )
        weights.append(1 / member.best if member.mode == Mode.min.value else member.best)
    return weights


def score(
    paths: list[str],
    methods: list[str],
    weights_text: str | None,
    split: str,
    file: str | None,
    overrides: list[str],
    saved: Combiner | None = None,
    check: Callable[[list[members.Member]], None] | None = None,
) -> Scored:
    """Every member's metrics and each method's, on the split (or file) asked for.

    `saved`: a saved ensemble's combination; `check` refuses members it no longer fits.
    """
    if weights_text is not None and "weighted" not in methods:
        raise FtError(f"--weights {weights_text}: only --ensemble weighted uses given weights")
    found = members.load(members.run_dirs(paths), overrides)
    if check is not None:
        check(found)
    given = parse_weights(weights_text, len(found))
    first = found[0]
    kind, regression = first.spec.task.kind, first.regression
    methods = usable_methods(methods, kind)
    on_validation = file is None and split == "validation"
    needs_fit = saved is None and any(m in FIT_ON_OUTPUTS for m in methods)
    wanted = [(split, file)] + ([("validation", None)] if needs_fit and not on_validation else [])
    outputs = [members.evaluated(m, wanted) for m in found]
    target = _stacked(found, [o[0] for o in outputs])
    on_target = outputs[0][0]  # scores outputs combined on the target rows
    validation = None
    if needs_fit:
        validation = target if on_validation else _stacked(found, [o[-1] for o in outputs])
    metric = first.metric or tasks.info(kind).metrics[0]
    mode = Mode(first.mode) if first.mode else default_mode(metric)
    rows = [
        Row(m.name, on_target.metrics(kind, target[0][i]), "member") for i, m in enumerate(found)
    ]

    def better(combined: torch.Tensor) -> float:
        assert validation is not None
        value = outputs[0][-1].metrics(kind, combined)[metric]
        return value if mode == Mode.max else -value

    combiners = {}
    for method in methods:
        if saved is not None:
            combiner = saved
        else:
            weights = (given or member_weights(found)) if method == "weighted" else None
            combiner = combine.fit(method, validation, better, regression, weights)
        combined, fit = _scored_outputs(combiner, target, on_validation, regression)
        combiners[method] = combiner
        label = f"ensemble: {method}"
        rows.append(Row(label, on_target.metrics(kind, combined), fit))
    source = outputs[0][0].source
    return Scored(rows, combiners, metric, source, on_target.inputs, found)


def usable_methods(methods: list[str], kind: str) -> list[str]:
    """The methods asked for (`all`: every one the members' task takes); refuses a method
    that does not combine its runs."""
    allowed = tasks.info(kind).ensembles
    if methods == list(combine.METHODS):
        return list(allowed)
    refused = [m for m in methods if m not in allowed]
    if refused:
        raise FtError(
            f"--ensemble {','.join(refused)}: task {kind} combines its runs with"
            f" {', '.join(allowed)}"
        )
    return methods


def _stacked(
    found: list[members.Member], outputs: list[members.Outputs]
) -> tuple[torch.Tensor, torch.Tensor]:
    """([members, rows, K] outputs, the targets); refuses members that saw different rows."""
    first = outputs[0]
    for member, out in zip(found[1:], outputs[1:], strict=True):
        same = out.values.shape == first.values.shape and out.targets is not None
        if not same or not torch.equal(out.targets, first.targets):
            raise FtError(
                f"{member.found.home}: its {out.source} rows differ from {found[0].found.home}'s"
                f" ({len(out.values)} vs {len(first.values)} rows, or other labels); members"
                " must be scored on the same rows (a validation split carved with"
                " data.validation_fraction depends on train.seed: give data.files.validation;"
                " inputs read in windows: the same tokenizer, data.max_length and data.stride)"
            )
    values = torch.stack([out.values.double() for out in outputs])
    if values.dim() == 2:
        values = values.unsqueeze(-1)
    return values, first.targets


def _scored_outputs(
    combiner: Combiner,
    target: tuple[torch.Tensor, torch.Tensor],
    on_validation: bool,
    regression: bool,
) -> tuple[torch.Tensor, str]:
    """The combination's outputs on the target rows, and how they relate to its fit."""
    values, targets = target
    if not on_validation or combiner.method in ("mean", "vote"):
        return combiner(values), "fit on validation" if combiner.method in NEEDS_VALIDATION else "-"
    if combiner.method == "stack":
        folds = min(combine.FOLDS, len(targets))
        return combine.cross_validated(values, targets, regression, seed=0), f"{folds}-fold CV"
    return combiner(values), "in-sample (fit on these rows)"


def print_table(scored: Scored, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    names = list(scored.rows[0].metrics)
    table = Table(title=title, title_justify="left")
    # Names stay whole ("ensemble: greedy"); the metric columns give way first.
    table.add_column(
        "model", no_wrap=True, min_width=min(max(len(r.name) for r in scored.rows), 40)
    )
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("combination fit")
    best_member = max(
        (r for r in scored.rows if r.fit == "member"), key=lambda r: r.metrics[scored.metric]
    )
    for row in scored.rows:
        style = "bold" if row is best_member or row.fit != "member" else None
        cells = [f"{row.metrics[n]:.4f}" for n in names]
        table.add_row(row.name, *cells, row.fit if row.fit != "member" else "", style=style)
    Console().print(table)


def record(scored: Scored) -> dict[str, Any]:
    return {
        "source": scored.source,
        "rows": scored.count,
        "monitored": scored.metric,
        "models": [{"name": r.name, "metrics": r.metrics, "fit": r.fit} for r in scored.rows],
    }


def home_of(paths: list[str]) -> Path | None:
    """Where ensemble results are written: the one sweep or ensemble folder given."""
    return Path(paths[0]) if len(paths) == 1 else None
