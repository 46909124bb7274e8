"""Semantic segmentation: a class per pixel, through transformers' segmentation models
(SegFormer, DPT, UperNet ... `AutoModelForSemanticSegmentation`) and the model's own
image processor.

Images come with masks of class ids (`inputs.masks`): a folder per split holding
`images/` and `masks/` of the same names (`format=maskfolder`), or a table whose
`data.image_column` and `data.mask_column` hold paths relative to it. Every mask is
checked at load against its image's size and the label set. The model's logits are
scaled up to the mask's size (the model's input size) for the loss and the metrics:
mean IoU over the classes present, each class's IoU and pixel accuracy, all from
torchmetrics, `task.ignore_index` left out of each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ft_cli import paths
from ft_cli.config.schema import DataConfig, TaskConfig
from ft_cli.errors import FtError
from ft_cli.inputs import masks
from ft_cli.inputs import pictures as images
from ft_cli.tasks.image_classification import ImageClassification, ImageObjective


class SemanticSegmentation(ImageClassification):
    name = "semantic_segmentation"
    pipeline_tag = "image-segmentation"
    uses_labels = False  # the masks are the labels
    confusion_matrix = False

    def input_columns(self, cfg: DataConfig) -> dict[str, str]:
        return {"data.image_column": cfg.image_column, "data.mask_column": cfg.mask_column}

    report_figures = True  # ft report: the worst validation images with their masks

    def prediction(
        self, logits: Any, labels: list[str] | None, extra: Any, lists: bool
    ) -> dict[str, Any]:
        raise FtError(
            "ft predict with an ensemble of segmentation runs is not built yet; ft eval scores"
            " the ensemble, ft predict one run"
        )

    def ensemble_values(self, logits: torch.Tensor, length: int, width: int) -> torch.Tensor:
        """A row's class probabilities per pixel ([classes, height, width])."""
        return logits.softmax(0)

    def report_figure(self, ready: Any, path: Path, title: str) -> str | None:
        """The validation images of the lowest IoU (the mean over the classes each holds
        or is given), each beside its true and its predicted mask."""
        import numpy as np
        from torchmetrics.functional.classification import multiclass_jaccard_index

        from ft_cli.training import evaluating

        split, labels, ignore = ready.rows, ready.labels, ready.spec.task.ignore_index
        scored = []
        for indices, logits, truth in evaluating.batches(ready):
            guesses = logits.argmax(1).cpu()
            for row, index in enumerate(indices):
                each = multiclass_jaccard_index(
                    guesses[row],
                    truth[row].cpu(),
                    len(labels),
                    average="none",
                    ignore_index=ignore,
                    zero_division=float("nan"),
                )
                iou = float(each.nanmean())
                scored.append((iou, index, truth[row].cpu().numpy(), guesses[row].numpy()))
        worst = sorted(scored, key=lambda item: item[0])[:REPORTED_WORST]
        if not worst:
            return None
        colours = np.array([PALETTE[i % len(PALETTE)] for i in range(len(labels))], np.uint8)
        _mask_sheet(worst, split, colours, ignore, path)
        return f"lowest-IoU images, {title}: image, true mask, predicted mask"

    def settle(self, task: TaskConfig, prepared: Any, key: str = "task.") -> TaskConfig:
        return task  # no class weights: nothing depends on the data

    def predictions(self, predictor: Any, rows: list[dict]) -> list[dict[str, Any]]:
        """Each image's mask at the image's own size (the logits scaled up, then the best
        class per pixel) and each class's share of its pixels. ft predict writes the masks
        as PNGs of class ids into a folder beside its output (`predicted_mask`: the path),
        with `task.overlay` each image with its mask coloured over it too; ft serve
        returns the PNG inline, in base64."""
        from ft_cli.models import outputs

        spec = predictor.spec

        def read(key: str, name: str, keep_lists: bool = False) -> list:
            return predictor._column(rows, key, name, keep_lists)

        split, collate, _ = self.predict_inputs(
            read, predictor.tokenizer, spec.data, predictor.labels, spec.task
        )
        output = predictor.output
        folder = None if output is None else output.with_name(f"{output.stem}.masks")
        found: list[dict[str, Any]] = []
        with torch.no_grad(), predictor.hw.autocast():
            for start in range(0, len(split), predictor.batch):
                indices = list(range(start, min(start + predictor.batch, len(split))))
                batch = collate(indices)
                batch.pop("labels")
                batch = {k: v.to(predictor.hw.device) for k, v in batch.items()}
                logits = outputs.logits_of(predictor.net(**batch)).float().cpu()
                for row, index in enumerate(indices):
                    image = images.open_image(split.images[index])
                    size = (image.height, image.width)
                    scaled = F.interpolate(logits[row : row + 1], size=size, mode="bilinear")
                    ids = scaled[0].argmax(0).numpy()
                    name = f"{predictor.rows_done + index:06d}_{Path(split.name(index)).stem}"
                    found.append(
                        mask_columns(ids, image, predictor.labels, folder, name, spec.task.overlay)
                    )
        predictor.rows_done += len(split)
        return found

    def load_raw(self, cfg: DataConfig) -> Any:
        from ft_cli.data import dataset
        from ft_cli.tasks.image_classification import _base, _generated

        if cfg.format.value != "maskfolder":
            raw = dataset.load_raw(cfg)
            for split, table in list(raw.splits.items()):
                raw.splits[split] = _relative_paths(table, cfg, raw.source[split])
            return raw
        splits, source = {}, {}
        for split in dataset.SPLITS:
            value = getattr(cfg.files, split)
            if value is None:
                continue
            key = f"data.files.{split}"
            root = Path(_generated(paths.resolve_path(value, key, base=_base(cfg))))
            splits[split] = _pairs(root, cfg, key)
            source[split] = str(root)
        if "train" not in splits:
            raise FtError("data.files.train is required: set data.files.train=FOLDER")
        return dataset.RawData(splits, source)

    def label_names(
        self, task: TaskConfig, cfg: DataConfig, train: Any, hub_names: list[str] | None
    ) -> list[str] | None:
        """task.labels, else the class ids the training masks hold, named by their id."""
        if task.labels:
            return [str(label) for label in task.labels]
        split = masks.MaskedSplit(train[cfg.image_column], train[cfg.mask_column])
        found = [i for i in masks.class_ids(split, "data.files.train") if i != task.ignore_index]
        return [str(i) for i in range(max(found, default=0) + 1)]

    def encode(
        self,
        cfg: DataConfig,
        task: TaskConfig,
        tokenizer: Any,
        dataset: Any,
        labels: list[str] | None,
        split: str,
    ) -> Any:
        found = masks.MaskedSplit(
            images.resolve_refs(dataset[cfg.image_column], None, "data.image_column"),
            images.resolve_refs(dataset[cfg.mask_column], None, "data.mask_column"),
        )
        assert labels is not None
        masks.check_masks(found, len(labels), task.ignore_index, f"data.files.{split}")
        return found

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        values, _ = super().head(labels)
        return values, "AutoModelForSemanticSegmentation"

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        processor: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Any:
        return SegmentationObjective(
            net, labels or [], processor, compile_model, label_smoothing, task.ignore_index
        )


# Overlay colours by class id (the background, id 0, is left as it is).
PALETTE = [
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
]


def mask_columns(
    ids: Any, image: Any, labels: list[str], folder: Path | None, name: str, overlay: bool
) -> dict[str, Any]:
    """A predicted mask's columns: the PNG of class ids (a file in `folder`, else inline
    base64) and each class's share of the pixels."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    mask = Image.fromarray(ids.astype(np.uint8 if len(labels) <= 256 else np.uint16))
    counts = np.bincount(ids.reshape(-1), minlength=len(labels)) / ids.size
    shares = {f"share_{label}": float(c) for label, c in zip(labels, counts, strict=True)}
    if folder is None:
        buffer = io.BytesIO()
        mask.save(buffer, format="PNG")
        return {"predicted_mask": base64.b64encode(buffer.getvalue()).decode(), **shares}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    mask.save(path)
    if overlay:
        colours = np.array([PALETTE[i % len(PALETTE)] for i in range(len(labels))], np.uint8)
        painted = np.asarray(image, dtype=np.float32)
        shown = ids > 0
        painted[shown] = 0.5 * painted[shown] + 0.5 * colours[ids[shown]]
        Image.fromarray(painted.astype(np.uint8)).save(folder / f"{name}_overlay.png")
    return {"predicted_mask": str(path), **shares}


REPORTED_WORST = 6  # ft report's rows of worst images


def _mask_sheet(worst: list[Any], split: Any, colours: Any, ignore: int, path: Path) -> None:
    """A row per image: the image, its true mask, its predicted mask (ids in colour; the
    ignored pixels white), titled with its IoU."""
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(len(worst), 3, figsize=(6, 2 * len(worst)), squeeze=False)
    for (iou, index, truth, guess), row in zip(worst, axes, strict=True):
        image = images.open_image(split.images[index]).resize(truth.shape[::-1])
        shown = [np.asarray(image)]
        for ids in (truth, guess):
            painted = colours[np.where(ids == ignore, 0, ids) % len(colours)].copy()
            painted[ids == ignore] = 255
            shown.append(painted)
        for axis, picture, name in zip(row, shown, ("image", "true", "predicted"), strict=True):
            axis.imshow(picture)
            axis.set_axis_off()
            axis.set_title(f"{name} (IoU {iou:.2f})" if name == "image" else name, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _pairs(root: Path, cfg: DataConfig, key: str) -> Any:
    """A split folder's images/ and masks/, matched by file name without its extension."""
    import datasets

    folders = {part: root / part for part in ("images", "masks")}
    for part, folder in folders.items():
        if not folder.is_dir():
            raise FtError(
                f"{key}: '{root}' has no {part}/ folder; a maskfolder split holds images/ and"
                " masks/ of the same file names"
            )
    pictures = {Path(p).stem: p for p in images.list_images(folders["images"])}
    marks = {Path(p).stem: p for p in images.list_images(folders["masks"])}
    alone = sorted(set(pictures) ^ set(marks))
    if alone:
        side = "mask" if alone[0] in pictures else "image"
        raise FtError(
            f"{key}: '{alone[0]}' has no {side} ({len(alone)} file(s) without a partner);"
            " every image needs a mask of the same name"
        )
    names = sorted(pictures)
    return datasets.Dataset.from_dict(
        {cfg.image_column: [pictures[n] for n in names], cfg.mask_column: [marks[n] for n in names]}
    )


def _relative_paths(table: Any, cfg: DataConfig, source: str) -> Any:
    """A table's image and mask paths made absolute (relative to the table's folder); a hub
    table's images and masks kept as their files' bytes."""
    import datasets

    base = Path(source).parent if Path(source).is_file() else None
    for key, column in (
        ("data.image_column", cfg.image_column),
        ("data.mask_column", cfg.mask_column),
    ):
        if column not in table.column_names:
            continue  # the column check names it
        if isinstance(table.features[column], datasets.Image):
            table = table.cast_column(column, datasets.Image(decode=False))
        refs = images.resolve_refs(table[column], base, key, "an image file")
        missing = images.missing_files(refs)
        if missing:
            raise FtError(
                f"{key}: {len(missing)} file(s) do not exist (first: {missing[0]}); paths are"
                " relative to the table's folder"
            )
        table = table.remove_columns(column).add_column(column, refs)
    return table


class SegmentationObjective(ImageObjective):
    """Cross-entropy per pixel; logits scaled up to the masks' size."""

    def __init__(
        self,
        net: nn.Module,
        labels: list[str],
        processor: Any,
        compile_model: bool,
        label_smoothing: float,
        ignore: int,
    ) -> None:
        super().__init__(net, len(labels), processor, compile_model, label_smoothing, None)
        self.labels, self.ignore = labels, ignore

    def collator(self, split: Any, seed: int) -> Any:
        return masks.MaskCollator(split, self.pixels, seed)

    def train_collator(self, split: Any, seed: int) -> Any:
        return masks.MaskCollator(split, self.pixels, seed, self.augmentation, keep_decoded=True)

    def outputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch.pop("labels")
        logits = self.forward(**batch).logits
        scaled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return scaled, labels

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), targets, ignore_index=self.ignore, label_smoothing=self.label_smoothing
        )

    def new_metrics(self, split: Any = None) -> Any:
        return SegmentationMetrics(self.labels, self.ignore)


class SegmentationMetrics:
    """Mean IoU (over the classes the evaluated masks or predictions hold), each class's
    IoU, pixel accuracy and loss; torchmetrics' states, merged across processes."""

    def __init__(self, labels: list[str], ignore: int) -> None:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        count = len(labels)
        self.labels, self.ignore = labels, ignore
        self.iou = MulticlassJaccardIndex(
            count, average="none", ignore_index=ignore, zero_division=float("nan")
        )
        self.accuracy = MulticlassAccuracy(count, average="micro", ignore_index=ignore)
        self.loss_sum, self.count = 0.0, 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.detach().float()
        loss = F.cross_entropy(logits, labels, ignore_index=self.ignore)
        self.loss_sum += float(loss) * len(labels)
        self.count += len(labels)
        guesses, truth = logits.argmax(1).cpu(), labels.cpu()
        self.iou.update(guesses, truth)
        self.accuracy.update(guesses, truth)

    def merge(self, others: list[SegmentationMetrics]) -> SegmentationMetrics:
        for other in others:
            self.iou.merge_state(other.iou)
            self.accuracy.merge_state(other.accuracy)
            self.loss_sum += other.loss_sum
            self.count += other.count
        return self

    def compute(self) -> dict[str, float]:
        each = self.iou.compute()
        scores = {
            "mean_iou": float(each.nanmean()),
            "pixel_accuracy": float(self.accuracy.compute()),
            "loss": self.loss_sum / max(self.count, 1),
        }
        for name, value in zip(self.labels, each.tolist(), strict=True):
            if value == value:  # a class neither present nor predicted has no IoU
                scores[f"iou_{name}"] = value
        return scores


TASK = SemanticSegmentation()
