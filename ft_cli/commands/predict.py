"""`ft predict RUN_OR_MODEL_DIR --input FILE [--output FILE] [OVERRIDES]`.

Reads csv, tsv, jsonl or parquet in chunks (a file of any size streams through
in bounded memory), sorts each chunk by length so that batches pad little,
and writes the same rows, in input order, with the prediction columns added:

- classification: `predicted_label`, `predicted_probability` and one
  `probability_<label>` column per class;
- regression: `predicted_score`;
- token classification: `predicted_tags`, a tag per word of the words column
  (a list, or a string of words split on spaces; csv/tsv output: one spaced
  string).

Text columns are the run's (`data.text_column`, `data.text_pair_column`),
overridable on the command line.

An input modality may also read a folder or a .txt list of paths (images: every
image under the folder, sorted by path); rows that name files name them relative
to the folder or file given. The output (csv unless --output says otherwise) has
the input column as given.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

from ft_cli.commands.arguments import parse_many
from ft_cli.data import files as table_files
from ft_cli.data import formats
from ft_cli.data.formats import TableFormat
from ft_cli.errors import FtError

USAGE = (
    "usage: ft predict RUN_OR_MODEL_DIR --input FILE [--output FILE] [--batch-size N]"
    " [--task NAME] [--backend torch|onnxruntime|onnxruntime-int8] [KEY=VALUE ...]\n"
    "       ft predict RUNS_OR_SWEEP_DIR... --ensemble METHOD [--weights W1,...] --input FILE\n"
    "       ft predict ENSEMBLE_DIR --input FILE"
)
BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")


def main(args: list[str]) -> int:
    flags = {
        "--input": "the file to predict",
        "--output": "where to write it",
        "--batch-size": "rows per forward pass",
        "--task": "a task of a multi-task run",
        "--ensemble": "mean, vote, weighted, greedy or stack",
        "--weights": "weighted: one weight per member",
        "--backend": "torch, onnxruntime or onnxruntime-int8",
    }
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    folders, given, overrides = parse_many(args, flags)
    if "--input" not in given:
        raise FtError("--input FILE is required (csv, tsv, jsonl or parquet)")
    source = Path(given["--input"])
    streamed = formats.suffixes(lambda table: table.streams)
    suffix = source.suffix if source.suffix.lower() in streamed else ".csv"  # folder, .txt list
    target = Path(given.get("--output") or f"{source.stem}.predictions{suffix}")
    batch = given.get("--batch-size")
    if batch is not None and (not batch.isdigit() or int(batch) < 1):
        raise FtError(f"--batch-size {batch}: give a positive whole number")
    size = int(batch) if batch else None
    backend = given.get("--backend", "torch")
    if backend not in BACKENDS:
        raise FtError(f"--backend {backend}: use {', '.join(BACKENDS)}")
    from ft_cli.ensembles import manifest

    if len(folders) > 1 or "--ensemble" in given or manifest.read(Path(folders[0])):
        if backend != "torch":
            raise FtError(f"--backend {backend}: ensembles predict with torch; drop --backend")
        rows = predict_ensemble(folders, given, overrides, source, target, size)
    else:
        rows = predict_file(
            folders[0], source, target, overrides, size, given.get("--task"), backend
        )
    print(f"{rows} rows predicted: {target}")
    return 0


def file_format(path: Path, flag: str) -> TableFormat:
    """The format of a file ft predict reads or writes, by its name."""
    return formats.by_suffix(path, flag, lambda table: table.streams)


def predict_file(
    folder: str,
    source: Path,
    target: Path,
    overrides: list[str],
    batch_size: int | None = None,
    task_name: str | None = None,
    backend: str = "torch",
) -> int:
    """Predict every row of `source` into `target`; returns the number of rows."""
    from ft_cli import tasks
    from ft_cli.models import trained

    found = trained.locate(folder, task_name)
    spec = trained.spec_for(found, overrides)
    kind = tasks.get(spec.task.kind)
    kind.check_predictable()
    listed = kind.inputs.listed(source)
    if listed is not None:
        return predict_listed(found, spec, source, listed, target, batch_size, backend)
    in_fmt, out_fmt = check_files(source, target)
    in_fmt.check(source, spec.data, "--input")
    if kind.inputs.names_files:  # paths relative to the table's folder
        spec = _paths_from(spec, source.resolve().parent)
    predictor = load_predictor(found, spec, batch_size, out_fmt.holds_lists, backend)
    predictor.output = target
    return write_predictions(source, target, spec.data, predictor)


def _paths_from(spec: Any, base: Path) -> Any:
    import dataclasses

    return dataclasses.replace(spec, data=dataclasses.replace(spec.data, path=str(base)))


def predict_listed(
    found: Any,
    spec: Any,
    source: Path,
    listed: list[str],
    target: Path,
    batch_size: int | None,
    backend: str = "torch",
) -> int:
    """The inputs a folder or list names (relative to it), one output row each."""
    from ft_cli import tasks

    out_fmt = file_format(target, "--output")
    spec = _paths_from(spec, source if source.is_dir() else source.resolve().parent)
    predictor = load_predictor(found, spec, batch_size, out_fmt.holds_lists, backend)
    predictor.output = target
    partial = target.with_name(f".{target.name}.partial")
    (column,) = tasks.modality(spec.task.kind).columns(spec.data).values()
    with _writer(partial, out_fmt) as write:
        for rows in formats.chunks({column: p} for p in listed):
            write(rows, predictor(rows))
    os.replace(partial, target)
    return len(listed)


def check_files(source: Path, target: Path) -> tuple[TableFormat, TableFormat]:
    """(input format, output format); refuses a missing input or an unwritable output."""
    in_fmt, out_fmt = file_format(source, "--input"), file_format(target, "--output")
    table_files.require_file(source, "--input")
    if target.resolve() == source.resolve():
        raise FtError(f"--output '{target}' is the input file; name another file")
    if not target.resolve().parent.is_dir():
        raise FtError(
            f"--output '{target}': folder '{target.parent}' does not exist; create it or name"
            " a file in an existing folder"
        )
    return in_fmt, out_fmt


def load_predictor(
    found: Any, spec: Any, batch_size: int | None, lists: bool, backend: str = "torch"
) -> Predictor:
    """The trained model (or its ONNX export), its tokenizer and labels, ready to predict."""
    from ft_cli import tasks
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.models import trained

    labels = spec.task.labels or None
    if tasks.get(spec.task.kind).named_labels and labels is None:
        labels = _labels_from_data(found, spec)
    hw = setup_hardware(spec.hardware)
    kind = tasks.get(spec.task.kind)
    tokenizer = kind.processor(spec.model)
    if backend == "torch":
        net = trained.load_net(found, spec, labels, kind.vocab_size(tokenizer)).to(hw.device)
    else:
        from ft_cli.deploy import onnx_export

        net = onnx_export.load_session(found, backend, labels)
    batch = batch_size or spec.train.eval_batch_size
    return Predictor(net, tokenizer, spec, labels, hw, batch, lists)


def write_predictions(source: Path, target: Path, data: Any, predict: Any) -> int:
    """Every row of `source`, with `predict(rows)`'s columns, into `target`; the row count.

    Written to a hidden partial file first and renamed into place when complete.
    """
    in_fmt, out_fmt = file_format(source, "--input"), file_format(target, "--output")
    total = in_fmt.count_rows(source)
    partial = target.with_name(f".{target.name}.partial")  # renamed into place when complete
    done = 0
    from rich.progress import Progress

    with Progress(transient=True) as progress, _writer(partial, out_fmt) as write:
        task = progress.add_task(f"predicting {source.name}", total=total)
        for chunk in in_fmt.read_rows(source, data):
            write(chunk, predict(chunk))
            done += len(chunk)
            progress.update(task, completed=done)
    if done == 0:
        partial.unlink(missing_ok=True)
        raise FtError(f"--input '{source}' has no rows")
    os.replace(partial, target)
    return done


def _labels_from_data(found: Any, spec: Any) -> list[str]:
    """A run stopped before its export: its head's labels, derived as training derived them."""
    from ft_cli import tasks

    if found.export is not None:
        raise FtError(f"{found.home}: no label names in the model's config.json (id2label)")
    tokenizer = tasks.get(spec.task.kind).processor(spec.model)
    from ft_cli.data import dataset

    labels = dataset.prepare(spec.data, spec.task, tokenizer, spec.train.seed).labels
    assert labels is not None
    return labels


class Predictor:
    """Rows in, prediction columns out (in the rows' order)."""

    def __init__(
        self, net: Any, tokenizer: Any, spec: Any, labels: Any, hw: Any, batch: int, lists: bool
    ) -> None:
        self.net, self.tokenizer, self.spec, self.labels, self.hw = net, tokenizer, spec, labels, hw
        self.batch = batch
        self.lists = lists  # tags as a list (jsonl, parquet) or one spaced string (csv, tsv)
        # The file being written: files a prediction makes (masks) go into a folder beside
        # it; None (ft serve): they come back inline.
        self.output: Path | None = None
        self.rows_done = 0  # rows predicted so far: names the files of the next ones

    def _column(self, rows: list[dict], key: str, name: str, keep_lists: bool = False) -> list:
        if name not in rows[0]:
            raise FtError(
                f"{key}: column '{name}' is not in the input; its columns are:"
                f" {', '.join(rows[0])} (set {key}=NAME)"
            )
        values = ["" if row.get(name) is None else row[name] for row in rows]
        return values if keep_lists else [str(value) for value in values]

    def __call__(self, rows: list[dict]) -> list[dict[str, Any]]:
        from ft_cli import tasks

        return tasks.get(self.spec.task.kind).predictions(self, rows)

    def check(self, rows: list[dict]) -> None:
        """Encode the rows as a batch would, without the model: raises what encoding raises
        (the server refuses such a request alone, before it joins others)."""
        from ft_cli import tasks

        task = tasks.get(self.spec.task.kind)

        def read(key: str, name: str, keep_lists: bool = False) -> list:
            return self._column(rows, key, name, keep_lists)

        task.predict_inputs(read, self.tokenizer, self.spec.data, self.labels, self.spec.task)

    def logits(self, rows: list[dict]) -> tuple[list[Any], list[Any]]:
        """Each row's logits (fp32, CPU) and what its prediction needs besides, in row order;
        where a task reads an input in several parts (a long input's windows), a list of
        each per row."""
        import torch

        from ft_cli import tasks
        from ft_cli.models import outputs

        task = tasks.get(self.spec.task.kind)

        def read(key: str, name: str, keep_lists: bool = False) -> list:
            return self._column(rows, key, name, keep_lists)

        split, collate, extra = task.predict_inputs(
            read, self.tokenizer, self.spec.data, self.labels, self.spec.task
        )
        lengths = split.lengths()
        owners = getattr(split, "rows", None)  # a long input's windows: their input row
        order = sorted(range(len(split)), key=lengths.__getitem__)
        logits: list[Any] = [None] * len(split)
        extras: list[Any] = [None] * len(split)
        with torch.no_grad(), self.hw.autocast():
            for start in range(0, len(order), self.batch):
                indices = order[start : start + self.batch]
                batch = collate(indices)
                batch.pop("labels")
                # What a row's prediction needs of its batch: its words' first tokens, or
                # its samples and the batch's padded length (to cut off padded frames).
                starts = batch.pop("word_starts", batch.pop("samples", None))
                batch = {k: v.to(self.hw.device) for k, v in batch.items()}
                out = outputs.logits_of(self.net(**batch)).float().cpu()
                for j, row in enumerate(indices):
                    # A window's token outputs stop at its length (a row's one output: as is).
                    sized = owners is not None and out[j].dim() > 1
                    logits[row] = out[j][: lengths[row]] if sized else out[j]
                    own = starts[j] if starts is not None else None
                    extras[row] = (own, extra[row]) if extra is not None else None
        if owners is None:
            return logits, extras
        mine: list[list[int]] = [[] for _ in rows]
        for index, owner in enumerate(owners):
            mine[owner].append(index)
        return [[logits[i] for i in own] for own in mine], [
            [extras[i] for i in own] for own in mine
        ]


class _writer:
    """A context manager giving write(rows, predictions) into `path` in `fmt`; the file is
    removed when writing fails, and a full disk is named as such."""

    def __init__(self, path: Path, fmt: TableFormat) -> None:
        self.path, self.fmt = path, fmt
        self.rows: formats.RowWriter | None = None

    def __enter__(self) -> Any:
        self.rows = self.fmt.writer(self.path)
        return self.write

    def write(self, rows: list[dict], predictions: list[dict]) -> None:
        assert self.rows is not None
        self.rows.write([{**row, **extra} for row, extra in zip(rows, predictions, strict=True)])

    def __exit__(self, *exc: object) -> None:
        try:
            if self.rows is not None:
                self.rows.close()  # a full disk may fail only here, on the last flush
        except OSError as err:
            self.path.unlink(missing_ok=True)
            raise _unwritten(err, self.path) from err
        if exc[0] is not None:
            self.path.unlink(missing_ok=True)
            if isinstance(exc[1], OSError) and exc[1].filename is None:
                raise _unwritten(exc[1], self.path) from exc[1]


def _unwritten(err: OSError, partial: Path) -> FtError:
    """A write that failed for the disk (full, most often): the output it was for, named."""
    target = partial.with_name(partial.name.removeprefix(".").removesuffix(".partial"))
    return FtError(
        f"--output {target}: cannot write it ({err.strerror or err}); nothing was written"
        " (free some space or write elsewhere)"
    )


def predict_ensemble(
    folders: list[str],
    given: dict[str, str],
    overrides: list[str],
    source: Path,
    target: Path,
    batch_size: int | None,
) -> int:
    """`ft predict RUNS... --ensemble METHOD --input F` (or an ensemble folder): the row count."""
    from ft_cli import tasks
    from ft_cli.ensembles import combine, manifest, members

    saved = manifest.read(Path(folders[0])) if len(folders) == 1 else None
    if saved is None and "--ensemble" not in given:
        raise FtError("several folders: add --ensemble METHOD (or give one ensemble folder)")
    if saved is not None and "--ensemble" in given:
        raise FtError(f"{folders[0]} is a saved {saved.combiner.method} ensemble; drop --ensemble")
    in_fmt, out_fmt = check_files(source, target)
    combiner = saved.combiner if saved else _fitted_combiner(folders, given, overrides)
    found = members.load(members.run_dirs(folders), overrides)
    if saved is not None:
        manifest.check_members(saved, found)
    for member in found:
        in_fmt.check(source, member.spec.data, "--input")
    lists = out_fmt.holds_lists
    predictors = [load_predictor(m.found, m.spec, batch_size, lists) for m in found]
    first = found[0]
    task, labels = tasks.get(first.spec.task.kind), first.labels

    def combined(rows: list[dict]) -> list[dict[str, Any]]:
        each = [predictor.logits(rows) for predictor in predictors]
        # A row read in windows (a long input, a question's context) gives a list: the
        # members' windows are the same (checked below), combined window by window.
        grouped = isinstance(each[0][0][0], list)
        sizes = [len(own) for own in each[0][0]] if grouped else [1] * len(rows)
        flat = [[w for own in out for w in own] if grouped else out for out, _ in each]
        lengths = [len(window) for window in flat[0]]
        for member, windows in zip(found[1:], flat[1:], strict=True):
            if [len(window) for window in windows] != lengths:
                raise FtError(
                    f"{member.found.home}: reads the input in other windows than"
                    f" {first.found.home}; members must share the tokenizer and"
                    " data.max_length / data.stride"
                )
        merged = combine.outputs_of(combiner, task, flat)
        if grouped:
            ends = list(itertools.accumulate(sizes))
            merged = [merged[end - size : end] for end, size in zip(ends, sizes, strict=True)]
        extras = each[0][1]
        return [
            task.prediction(own, labels, extra, lists)
            for own, extra in zip(merged, extras, strict=True)
        ]

    return write_predictions(source, target, first.spec.data, combined)


def _fitted_combiner(folders: list[str], given: dict[str, str], overrides: list[str]) -> Any:
    from ft_cli.ensembles import scoring

    methods = scoring.parse_methods(given["--ensemble"])
    if len(methods) != 1:
        raise FtError(f"--ensemble {given['--ensemble']}: ft predict combines with one method")
    scored = scoring.score(folders, methods, given.get("--weights"), "validation", None, overrides)
    return scored.combiners[methods[0]]
