"""Boxes beside images (object detection): reading the annotations, checking them, and
the batches that move every box with its image.

Annotations come as a COCO JSON file per split (`format=coco`: `images`,
`annotations` with `bbox` as [x, y, width, height], `categories`; each image's
`file_name` relative to the file's folder or to `images/` beside it), or as a
table: one row per box (columns `x_min, y_min, x_max, y_max`, or `x, y, width,
height`, or `center_x, center_y, width, height`, in pixels, beside the image and
the label), or one row per image whose `data.objects_column` holds `bbox` and
`category` lists (the hub's detection sets; `data.box_format` says how a bbox
reads). Every source becomes one table: a row per image with its boxes (xyxy
pixels, `boxes.py`) and their labels.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ft_cli.errors import FtError
from ft_cli.inputs import boxes as geometry
from ft_cli.inputs import pictures
from ft_cli.inputs.pictures import ImageRef

BOXES, LABELS = "boxes", "box_labels"  # the columns every source is read into
# The columns of a table with a box per row, by the box format they spell.
BOX_COLUMNS = {
    "xyxy": ("x_min", "y_min", "x_max", "y_max"),
    "xywh": ("x", "y", "width", "height"),
    "cxcywh": ("center_x", "center_y", "width", "height"),
}


def read_coco(path: Path, key: str) -> tuple[dict[str, list], list[str]]:
    """({image paths, xyxy boxes, labels} a row per image, the category names by id)."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FtError(f"{key}: cannot read '{path}' as COCO JSON ({err})") from None
    if not isinstance(found, dict) or not found.get("images"):
        raise FtError(
            f"{key}: '{path}' has no \"images\" list; COCO JSON lists each image (id,"
            ' file_name) under "images" and its boxes under "annotations"'
        )
    categories = {c["id"]: str(c.get("name", c["id"])) for c in found.get("categories", [])}
    if not categories:
        raise FtError(f"{key}: '{path}' has no \"categories\"; list each class as {{id, name}}")
    rows: dict[int, int] = {}
    table: dict[str, list] = {"image": [], BOXES: [], LABELS: []}
    for image in found["images"]:
        rows[image["id"]] = len(table["image"])
        table["image"].append(_image_path(path, str(image["file_name"]), key))
        table[BOXES].append([])
        table[LABELS].append([])
    for number, note in enumerate(found.get("annotations", [])):
        where = f"{key}: '{path}' annotation {note.get('id', number)}"
        if note.get("image_id") not in rows:
            raise FtError(f'{where} names image_id {note.get("image_id")!r}, not in "images"')
        if note.get("category_id") not in categories:
            raise FtError(
                f'{where} has category_id {note.get("category_id")!r}, not in "categories"'
                f" ({', '.join(map(str, sorted(categories)))})"
            )
        row = rows[note["image_id"]]
        table[BOXES][row].append(_box(note.get("bbox"), "xywh", where).tolist())
        table[LABELS][row].append(categories[note["category_id"]])
    return table, [categories[i] for i in sorted(categories)]


def _image_path(source: Path, name: str, key: str) -> str:
    for folder in (source.parent, source.parent / "images"):
        if (folder / name).is_file():
            return str(folder / name)
    raise FtError(
        f"{key}: image '{name}' of '{source}' is neither beside it nor in its images/ folder"
    )


def _box(values: Any, fmt: str, where: str) -> np.ndarray:
    """One box as xyxy; one line if it is not four numbers."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
        raise FtError(f"{where}: bbox {values!r} is not four numbers ({fmt})")
    return geometry.to_xyxy(np.array(numbers), fmt)[0]


def from_box_rows(table: Any, image_column: str, label_column: str, key: str) -> dict[str, list]:
    """A table of a box per row grouped into a row per image (first-seen order); a row with
    empty box cells is an image without objects."""
    fmt = next(
        (f for f, names in BOX_COLUMNS.items() if set(names) <= set(table.column_names)), None
    )
    if fmt is None:
        spelled = "; ".join(", ".join(names) for names in BOX_COLUMNS.values())
        raise FtError(
            f"{key}: no box columns; give each box as one of: {spelled} (pixels), or a row per"
            " image with data.objects_column"
        )
    if label_column not in table.column_names:
        raise FtError(f"{key}: no column '{label_column}' (data.label_column) naming each box")
    corners = list(zip(*(table[name] for name in BOX_COLUMNS[fmt]), strict=True))
    rows: dict[Any, int] = {}
    grouped: dict[str, list] = {"image": [], BOXES: [], LABELS: []}
    for number, (image, label, values) in enumerate(
        zip(table[image_column], table[label_column], corners, strict=True)
    ):
        identity = image if isinstance(image, str) else hashlib.sha1(image).hexdigest()
        if identity not in rows:
            rows[identity] = len(grouped["image"])
            for name, value in (("image", image), (BOXES, []), (LABELS, [])):
                grouped[name].append(value)
        if all(v is None or v == "" or v != v for v in values):
            continue  # an image listed without objects
        row = rows[identity]
        grouped[BOXES][row].append(_box(values, fmt, f"{key}: row {number + 1}").tolist())
        grouped[LABELS][row].append(str(label))
    return grouped


def from_objects(table: Any, image_column: str, column: str, fmt: str, key: str) -> dict[str, list]:
    """A row per image whose `column` holds {bbox: [...], category: [...]} (or a list of
    such objects, one each)."""
    grouped: dict[str, list] = {"image": list(table[image_column]), BOXES: [], LABELS: []}
    for number, objects in enumerate(table[column]):
        where = f"{key}: row {number + 1}, {column}"
        if isinstance(objects, list):  # [{bbox, category}, ...]
            objects = {
                "bbox": [o.get("bbox") for o in objects],
                "category": [o.get("category") for o in objects],
            }
        if not isinstance(objects, dict) or "bbox" not in objects or "category" not in objects:
            raise FtError(f"{where}: holds no bbox and category lists ({{bbox: [[...]], ...}})")
        if len(objects["bbox"]) != len(objects["category"]):
            raise FtError(f"{where}: {len(objects['bbox'])} boxes but {len(objects['category'])}")
        grouped[BOXES].append([_box(b, fmt, where).tolist() for b in objects["bbox"]])
        grouped[LABELS].append([str(c) for c in objects["category"]])
    return grouped


def class_targets(values: list[list[str]], labels: list[str], key: str) -> list[np.ndarray]:
    """Each image's box labels as class ids: a label's name, or its id as a number."""
    index = {name: i for i, name in enumerate(labels)}
    found = []
    for number, row in enumerate(values):
        ids = []
        for value in row:
            if value in index:
                ids.append(index[value])
            elif value.isdigit() and int(value) < len(labels):
                ids.append(int(value))
            else:
                shown = ", ".join(labels[:6]) + (", ..." if len(labels) > 6 else "")
                raise FtError(
                    f"{key}: image {number + 1} has a box of class '{value}', not one of the"
                    f" {len(labels)} classes ({shown}); fix the annotation or list every class"
                    " in task.labels"
                )
        found.append(np.array(ids, dtype=np.int64))
    return found


@dataclass
class BoxedSplit(pictures.ImageRows):
    """One split of images with their boxes (xyxy pixels) and class ids."""

    images: list[ImageRef]
    boxes: list[np.ndarray]
    classes: list[np.ndarray]

    def update_digest(self, digest: Any) -> None:
        """Feed the split's identity to a hash (resume refuses changed data)."""
        for ref, box, ids in zip(self.images, self.boxes, self.classes, strict=True):
            digest.update(ref.encode() if isinstance(ref, str) else hashlib.sha1(ref).digest())
            digest.update(np.ascontiguousarray(box, dtype=np.float64).tobytes())
            digest.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())


def check_boxes(split: BoxedSplit, key: str) -> None:
    """Every box inside its image (a pixel of slack, then clipped to it); one line names
    the first image whose box is empty or reaches outside."""
    for index, ref in enumerate(split.images):
        if not len(split.boxes[index]):
            continue
        width, height = pictures.open_image(ref, mode=None).size  # the header, no decoding
        found = geometry.outside(split.boxes[index], width, height)
        if found is not None:
            box = ", ".join(f"{v:g}" for v in split.boxes[index][found])
            raise FtError(
                f"{key}: box {found + 1} of {split.name(index)}, [{box}] (x_min, y_min, x_max,"
                f" y_max), is empty or outside the {width}x{height} image; fix the annotation"
            )
        split.boxes[index] = np.clip(split.boxes[index], 0, [width, height] * 2)


class BoxCollator(pictures.ImageCollator):
    """Row indices in; `pixel_values` and the targets as tensors out: `box_classes`
    [rows, most boxes] (-1: no box), `box_targets` [rows, most boxes, 4] (the model's
    cxcywh fractions) and `image_sizes` [rows, 2] (height, width before resizing).
    With an `augmentation`, each image is cropped and flipped, its boxes with it."""

    split: BoxedSplit  # type: ignore[assignment]

    def augmented_boxes(
        self, image: Any, boxes: np.ndarray, classes: np.ndarray, row: int
    ) -> tuple[Any, np.ndarray, np.ndarray]:
        from PIL import Image

        from ft_cli import augment

        assert self.augmentation is not None
        if self.augmentation.crop_scale is not None:
            rng = augment.draws(self.seed, self.epoch, row, "crop")
            window = pictures.crop_box(*image.size, self.augmentation.crop_scale, rng)
            image = image.crop(window)
            boxes, classes = geometry.crop(boxes, classes, window)
        flip = augment.draws(self.seed, self.epoch, row, "flip")
        if self.augmentation.flip and flip.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            boxes = geometry.flip(boxes, image.width)
        return image, boxes, classes

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        images, targets, sizes = [], [], []
        for index in indices:
            image = self.load(index)
            sizes.append((image.height, image.width))
            boxes, classes = self.split.boxes[index], self.split.classes[index]
            if self.augmentation is not None:
                image, boxes, classes = self.augmented_boxes(image, boxes, classes, index)
            targets.append((geometry.to_model(boxes, *image.size), classes))
            images.append(image)
        most = max((len(c) for _, c in targets), default=0)
        box_targets = torch.zeros(len(indices), most, 4)
        box_classes = torch.full((len(indices), most), -1, dtype=torch.long)
        for row, (boxes, classes) in enumerate(targets):
            box_targets[row, : len(classes)] = torch.from_numpy(boxes).float()
            box_classes[row, : len(classes)] = torch.from_numpy(classes)
        return {
            "pixel_values": self.pixels.resized(images),
            "box_classes": box_classes,
            "box_targets": box_targets,
            "image_sizes": torch.tensor(sizes, dtype=torch.long),
        }
