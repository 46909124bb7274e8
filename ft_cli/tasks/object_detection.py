"""Object detection: boxes and their classes, through transformers' detection models (DETR,
Conditional/Deformable DETR, YOLOS, RT-DETR ... `AutoModelForObjectDetection`) and the
model's own image processor, which also turns its outputs into boxes.

Annotations (`inputs.box_annotations`): COCO JSON (`format=coco`), a table of a box
per row, or a row per image with its objects. Every box is checked against its
image at load. Images go to the model's input size whole (boxes as fractions of
the image do not move); training crops and flips move each box with its image and
drop those the crop leaves. The model computes its own set loss (the Hungarian
matching of DETR-style models); the metrics are COCO's mAP (`box_metrics`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ft_cli import paths
from ft_cli.config.schema import DataConfig, TaskConfig
from ft_cli.errors import FtError
from ft_cli.inputs import box_annotations as annotations
from ft_cli.inputs import pictures as images
from ft_cli.tasks import box_metrics
from ft_cli.tasks.image_classification import ImageClassification, ImageObjective


class ObjectDetection(ImageClassification):
    name = "object_detection"
    pipeline_tag = "object-detection"
    uses_labels = False  # the boxes carry the labels
    confusion_matrix = False
    exportable = False
    not_exported = (
        "the graph torch.onnx makes of RT-DETR finds other boxes than torch, its top-k query"
        " selection does not survive export; serve the run with ft serve"
    )

    report_figures = True  # ft report: the validation images found worst, boxes drawn

    def input_columns(self, cfg: DataConfig) -> dict[str, str]:
        return {"data.image_column": cfg.image_column}

    def report_figure(self, ready: Any, path: Path, title: str) -> str | None:
        """The validation images of the lowest mAP@50 (each image scored alone), their
        true boxes in white, the boxes found (scored task.score_threshold or more) in
        colour."""
        from ft_cli.training import evaluating

        split, labels = ready.rows, ready.labels
        scored = []
        for indices, outputs, targets in evaluating.batches(ready):
            scores = box_metrics.DetectionMetrics(labels, ready.objective.processor)
            scores.update(outputs, targets)
            for index, found, true in zip(indices, scores.found, scores.truth, strict=True):
                alone = box_metrics.mean_average_precision([found], [true], labels)
                scored.append((alone["map_50"], index, found, true))
        worst = sorted(scored, key=lambda item: item[0])[:REPORTED_WORST]
        if not worst:
            return None
        _box_sheet(worst, split, labels, ready.spec.task.score_threshold, path)
        return f"lowest-mAP@50 images, {title}: true boxes white, found boxes coloured"

    def prediction(
        self, logits: Any, labels: list[str] | None, extra: Any, lists: bool
    ) -> dict[str, Any]:
        raise FtError(
            "task=object_detection has no ensembles: boxes of several models do not average;"
            " train and serve one run"
        )

    def settle(self, task: TaskConfig, prepared: Any, key: str = "task.") -> TaskConfig:
        return task  # no class weights: nothing depends on the data

    def load_raw(self, cfg: DataConfig) -> Any:
        from ft_cli.data import dataset
        from ft_cli.tasks.image_classification import _base, _generated, _readable_rows

        if cfg.format.value == "coco":
            splits, source = {}, {}
            for split in dataset.SPLITS:
                value = getattr(cfg.files, split)
                if value is None:
                    continue
                key = f"data.files.{split}"
                path = Path(_generated(paths.resolve_path(value, key, base=_base(cfg))))
                found, names = annotations.read_coco(path, key)
                splits[split] = _table(found, cfg, names)
                source[split] = str(path)
            if "train" not in splits:
                raise FtError("data.files.train is required: set data.files.train=FILE.json")
            raw = dataset.RawData(splits, source)
        elif cfg.format.value.endswith("folder"):
            raise FtError(
                f"data.format={cfg.format.value}: task=object_detection reads boxes from COCO"
                " JSON (data.format=coco) or a table (csv, json, parquet, hub)"
            )
        else:
            raw = dataset.load_raw(cfg)
            from ft_cli.tasks.image_classification import _resolve_paths

            _resolve_paths(self, raw, cfg)
            for split, table in list(raw.splits.items()):
                raw.splits[split] = _grouped(
                    table, cfg, f"data.files.{split} ({raw.source[split]})"
                )
        for split, table in list(raw.splits.items()):
            raw.splits[split] = _readable_rows(self, table, cfg, f"data.files.{split}")
        return raw

    def label_names(
        self, task: TaskConfig, cfg: DataConfig, train: Any, hub_names: list[str] | None
    ) -> list[str] | None:
        """task.labels; else the annotations' categories; else the box labels of the
        training images, sorted (as numbers when they are)."""
        if task.labels:
            return [str(label) for label in task.labels]
        feature = train.features[annotations.LABELS].feature
        if hasattr(feature, "names"):
            return list(feature.names)
        found = {label for row in train[annotations.LABELS] for label in row}
        if not found:
            raise FtError("data.files.train: no image has a box; detection learns from boxes")
        numeric = all(label.isdigit() for label in found)
        return sorted(found, key=lambda label: (int(label) if numeric else 0, label))

    def encode(
        self,
        cfg: DataConfig,
        task: TaskConfig,
        tokenizer: Any,
        dataset: Any,
        labels: list[str] | None,
        split: str,
    ) -> Any:
        assert labels is not None
        key = f"data.files.{split}"
        values = [[str(v) for v in row] for row in dataset[annotations.LABELS]]
        feature = dataset.features[annotations.LABELS].feature
        if hasattr(feature, "names"):  # class ids into the annotations' own categories
            values = [[feature.names[int(v)] for v in row] for row in values]
        found = annotations.BoxedSplit(
            images.resolve_refs(dataset[cfg.image_column], None, "data.image_column"),
            [np.array(b, dtype=np.float64).reshape(-1, 4) for b in dataset[annotations.BOXES]],
            annotations.class_targets(values, labels, key),
        )
        annotations.check_boxes(found, key)
        return found

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        values, _ = super().head(labels)
        return values, "AutoModelForObjectDetection"

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        processor: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Any:
        return DetectionObjective(net, labels or [], processor, compile_model)

    def predicted(self, refs: list[Any], processor: Any, cfg: DataConfig) -> tuple[Any, Any, Any]:
        nothing = [np.zeros((0, 4))] * len(refs)
        split = annotations.BoxedSplit(refs, nothing, [np.zeros(0, np.int64)] * len(refs))
        return split, annotations.BoxCollator(split, images.Pixels(processor)), None

    def predictions(self, predictor: Any, rows: list[dict]) -> list[dict[str, Any]]:
        """Each image's boxes scored at least task.score_threshold, in its own pixels:
        `objects` (label, score, box [x_min, y_min, x_max, y_max]) and `count`. ft predict
        with task.overlay also draws them into a folder beside its output."""
        spec = predictor.spec

        def read(key: str, name: str, keep_lists: bool = False) -> list:
            return predictor._column(rows, key, name, keep_lists)

        split, collate, _ = self.predict_inputs(
            read, predictor.tokenizer, spec.data, predictor.labels, spec.task
        )
        output = predictor.output
        drawn = None
        if output is not None and spec.task.overlay:
            drawn = output.with_name(f"{output.stem}.boxes")
        found: list[dict[str, Any]] = []
        with torch.no_grad(), predictor.hw.autocast():
            for start in range(0, len(split), predictor.batch):
                indices = list(range(start, min(start + predictor.batch, len(split))))
                batch = collate(indices)
                pixels = batch["pixel_values"].to(predictor.hw.device)
                out = predictor.net(pixel_values=pixels)
                detections = box_metrics.detected(
                    predictor.tokenizer,
                    out.logits,
                    out.pred_boxes,
                    batch["image_sizes"],
                    spec.task.score_threshold,
                )
                for index, boxes in zip(indices, detections, strict=True):
                    columns = object_columns(boxes, predictor.labels, predictor.lists)
                    if drawn is not None:
                        name = f"{predictor.rows_done + index:06d}_{Path(split.name(index)).stem}"
                        columns["drawn_image"] = draw(
                            split.images[index], boxes, predictor.labels, drawn / f"{name}.png"
                        )
                    found.append(columns)
        predictor.rows_done += len(split)
        return found


def object_columns(found: box_metrics.Detections, labels: list[str], lists: bool) -> dict[str, Any]:
    """A prediction's columns: its objects, best first, and how many (`lists`: the output
    holds lists; else the objects as one JSON text)."""
    import json

    assert found.scores is not None
    order = np.argsort(-found.scores, kind="stable")
    objects = [
        {
            "label": labels[int(found.classes[i])],
            "score": round(float(found.scores[i]), 6),
            "box": [round(float(v), 2) for v in found.boxes[i]],
        }
        for i in order
    ]
    return {"objects": objects if lists else json.dumps(objects), "count": len(objects)}


def draw(ref: Any, found: box_metrics.Detections, labels: list[str], path: Path) -> str:
    """The image with its boxes and their labels drawn, saved to `path`."""
    image = _drawn(images.open_image(ref), found, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return str(path)


def _drawn(image: Any, found: box_metrics.Detections, labels: list[str]) -> Any:
    """The image with the boxes found drawn in their class's colour, labelled and scored."""
    from PIL import ImageDraw

    from ft_cli.tasks.semantic_segmentation import PALETTE

    pen = ImageDraw.Draw(image)
    assert found.scores is not None
    for box, label, score in zip(found.boxes, found.classes, found.scores, strict=True):
        colour = PALETTE[1 + int(label) % (len(PALETTE) - 1)]
        pen.rectangle([float(v) for v in box], outline=colour, width=max(1, image.width // 200))
        if image.width >= SMALLEST_LABELLED:
            text = f"{labels[int(label)]} {score:.2f}"
            pen.text((float(box[0]) + 2, float(box[1]) + 1), text, fill=colour)
    return image


REPORTED_WORST = 6  # ft report's worst images
SMALLEST_LABELLED = 160  # narrower images get coloured boxes alone (the text would hide them)


def _box_sheet(
    worst: list[Any], split: Any, labels: list[str], threshold: float, path: Path
) -> None:
    """A sheet of images with their true boxes (white) and those found (coloured)."""
    import matplotlib.pyplot as plt
    from PIL import ImageDraw

    columns = min(3, len(worst))
    lines = -(-len(worst) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(3 * columns, 3.2 * lines), squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    for axis, (score, index, found, true) in zip(axes.flat, worst, strict=False):
        image = images.open_image(split.images[index])
        pen = ImageDraw.Draw(image)
        for box in true.boxes:
            pen.rectangle([float(v) for v in box], outline=(255, 255, 255))
        kept = found.scores >= threshold
        shown = box_metrics.Detections(found.boxes[kept], found.classes[kept], found.scores[kept])
        axis.imshow(_drawn(image, shown, labels))
        axis.set_title(f"{Path(split.name(index)).name}: mAP@50 {score:.2f}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _table(found: dict[str, list], cfg: DataConfig, names: list[str] | None = None) -> Any:
    """A split as ft reads it: a row per image, its boxes (xyxy pixels) and their labels
    (ids into `names` when the annotations name their categories)."""
    import datasets

    if names is not None:
        index = {name: i for i, name in enumerate(names)}
        found = {
            **found,
            annotations.LABELS: [[index[v] for v in row] for row in found[annotations.LABELS]],
        }
        label = datasets.ClassLabel(names=names)
    else:
        label = datasets.Value("string")
    refs = found["image"]
    kind = "binary" if refs and isinstance(refs[0], bytes) else "string"
    features = datasets.Features(
        {
            cfg.image_column: datasets.Value(kind),
            annotations.BOXES: datasets.List(datasets.List(datasets.Value("float64"))),
            annotations.LABELS: datasets.List(label),
        }
    )
    return datasets.Dataset.from_dict(
        {
            cfg.image_column: refs,
            annotations.BOXES: found[annotations.BOXES],
            annotations.LABELS: found[annotations.LABELS],
        },
        features=features,
    )


def _grouped(table: Any, cfg: DataConfig, key: str) -> Any:
    """A table's boxes, a row per image: from data.objects_column, else a box per row."""
    if cfg.image_column not in table.column_names:
        return table  # the column check names it
    if cfg.objects_column in table.column_names:
        feature = table.features[cfg.objects_column]
        category = feature.get("category") if isinstance(feature, dict) else None
        names = getattr(getattr(category, "feature", None), "names", None)
        found = annotations.from_objects(
            table, cfg.image_column, cfg.objects_column, cfg.box_format.value, key
        )
        if names:  # the hub's class ids, named by its ClassLabel
            found[annotations.LABELS] = [
                [names[int(v)] for v in row] for row in found[annotations.LABELS]
            ]
        return _table(found, cfg, names)
    return _table(annotations.from_box_rows(table, cfg.image_column, cfg.label_column, key), cfg)


class DetectionObjective(ImageObjective):
    """The model's own set loss (it matches predicted boxes to true ones); COCO mAP."""

    def __init__(
        self, net: nn.Module, labels: list[str], processor: Any, compile_model: bool
    ) -> None:
        super().__init__(net, len(labels), processor, compile_model, 0.0, None)
        self.labels, self.processor = labels, processor
        for package in ("faster_coco_eval", "scipy"):
            if importlib.util.find_spec(package) is None:
                raise FtError(
                    f"task=object_detection needs {package.replace('_', '-')} (mAP, box"
                    " matching): pip install 'ft-cli[detection]'"
                )

    def collator(self, split: Any, seed: int) -> Any:
        return annotations.BoxCollator(split, self.pixels, seed)

    def train_collator(self, split: Any, seed: int) -> Any:
        return annotations.BoxCollator(
            split, self.pixels, seed, self.augmentation, keep_decoded=True
        )

    def outputs(self, batch: Any) -> tuple[Any, Any]:
        """((loss, class logits, boxes), (true class ids, true boxes, image sizes))."""
        classes, boxes = batch.pop("box_classes"), batch.pop("box_targets")
        sizes = batch.pop("image_sizes")
        labels = [
            {"class_labels": ids[ids >= 0], "boxes": own[ids >= 0].float()}
            for ids, own in zip(classes, boxes, strict=True)
        ]
        out = self.forward(pixel_values=batch["pixel_values"], labels=labels)
        return (out.loss, out.logits, out.pred_boxes), (classes, boxes, sizes)

    def loss(self, predictions: Any, targets: Any) -> torch.Tensor:
        return predictions[0].float()

    def new_metrics(self, split: Any = None) -> Any:
        return box_metrics.DetectionMetrics(self.labels, self.processor)


TASK = ObjectDetection()
