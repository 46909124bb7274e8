"""Load, check, label and tokenize the data; batch it with dynamic padding.

Tokenization happens once, up front, into plain lists; batches are padded only
to their own longest row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ft_cli import paths, tasks
from ft_cli.config.schema import DataConfig, DataFormat, TaskConfig
from ft_cli.data import files as table_files
from ft_cli.data import formats
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError, closest
from ft_cli.models import hub

SPLITS = ("train", "validation", "test")


@dataclass
class RawData:
    """The untokenized splits (a `datasets.Dataset` each) and where they came from."""

    splits: dict[str, Any]
    source: dict[str, str]
    label_names: list[str] | None = None  # from a hub ClassLabel feature


@dataclass
class PreparedData:
    train: EncodedSplit
    validation: EncodedSplit | None
    test: EncodedSplit | None
    labels: list[str] | None  # class names in id order (classification)
    source: dict[str, str]


def load_raw(cfg: DataConfig) -> RawData:
    _quiet_datasets()
    if cfg.format == DataFormat.hub:
        return _load_hub(cfg)
    return _load_files(cfg)


def _quiet_datasets() -> None:
    """No "Generating train split" bars between ft's own lines."""
    import datasets

    datasets.disable_progress_bars()


def _load_hub(cfg: DataConfig) -> RawData:
    import datasets

    if not cfg.hub_path:
        raise FtError("data.hub_path is required for data.format=hub (e.g. nyu-mll/glue)")
    name = f"{cfg.hub_path}/{cfg.hub_name}" if cfg.hub_name else cfg.hub_path
    reachable = hub.hub_reachable()
    previous = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = previous or not reachable  # unreachable: cache only
    try:
        dataset = datasets.load_dataset(cfg.hub_path, cfg.hub_name)
    except Exception as err:
        if not reachable:
            raise hub.unreachable_error(
                "data.hub_path",
                name,
                "use local files instead (data=glue_mrpc_local data.path=DIR, or data=csv/tsv/"
                "json/parquet with data.files.train=FILE)",
            ) from err
        raise FtError(f"data.hub_path: cannot load '{name}': {str(err).splitlines()[0]}") from err
    finally:
        datasets.config.HF_HUB_OFFLINE = previous
    splits = {s: dataset[s] for s in SPLITS if s in dataset}
    feature = splits["train"].features.get(cfg.label_column) if "train" in splits else None
    label_names = list(feature.names) if hasattr(feature, "names") else None
    return RawData(splits, {s: f"hub {name} [{s}]" for s in splits}, label_names)


def _load_files(cfg: DataConfig) -> RawData:

    files: dict[str, str] = {}
    for split in SPLITS:
        value = getattr(cfg.files, split)
        if value is None:
            continue
        path = paths.resolve_path(value, f"data.files.{split}", base=cfg.path)
        if Path(path).is_dir():
            table_files.require_file(path, f"data.files.{split}")
        if not Path(path).is_file():
            raise FtError(
                f"data.files.{split}: file '{path}' does not exist; set data.files.{split}"
                + (" or data.path" if cfg.path is not None else "")
                + " to an existing file"
            )
        files[split] = path
    if "train" not in files:
        raise FtError("data.files.train is required: set data.files.train=FILE")
    table = formats.FORMATS[cfg.format.value]
    splits = {}
    for split, path in files.items():
        key = f"data.files.{split}"
        table.check(Path(path), cfg, key)
        try:
            splits[split] = table.load(path, cfg)
        except FtError:
            raise
        except Exception as err:
            if table.has_no_rows(Path(path)):
                raise FtError(_empty_split(split, path)) from err
            raise FtError(
                f"{key}: cannot read '{path}' as {cfg.format.value}: {table_files.root_cause(err)}"
            ) from err
    return RawData(splits, files)


def _empty_split(split: str, source: str) -> str:
    return (
        f"data: the {split} split is empty ({source}); check the file"
        " or max_train_samples / max_eval_samples"
    )


def prepare(cfg: DataConfig, task: TaskConfig, tokenizer: Any, seed: int) -> PreparedData:
    """Check columns and labels, carve a validation split if needed, and tokenize."""
    raw = tasks.get(task.kind).load_raw(cfg)
    splits = dict(raw.splits)
    for split, dataset in splits.items():
        _check_columns(cfg, task, dataset, split, raw.source[split])
    if "train" not in splits:
        raise FtError(
            "data: no train split found; set data.files.train (or a hub dataset with one)"
        )
    if cfg.fold is not None:
        _hold_out_fold(splits, raw.source, cfg, task, seed)
    if "validation" not in splits and cfg.validation_fraction > 0:
        if len(splits["train"]) < 2:
            raise FtError(
                "data.files.train has fewer than 2 rows: too few to carve a validation split"
            )
        parts = splits["train"].train_test_split(test_size=cfg.validation_fraction, seed=seed)
        splits["train"], splits["validation"] = parts["train"], parts["test"]
        raw.source["validation"] = f"{cfg.validation_fraction:.0%} of train (seed {seed})"
    limits = {"train": cfg.max_train_samples, "validation": cfg.max_eval_samples}
    limits["test"] = cfg.max_eval_samples
    for split, limit in limits.items():
        if split in splits and limit is not None:
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
    for split, dataset in splits.items():
        if len(dataset) == 0:
            raise FtError(_empty_split(split, raw.source.get(split, split)))
    kind = tasks.get(task.kind)
    labels = kind.label_names(task, cfg, splits["train"], raw.label_names)
    kind.check_labels(labels, task)  # before the other splits' labels are blamed instead
    encoded = {s: kind.encode(cfg, task, tokenizer, ds, labels, s) for s, ds in splits.items()}
    return PreparedData(
        train=encoded["train"],
        validation=encoded.get("validation"),
        test=encoded.get("test"),
        labels=labels,
        source=raw.source,
    )


def _hold_out_fold(
    splits: dict[str, Any], source: dict[str, str], cfg: DataConfig, task: TaskConfig, seed: int
) -> None:
    """data.fold=[k, K]: fold k of the train split becomes the validation split; a given
    validation split becomes the test split (when there is none)."""
    from ft_cli.data import folds

    k, count = cfg.fold  # type: ignore[misc]
    if not 0 <= k < count or count < 2:
        raise FtError(f"data.fold=[{k}, {count}]: give [k, K] with K >= 2 and 0 <= k < K")
    stratify = cfg.label_column if tasks.info(task.kind).targets == "classes" else None
    fold = folds.assignment(splits["train"], count, seed, stratify, cfg.group_column)
    keep, out = folds.held_out(fold, k)
    if "validation" in splits:
        given = splits.pop("validation")
        if "test" not in splits:
            splits["test"], source["test"] = given, source["validation"]
    train = splits["train"]
    splits["train"], splits["validation"] = train.select(keep), train.select(out)
    source["validation"] = f"fold {k} of {count} of train (seed {seed})"


def load_file(path: str, cfg: DataConfig, key: str = "--file") -> Any:
    """One data file as a dataset, its format from its name (GLUE TSVs as the run's)."""
    table = formats.by_suffix(Path(path), key)
    table_files.require_file(path, key)
    _quiet_datasets()
    table.check(Path(path), cfg, key)
    try:
        return table.load(path, cfg)
    except FtError:
        raise
    except Exception as err:
        cause = table_files.root_cause(err)
        raise FtError(f"{key}: cannot read '{path}' as {table.name}: {cause}") from err


def encode_split(
    cfg: DataConfig,
    task: TaskConfig,
    tokenizer: Any,
    dataset: Any,
    labels: list[str] | None,
    split: str,
    source: str | None = None,
) -> EncodedSplit:
    """Check and tokenize one split the way training does (also: eval on a file)."""
    if len(dataset) == 0:
        raise FtError(_empty_split(split, source or split))
    _check_columns(cfg, task, dataset, split, source or split)
    return tasks.get(task.kind).encode(cfg, task, tokenizer, dataset, labels, split)


def _check_columns(
    cfg: DataConfig, task: TaskConfig, dataset: Any, split: str, source: str
) -> None:
    columns = list(dataset.column_names)
    kind = tasks.get(task.kind)
    wanted = kind.input_columns(cfg)
    if kind.uses_labels:
        wanted["data.label_column"] = cfg.label_column
    for key, column in wanted.items():
        if column not in columns:
            if split == "test" and key == "data.label_column":
                continue  # an unlabelled test file is fine
            hint = closest(column, columns) or _delimiter_hint(columns)
            raise FtError(
                f"{key}: column '{column}' is not in the {split} data ({source}){hint};"
                f" its columns are: {', '.join(columns)}"
            )
        if len(dataset):
            kind.check_column(dataset[0][column], key, column, split, source)


def _delimiter_hint(columns: list[str]) -> str:
    """One column whose name holds the other delimiter: the file was read with the wrong one."""
    if len(columns) != 1:
        return ""
    if "," in columns[0]:
        return " (one column named with commas: is the file comma-separated? use data=csv)"
    if "\t" in columns[0]:
        return " (one column named with tabs: is the file tab-separated? use data=tsv)"
    return ""
