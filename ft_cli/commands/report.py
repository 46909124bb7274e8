"""`ft report RUN_OR_SWEEP_DIR`: PNG plots and one self-contained report.html.

Curves come from each run's TensorBoard events: train loss, learning rate and
every eval metric over the optimizer steps, one line per run (a sweep's runs
overlaid). A classification run (a sweep's best) also gets a confusion matrix
on its validation split, from its exported model; an image classifier also a
sheet of its most confident mistakes (misclassified.png). A sweep gets its monitored
metric against each hyperparameter it varied. The HTML embeds every plot
(one file to share) and links the PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ft_cli import tasks
from ft_cli.errors import FtError
from ft_cli.rundir import records

USAGE = "usage: ft report RUN_OR_SWEEP_DIR [--no-confusion]"


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    folders = [a for a in args if not a.startswith("-")]
    unknown = [a for a in args if a.startswith("-") and a != "--no-confusion"]
    if unknown or len(folders) != 1:
        raise FtError(f"give one run or sweep dir ({USAGE})")
    written = write_report(Path(folders[0]), confusion="--no-confusion" not in args)
    print(f"written: {written} ({len(list(written.parent.glob('*.png')))} plots)")
    return 0


def write_report(root: Path, confusion: bool = True) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    rows = records.summarise(root)
    curves = {row.job: scalar_series(Path(row.run_dir)) for row in rows}
    if not any(curves.values()):
        raise FtError(
            f"{root}: no TensorBoard events in its runs (tensorboard/); ft report reads them:"
            " train with logger=tensorboard (the default) or a list that holds it"
        )
    plots: list[tuple[str, Path]] = []
    for tag, title in _tags(curves):
        path = root / f"{tag.replace('/', '_')}.png"
        _line_plot(curves, tag, title, path)
        plots.append((title, path))
    best = next((r for r in rows if r.best is not None), None)
    found = validation_outcomes(Path(best.run_dir)) if confusion and best else None
    if found is not None and best is not None:
        ready, outcomes = found
        path = root / "confusion_matrix.png"
        counts = _counts(outcomes, len(ready.labels))
        _confusion_plot(counts, ready.labels, path, f"confusion matrix, validation ({best.job})")
        plots.append(("confusion matrix", path))
        path = root / "reliability.png"
        _reliability_plot(outcomes, path, f"reliability, validation ({best.job})")
        plots.append(("reliability diagram (equal-mass bins)", path))
        path = root / "misclassified.png"
        title = f"most confident mistakes, validation ({best.job})"
        wrong = sorted((o for o in outcomes if o.truth != o.guess), key=lambda o: -o.confidence)
        caption = tasks.modality(ready.spec.task.kind).mistakes_sheet(ready, wrong, path, title)
        if caption is not None:
            plots.append((caption, path))
    table = task_table(Path(best.run_dir)) if confusion and best else None
    if confusion and best:
        figure = task_figure(Path(best.run_dir), root / "worst_validation.png", best.job)
        if figure is not None:
            plots.append(figure)
    if len(rows) > 1:
        for key, points in varied_hyperparameters(rows).items():
            path = root / f"sweep_{key.replace('.', '_')}.png"
            _sweep_plot(points, key, rows[0].metric or "metric", path)
            plots.append((f"{rows[0].metric} vs {key}", path))
    if any(row.pareto is not None for row in rows):
        names = list(dict.fromkeys(name for row in rows for name in row.modes))[:2]
        if len(names) == 2:
            path = root / "pareto_front.png"
            _pareto_plot(rows, names, path)
            plots.append((f"Pareto front: {names[0]} against {names[1]}", path))
    from ft_cli.rundir import seeds

    groups = seeds.seed_groups(rows)
    if groups:
        path = root / "seed_spread.png"
        _seed_plot(groups, rows, path)
        plots.append((f"{rows[0].metric} over seeds", path))
    page = root / "report.html"
    checked = _data_check(Path(best.run_dir)) if best else []
    page.write_text(_html(root, rows, plots, _seed_rows(groups), table, checked))
    return page


def task_figure(run_dir: Path, path: Path, job: str) -> tuple[str, Path] | None:
    """The run's task's own picture of its validation split (segmentation: the worst
    images with their true and predicted masks), as (caption, path), or None."""
    kind = _trained_kind(run_dir)
    if kind is None or not tasks.get(kind).report_figures:
        return None
    from ft_cli.training import evaluating

    ready = evaluating.setup(str(run_dir), [])
    caption = tasks.get(kind).report_figure(ready, path, f"validation ({job})")
    return (caption, path) if caption is not None else None


def _trained_kind(run_dir: Path) -> str | None:
    """The task of a run with a trained model, or None."""
    from omegaconf import OmegaConf

    config = run_dir / "config.yaml"
    if not config.is_file() or not (run_dir / "model" / "config.json").is_file():
        return None
    kind = OmegaConf.select(OmegaConf.load(config), "task.kind")
    return kind if kind in tasks.TASKS else None


def task_table(run_dir: Path) -> tuple[str, list[str], list[list[Any]]] | None:
    """The run's task's own table about its validation split (question answering: the
    worst-answered questions), or None."""
    kind = _trained_kind(run_dir)
    if kind is None or not tasks.get(kind).report_tables:
        return None
    from ft_cli.training import evaluating

    ready = evaluating.setup(str(run_dir), [])
    return tasks.get(kind).report_table(ready)


def scalar_series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar a run logged, by tag: [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run_dir / "tensorboard"
    if not folder.is_dir():
        return {}
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in events.Tags().get("scalars", [])
    }


def _tags(curves: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    present = {tag for series in curves.values() for tag in series}
    wanted = [("train/loss", "train loss"), ("train/lr", "learning rate")]
    wanted += [(t, f"eval {t.split('/', 1)[1]}") for t in sorted(present) if t.startswith("eval/")]
    return [(tag, title) for tag, title in wanted if tag in present]


def _line_plot(curves: dict[str, dict[str, Any]], tag: str, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for job, series in curves.items():
        if tag in series:
            steps, values = zip(*series[tag], strict=True)
            axes.plot(steps, values, label=job, marker="o" if len(steps) < 30 else None)
    axes.set_xlabel("optimizer step")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if len(curves) > 1:
        axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@dataclass
class Outcome:
    """One validation row as the model saw it."""

    row: int
    truth: int
    guess: int
    confidence: float  # the predicted class's probability


def validation_outcomes(run_dir: Path) -> tuple[Any, list[Outcome]] | None:
    """(the evaluation setup, each validation row's outcome), or None (not classification)."""
    from ft_cli.training import evaluating

    metrics_file = run_dir / "metrics.json"
    record = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    if not record.get("labels") or not (run_dir / "model" / "config.json").is_file():
        return None
    ready = evaluating.setup(str(run_dir), [])
    if not tasks.get(ready.spec.task.kind).confusion_matrix or ready.labels is None:
        return None
    import torch

    rows: list[int] = []
    truths: list[int] = []
    found: list[torch.Tensor] = []
    windows: dict[int, torch.Tensor] = {}  # a long input's windows: pooled per row below
    ready.forward.eval()
    with torch.no_grad(), ready.hw.autocast():
        for indices, batch in zip(ready.loader.batch_sampler, ready.loader, strict=True):
            batch = {k: v.to(ready.hw.device) for k, v in batch.items()}
            logits, targets = ready.forward(batch)
            if isinstance(targets, tuple):
                windows.update(zip(indices, logits.float().cpu(), strict=True))
                continue
            rows += indices
            truths += targets.tolist()
            found += list(logits.float().cpu())
    if windows:
        from ft_cli.tasks import documents

        split = ready.loader.dataset
        rows, pooled = documents.pooled_rows(windows, split.rows, ready.objective.pooling)
        first = {owner: window for window, owner in reversed(list(enumerate(split.rows)))}
        truths = [split.labels[first[row]] for row in rows]
        found = list(pooled)
    outcomes = []
    for row, truth, logits in zip(rows, truths, found, strict=True):
        best = logits.softmax(-1).max(-1)
        outcomes.append(Outcome(row, truth, int(best.indices), float(best.values)))
    return ready, outcomes


def confusion_matrix(run_dir: Path) -> tuple[list[list[int]], list[str]] | None:
    """Counts[true][predicted] on the run's validation split, or None (not classification)."""
    found = validation_outcomes(run_dir)
    if found is None:
        return None
    ready, outcomes = found
    return _counts(outcomes, len(ready.labels)), ready.labels


def _counts(outcomes: list[Outcome], size: int) -> list[list[int]]:
    counts = [[0] * size for _ in range(size)]
    for outcome in outcomes:
        counts[outcome.truth][outcome.guess] += 1
    return counts


def _confusion_plot(counts: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    size = len(labels)
    figure, axes = plt.subplots(figsize=(1.2 * size + 3, 1.2 * size + 2.5))
    axes.imshow(counts, cmap="Blues")
    top = max(max(row) for row in counts) or 1
    for i in range(size):
        for j in range(size):
            color = "white" if counts[i][j] > top / 2 else "black"
            axes.text(j, i, str(counts[i][j]), ha="center", va="center", color=color)
    axes.set_xticks(range(size), labels, rotation=45, ha="right")
    axes.set_yticks(range(size), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def varied_hyperparameters(rows: list[records.RunRow]) -> dict[str, list[tuple[float, float]]]:
    """Numeric overrides that differ between a sweep's runs: {key: [(value, best), ...]}."""
    values: dict[str, dict[str, float]] = {}
    for row in rows:
        for token in row.overrides.split():
            key, _, value = token.partition("=")
            try:
                values.setdefault(key, {})[row.job] = float(value)
            except ValueError:
                continue
    varied = {}
    for key, by_job in values.items():
        if len(set(by_job.values())) < 2:
            continue
        points = [(by_job[r.job], r.best) for r in rows if r.job in by_job and r.best is not None]
        points = [(x, y) for x, y in points if math.isfinite(y)]
        if points:
            varied[key] = sorted(points)
    return varied


def _sweep_plot(points: list[tuple[float, float]], key: str, metric: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    xs, ys = zip(*points, strict=True)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(xs, ys, "o")
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        axes.set_xscale("log")
    axes.set_xlabel(key)
    _finish_plot(figure, axes, f"best {metric}", f"best {metric} by {key}", path)


def _pareto_plot(rows: list[records.RunRow], names: list[str], path: Path) -> None:
    """Every finished trial of a search on its first two objectives, the front joined up."""
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.pareto is not None and all(n in r.objectives for n in names)]
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for on_front, style, label in ((False, "o", "dominated"), (True, "o-", "Pareto front")):
        chosen = sorted(
            (r.objectives[names[0]], r.objectives[names[1]]) for r in scored if r.pareto is on_front
        )
        if chosen:
            xs, ys = zip(*chosen, strict=True)
            color = "tab:green" if on_front else "tab:gray"
            axes.plot(xs, ys, style, color=color, label=label, drawstyle="steps-post")
    for row in scored:
        axes.annotate(row.job, (row.objectives[names[0]], row.objectives[names[1]]), fontsize=7)
    modes = scored[0].modes if scored else {}
    axes.set_xlabel(f"{names[0]} ({modes.get(names[0], '')})")
    axes.legend()
    title = f"{len(scored)} trials on {names[0]} and {names[1]}"
    _finish_plot(figure, axes, f"{names[1]} ({modes.get(names[1], '')})", title, path)


def _finish_plot(figure: Any, axes: Any, y_label: str, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _seed_plot(groups: list[Any], rows: list[records.RunRow], path: Path) -> None:
    """Each seed group's runs as points, with the mean and one standard deviation either side."""
    import matplotlib.pyplot as plt

    best = {row.job: row.best for row in rows}
    shared = records.shared_overrides(rows)
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4.5))
    for x, group in enumerate(groups):
        values = [best[job] for job in group.jobs if best.get(job) is not None]
        axes.plot([x] * len(values), values, "o", alpha=0.6, color="tab:blue")
        stats = group.monitored()
        if stats is not None:
            spread = 0.0 if math.isnan(stats["std"]) else stats["std"]
            axes.errorbar(
                [x + 0.15], [stats["mean"]], yerr=[spread], fmt="s", color="tab:red", capsize=4
            )
    labels = [" ".join(t for t in g.overrides.split() if t not in shared) or "-" for g in groups]
    axes.set_xticks(
        range(len(groups)),
        [f"{label}\n(n={g.runs})" for label, g in zip(labels, groups, strict=True)],
        fontsize=8,
    )
    metric = groups[0].metric or "metric"
    title = f"best {metric} over seeds: runs (dots), mean +- std (red)"
    _finish_plot(figure, axes, f"best {metric}", title, path)


def _seed_rows(groups: list[Any]) -> list[list[Any]]:
    """The seed table's rows: group, overrides, runs, metric, mean, std, min, max."""
    return [
        [
            index,
            group.overrides,
            group.runs,
            name.removeprefix("best "),
            *(stats[key] for key in ("mean", "std", "min", "max")),
        ]
        for index, group in enumerate(groups, start=1)
        for name, stats in group.stats.items()
        if name.startswith("best ")
    ]


def _data_check(run_dir: Path) -> list[list[str]]:
    """The run's data check as [finding] and [split, what, value] rows (none: no check)."""
    from ft_cli.checks.findings import DataCheck

    path = run_dir / "data_check.json"
    if not path.is_file():
        return []
    found = DataCheck.read(path)
    return [[line] for line in found.lines()] + found.figure_rows()


def _reliability_plot(outcomes: list[Any], path: Path, title: str) -> None:
    """Accuracy against mean confidence in bins of equal counts; the diagonal is calibrated."""
    import matplotlib.pyplot as plt
    import torch

    from ft_cli.tasks import confidence

    confidences = torch.tensor([o.confidence for o in outcomes])
    right = torch.tensor([o.truth == o.guess for o in outcomes])
    found = confidence.binned(confidences, right)
    ece = confidence.ece_of(found)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], color="#999", linestyle="--", label="calibrated")
    axis.plot([c for c, *_ in found], [a for _, a, *_ in found], marker="o", label="model")
    axis.set_xlabel("mean confidence of the bin")
    axis.set_ylabel("accuracy of the bin")
    axis.set_title(f"{title}\nECE {ece:.4f}", fontsize=9)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _html(
    root: Path,
    rows: list[records.RunRow],
    plots: list[tuple[str, Path]],
    seed_rows: list[list[Any]],
    task_rows: tuple[str, list[str], list[list[Any]]] | None = None,
    checked: list[list[str]] | None = None,
) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return html.escape("-" if value is None else str(value))

    header = ["job", "overrides", "status", "metric", "best", "final", "steps", "wall s"]
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{cell(v)}</td>"
            for v in (
                r.job,
                r.overrides,
                r.status if not r.error else f"{r.status}: {r.error}",
                r.metric,
                r.best,
                r.final,
                r.steps,
                r.wall_seconds,
            )
        )
        + "</tr>"
        for r in rows
    )
    seed_table = ""
    if seed_rows:
        heads = ["group", "overrides", "runs", "metric", "mean", "std", "min", "max"]
        seed_table = (
            "<h2>seed statistics (best checkpoints; std with n - 1)</h2><table><tr>"
            + "".join(f"<th>{h}</th>" for h in heads)
            + "</tr>"
            + "".join(
                "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in seed_rows
            )
            + "</table>"
        )
    task_table = ""
    if task_rows is not None:
        title, heads, lines = task_rows
        task_table = (
            f"<h2>{html.escape(title)}</h2><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in heads)
            + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in lines)
            + "</table>"
        )
    data_table = ""
    if checked:
        data_table = (
            "<h2>data check (the best run's data_check.json: rows by index)</h2><table>"
            + "".join(
                f'<tr><td colspan="{4 - len(r)}">'
                + "</td><td>".join(html.escape(v) for v in r)
                + "</td></tr>"
                for r in checked
            )
            + "</table>"
        )
    figures = "".join(
        f'<figure><a href="{html.escape(path.name)}"><img alt="{html.escape(title)}"'
        f' src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"></a>'
        f"<figcaption>{html.escape(title)} ({html.escape(path.name)})</figcaption></figure>"
        for title, path in plots
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ft report: {html.escape(root.name)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 700px; }}
</style></head><body>
<h1>ft report: {html.escape(str(root))}</h1>
<h2>runs, best first</h2>
<table><tr>{"".join(f"<th>{h}</th>" for h in header)}</tr>{body}</table>
{seed_table}
{task_table}
{data_table}
<h2>plots</h2>
{figures}
</body></html>
"""
