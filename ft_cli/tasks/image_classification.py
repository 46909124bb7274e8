"""Image classification: one class per image, through transformers' image classifiers
(ViT, ResNet, ConvNeXt, ...) and the model's own image processor.

Images come from a folder tree (`format=imagefolder`: `<split folder>/<label>/<file>`),
from a table whose `data.image_column` holds paths relative to the table, or
from a hub image dataset. Every image is checked once when the data is loaded;
unreadable ones are left out with a counted warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ft_cli import paths
from ft_cli.config.schema import DataConfig, DataFormat, TaskConfig
from ft_cli.errors import FtError
from ft_cli.inputs import pictures as images
from ft_cli.tasks.classification import Classification
from ft_cli.tasks.objective import Objective


class ImageClassification(Classification):
    name = "image_classification"
    pipeline_tag = "image-classification"
    # An ImageNet classifier's 1000-class head gives way to a new one of the task's size.
    replaces_head = True
    # What a row's file is: its column's key, the file names kept from a folder, what
    # messages call them, and why one cannot be read (None: it can).
    column_key = "data.image_column"
    extensions = images.EXTENSIONS
    noun = "image"
    a_file = "an image file"

    def column(self, cfg: DataConfig) -> str:
        return cfg.image_column

    def unreadable(self, ref: Any) -> str | None:
        return images.unreadable(ref)

    def list_folders(self, root: Path, key: str) -> tuple[list[str], list[str]]:
        """(file paths, labels) of a folder of class folders."""
        return images.list_class_folders(root, key, self.extensions, f"{self.noun}s")

    def load_raw(self, cfg: DataConfig) -> Any:
        from ft_cli.data import dataset

        if cfg.format.value == "maskfolder":
            raise FtError(
                f"data.format=maskfolder holds images with masks: task={self.name} reads a"
                " folder of class folders (data.format=imagefolder); for masks use"
                " task=semantic_segmentation"
            )
        if cfg.format.value.endswith("folder"):
            raw = _load_folders(self, cfg)
        else:
            raw = dataset.load_raw(cfg)
            _resolve_paths(self, raw, cfg)
        for split, table in list(raw.splits.items()):
            raw.splits[split] = _readable_rows(self, table, cfg, f"data.files.{split}")
        return raw

    def load_file(self, path: str, cfg: DataConfig) -> Any:
        """A folder of class folders, or a table of image paths relative to it."""
        import dataclasses

        from ft_cli.data import dataset

        if Path(path).is_dir():
            found, labels = self.list_folders(Path(path), "--file")
            table = _table(self, cfg, found, labels)
        else:
            table = dataset.load_file(path, cfg)
            raw = dataset.RawData({"file": table}, {"file": path})
            _resolve_paths(self, raw, dataclasses.replace(cfg, format=DataFormat.csv))
            table = raw.splits["file"]
        return _readable_rows(self, table, cfg, "--file")

    def encode(
        self,
        cfg: DataConfig,
        task: TaskConfig,
        tokenizer: Any,
        dataset: Any,
        labels: list[str] | None,
        split: str,
    ) -> Any:
        refs = images.resolve_refs(dataset[self.column(cfg)], None, self.column_key)
        if cfg.label_column not in dataset.column_names:
            return self.split_of(refs, [-1] * len(refs), cfg, split)  # predictions only
        targets = self.targets(dataset[cfg.label_column], labels, split, cfg.label_column)
        if split != "train" and labels and self.confusion_matrix:  # a class per row
            present = set(targets)
            absent = [name for i, name in enumerate(labels) if i not in present]
            if absent:
                images.warn(
                    f"the {split} split has no {self.noun}s of {len(absent)} class(es):"
                    f" {', '.join(absent[:5])}{', ...' if len(absent) > 5 else ''}; their"
                    " recall and F1 are not measured"
                )
        return self.split_of(refs, targets, cfg, split)

    def split_of(self, refs: list[Any], targets: list[Any], cfg: DataConfig, split: str) -> Any:
        """A split of these files and their targets."""
        return images.ImageSplit(refs, targets)

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        values, _ = super().head(labels)
        return values, "AutoModelForImageClassification"

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        processor: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Any:
        return ImageObjective(
            net, len(labels or []), processor, compile_model, label_smoothing, task.class_weights
        )

    def predict_inputs(
        self,
        read: Any,
        processor: Any,
        cfg: DataConfig,
        labels: list[str] | None,
        task: TaskConfig | None = None,
    ) -> tuple[Any, Any, Any]:
        base = Path(cfg.path) if cfg.path else None
        # Cells as they are: paths, or file bytes (a served request, a hub table's cells).
        cells = read(self.column_key, self.column(cfg), keep_lists=True)
        refs = images.resolve_refs(cells, base, self.column_key, self.a_file)
        for index, ref in enumerate(refs):
            why = "no such file" if images.missing_files([ref]) else self.unreadable(ref)
            if why is not None:
                raise FtError(f"--input: {self.noun} {index + 1}, '{ref}', cannot be read: {why}")
        return self.predicted(refs, processor, cfg)

    def predicted(self, refs: list[Any], processor: Any, cfg: DataConfig) -> tuple[Any, Any, Any]:
        """(the split of files to predict, its collator, what each entry's prediction needs)."""
        split = images.ImageSplit(refs, [0] * len(refs))
        return split, images.ImageCollator(split, images.Pixels(processor)), None


class ImageObjective(Objective):
    """Cross-entropy on images: batches decoded by worker processes; training ones augmented."""

    def __init__(
        self,
        net: nn.Module,
        num_labels: int,
        processor: Any,
        compile_model: bool,
        label_smoothing: float,
        class_weights: Any,
    ) -> None:
        super().__init__(
            net, "classification", num_labels, 0, compile_model, label_smoothing, class_weights
        )
        self.pixels = images.Pixels(processor)
        self.augmentation: images.Augmentation | None = None
        self.workers = 0

    def configure(self, cfg: DataConfig) -> None:
        """The data settings of training batches (augmentation, decoding processes)."""
        crop = tuple(cfg.image_crop) if cfg.image_crop is not None else None
        self.augmentation = images.Augmentation(crop, cfg.image_flip)  # type: ignore[arg-type]
        self.workers = images.loader_workers(cfg.image_workers)

    def collator(self, split: Any, seed: int) -> Any:
        return images.ImageCollator(split, self.pixels, seed)

    def count(self, batch: Any) -> tuple[int, int, int]:
        return len(batch["pixel_values"]), 0, 0  # no tokens, no padding

    smaller_inputs = "use smaller images"

    def input_shape(self, batch: Any) -> str:
        channels, height, width = batch["pixel_values"].shape[1:]
        return f"images of {channels}x{height}x{width}"

    def train_collator(self, split: Any, seed: int) -> Any:
        return images.ImageCollator(split, self.pixels, seed, self.augmentation, keep_decoded=True)

    def train_loader(
        self,
        split: Any,
        collate: Any,
        batch_size: int,
        seed: int,
        group_by_length: bool,
        rank: int,
        world: int,
    ) -> tuple[Any, Any]:
        from ft_cli.data import batching

        return batching.train_loader(
            split, batch_size, seed, collate, False, rank, world, self.workers
        )

    def eval_loader(
        self, split: Any, collate: Any, batch_size: int, rank: int, world: int, even: bool
    ) -> Any:
        from ft_cli.data import batching

        return batching.eval_loader(split, batch_size, collate, rank, world, even, self.workers)


def _load_folders(task: ImageClassification, cfg: DataConfig) -> Any:
    """Each split from its folder of class folders."""
    from ft_cli.data import dataset

    splits, source = {}, {}
    for split in dataset.SPLITS:
        value = getattr(cfg.files, split)
        if value is None:
            continue
        key = f"data.files.{split}"
        root = Path(_generated(paths.resolve_path(value, key, base=_base(cfg))))
        found, labels = task.list_folders(root, key)
        splits[split] = _table(task, cfg, found, labels)
        source[split] = str(root)
    if "train" not in splits:
        raise FtError("data.files.train is required: set data.files.train=FOLDER")
    return dataset.RawData(splits, source)


def _table(task: ImageClassification, cfg: DataConfig, found: list[str], labels: list[str]) -> Any:
    import datasets

    return datasets.Dataset.from_dict({task.column(cfg): found, cfg.label_column: labels})


def _base(cfg: DataConfig) -> str | None:
    return _generated(paths.resolve_path(cfg.path, "data.path")) if cfg.path else None


def _generated(path: str) -> str:
    """`generated:NAME` is a data set ft makes itself (the demo shapes and sounds), made on
    first use."""
    if not path.startswith("generated:"):
        return path
    from ft_cli import assets

    return str(assets.generated(path.removeprefix("generated:")))


def _resolve_paths(task: ImageClassification, raw: Any, cfg: DataConfig) -> None:
    """File paths in a table are relative to the table's own folder."""
    import datasets

    column = task.column(cfg)
    for split, table in list(raw.splits.items()):
        key = f"{task.column_key} ({raw.source[split]})"
        if column not in table.column_names:
            continue  # the column check names it
        feature = table.features[column]
        if isinstance(feature, (datasets.Image, datasets.Audio)):
            table = table.cast_column(column, type(feature)(decode=False))
        source = Path(raw.source[split])
        base = source.parent if source.is_file() else None
        refs = images.resolve_refs(table[column], base, key, task.a_file)
        missing = images.missing_files(refs)
        if missing:
            raise FtError(
                f"{key}: {len(missing)} {task.a_file.split(' ', 1)[1]}(s) do not exist (first:"
                f" {missing[0]}); paths are relative to the table's folder"
            )
        table = table.remove_columns(column).add_column(column, refs)
        raw.splits[split] = table


def _readable_rows(task: ImageClassification, table: Any, cfg: DataConfig, key: str) -> Any:
    """The rows whose file can be read; the others counted in one warning."""
    column = task.column(cfg)
    if column not in table.column_names:
        return table
    refs = images.resolve_refs(table[column], None, key)
    names = [r if isinstance(r, str) else f"row {i}" for i, r in enumerate(refs)]
    keep = images.readable(refs, names, key, task.unreadable, task.noun)
    return table if len(keep) == len(refs) else table.select(keep)


TASK = ImageClassification()
