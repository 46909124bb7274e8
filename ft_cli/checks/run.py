"""A data check of a run's config: every split read once, every check run, one
`findings.DataCheck` back."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from ft_cli import tasks
from ft_cli.checks import duplicates
from ft_cli.checks.findings import DataCheck, count, rows_named
from ft_cli.checks.rows import SplitRows, read_split
from ft_cli.errors import FtError

IMBALANCED = 5.0  # the largest class this many times the smallest: a finding


def before_training(spec: Any) -> DataCheck | None:
    """ft train's short check (no near duplicates, no truncation: `ft data check` and
    `ft explain` measure those); None when data.checks=off or the task has several data."""
    if spec.data.checks.value == "off" or tasks.info(spec.task.kind).targets == "tasks":
        return None
    return check(spec, near=False)


def strict_refusal(found: DataCheck) -> str:
    """The one line data.checks=strict refuses with."""
    blocking = found.blocking()
    return (
        f"data.checks=strict: {len(blocking)} finding(s) to fix first ({blocking[0].summary});"
        " see ft data check, or set data.checks=warn"
    )


def check(
    spec: Any,
    tokenizer: Any = None,
    near: bool = True,
    not_near: str = "ft data check looks for them",
) -> DataCheck:
    """Check the data `spec` trains on (`tokenizer`: measure truncation; `near`: look for
    near duplicates too, the slowest check; else `not_near` says why not)."""
    kind = spec.task.kind
    if tasks.info(kind).targets == "tasks":
        raise FtError(
            f"task={kind}: check each task's data alone (ft data check with its task= and"
            " data= overrides)"
        )
    task = tasks.get(kind)
    raw = task.load_raw(spec.data)
    splits = {name: read_split(task, spec.data, name, table) for name, table in raw.splits.items()}
    found = DataCheck(task=kind)
    for rows in splits.values():
        _within(found, rows, near)
    train = splits.get("train")
    for rows in splits.values():
        if train is not None and rows is not train:
            _across(found, train, rows)
    _labels(found, splits, kind)
    if tokenizer is not None and "data.text_column" in task.input_columns(spec.data):
        for name, table in raw.splits.items():
            _truncation(found, name, table, spec.data, tokenizer, tasks.info(kind).windowed)
    elif task.inputs.names_files:
        found.not_checked.append("truncation: the inputs are files")
    elif "data.text_column" in task.input_columns(spec.data):
        found.not_checked.append("truncation: ft data check measures it")
    else:
        found.not_checked.append(f"truncation: task={kind} reads its text its own way")
    if task.inputs.names_files:
        found.not_checked.append("near duplicates: files are compared by content only")
    elif not near:
        found.not_checked.append(f"near duplicates: {not_near}")
    return found


def _within(found: DataCheck, rows: SplitRows, near: bool) -> None:
    name = rows.name
    figures: dict[str, Any] = {"rows": len(rows.keys)}
    found.splits[name] = figures
    same = duplicates.groups(rows.keys)
    repeated = same  # conflicting labels are their own finding
    if rows.labels is not None:
        labels = rows.labels
        repeated = [g for g in same if len({labels[i] for i in g}) == 1]
    if repeated:
        extra = sum(len(g) - 1 for g in repeated)
        noun = "files" if rows.texts is None else "rows"
        found.add(
            "duplicates",
            name,
            f"{count(extra, 'exact duplicate ' + noun[:-1])} in"
            f" {count(len(repeated), 'group')} (rows"
            f" {rows_named(repeated)})",
            repeated,
        )
    if rows.labels is not None:
        clashing = duplicates.conflicts(rows.keys, rows.labels)
        if clashing and rows.counted is not rows.labels and rows.texts is not None:
            for conflict in clashing:  # tags: the words tagged differently
                first, *others = conflict["rows"]
                words, tags = rows.texts[first].split(), rows.labels[first].split()
                conflict["words"] = sorted(
                    {
                        words[at]
                        for other in others
                        for at, tag in enumerate(rows.labels[other].split())
                        if at < len(words) and at < len(tags) and tag != tags[at]
                    }
                )
        if clashing:
            groups = [c["rows"] for c in clashing]
            found.add(
                "conflicts",
                name,
                f"{count(len(clashing), 'input')} with different labels"
                f" (rows {rows_named(groups)}{_words(clashing)})",
                clashing,
            )
    if rows.empty:
        found.add(
            "empty",
            name,
            f"{count(len(rows.empty), 'empty input')} (rows {rows_named(rows.empty)})",
            rows.empty,
        )
    if rows.short:
        found.add(
            "short",
            name,
            f"{count(len(rows.short), 'input')} under 3 characters (rows {rows_named(rows.short)})",
            rows.short,
        )
    if near and rows.texts is not None:
        close = duplicates.near_groups(rows.texts, same)
        if close is None:
            found.not_checked.append("near duplicates: pip install 'ft-cli[checks]' (datasketch)")
            near = False
        elif close:
            found.add(
                "near_duplicates",
                name,
                f"{count(sum(len(g) for g in close), 'near-duplicate row')} in"
                f" {count(len(close), 'group')}"
                f" (5-gram Jaccard >= {duplicates.NEAR_THRESHOLD}; rows {rows_named(close)})",
                close,
            )
    measured = [m for m in rows.measures if m]
    for what in sorted({k for m in measured for k in m}):
        values = [m[what] for m in measured if what in m]
        figures[what] = {
            "min": round(min(values), 3),
            "median": round(statistics.median(values), 3),
            "max": round(max(values), 3),
        }


def _words(clashing: list[dict[str, Any]]) -> str:
    """The words a tagged sentence's copies tag differently, as a summary names them."""
    words = sorted({w for c in clashing for w in c.get("words", [])})
    return f"; words tagged differently: {rows_named(words)}" if words else ""


def _across(found: DataCheck, train: SplitRows, other: SplitRows) -> None:
    leaked = duplicates.shared(train.keys, other.keys)
    if leaked:
        found.add(
            "leak",
            other.name,
            f"{count(len(leaked), 'row')} also in train ({other.name} row, train row:"
            f" {rows_named(leaked)})",
            leaked,
        )
    if other.texts is not None and train.texts is not None:
        inside = duplicates.contained(train.texts, other.texts)
        if inside:
            found.add(
                "contained",
                other.name,
                f"{count(len(inside), 'row')} holding a whole train row of"
                f" {duplicates.CONTAINED_WORDS}+ words"
                f" ({other.name} row, train row: {rows_named(inside)})",
                inside,
            )


def _labels(found: DataCheck, splits: dict[str, SplitRows], kind: str) -> None:
    counted = {name: Counter(r.counted) for name, r in splits.items() if r.counted is not None}
    if not counted:
        found.not_checked.append(f"labels: task={kind} reads no label column")
        return
    for name, counts in counted.items():
        found.splits[name]["labels"] = dict(sorted(counts.items(), key=lambda item: -item[1]))
        if len(counts) > 1 and len(counts) <= 100:  # classes, not free-form tag sequences
            ratio = max(counts.values()) / min(counts.values())
            found.splits[name]["imbalance"] = round(ratio, 2)
            if ratio >= IMBALANCED:
                rare = min(counts, key=counts.get)  # type: ignore[arg-type]
                found.add(
                    "imbalance",
                    name,
                    f"the largest class has {ratio:.1f}x the rows of the smallest ('{rare}',"
                    f" {counts[rare]}); consider task.class_weights=balanced",
                    [],
                )
    if "train" in counted:
        for name, counts in counted.items():
            if name == "train" or len(counts) > 100:
                continue
            alone = sorted(set(counts) - set(counted["train"]))
            if alone:
                found.add(
                    "labels_not_in_train",
                    name,
                    f"{count(len(alone), 'label')} never seen in train: {rows_named(alone)}",
                    alone,
                )


def _truncation(
    found: DataCheck, name: str, table: Any, cfg: Any, tokenizer: Any, windowed: bool
) -> None:
    texts = table[cfg.text_column]
    words = bool(texts) and isinstance(texts[0], list)
    texts = [t if t is not None else ([] if words else "") for t in texts]
    pairs = None
    if cfg.text_pair_column is not None and cfg.text_pair_column in table.column_names:
        pairs = [t if t is not None else "" for t in table[cfg.text_pair_column]]
    if not texts:
        return
    lengths = [len(ids) for ids in tokenizer(texts, pairs, is_split_into_words=words)["input_ids"]]
    over = [i for i, n in enumerate(lengths) if n > cfg.max_length]
    dropped, total = sum(lengths[i] - cfg.max_length for i in over), sum(lengths)
    found.splits[name]["truncation"] = {
        "rows cut": len(over),
        "tokens dropped": dropped,
        "tokens": total,
    }
    if over:
        hint = (
            "; data.long_inputs=windows reads them whole"
            if windowed and cfg.long_inputs.value != "windows"
            else ""
        )
        found.add(
            "truncated",
            name,
            f"{count(len(over), 'row')} ({len(over) / len(lengths):.1%}) longer than"
            f" data.max_length="
            f"{cfg.max_length} lose {dropped:,} of {total:,} tokens ({dropped / max(total, 1):.1%})"
            f"{hint} (rows {rows_named(over)})",
            over,
        )
