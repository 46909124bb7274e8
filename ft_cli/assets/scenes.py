"""The demo scenes: several shapes on a noisy background, with their exact masks or boxes,
drawn by ft itself.

`ensure("scenes")` returns a folder `train/images/*.png`, `train/masks/*.png`,
`validation/...` in ft's cache, drawing it on first use. A mask's pixel is the id of
the class it shows (`CLASSES`: 0 is the background); the shapes are drawn into the
image and the mask with the same call, so the mask is exact, overlaps included (a
later shape covers an earlier one in both). `ensure("boxed_scenes")`: one to three
shapes that do not overlap, each with its exact box, in COCO JSON
(`train/annotations.json` beside `train/images/`). Every scene is a pure function
of its split and index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ft_cli.assets.shapes import made

SETS = {
    "scenes": {"size": 64, "train": 400, "validation": 80},
    "boxed_scenes": {"size": 64, "train": 400, "validation": 80},
}
CLASSES = ("background", "circle", "square", "triangle")
VERSION = 1  # bump when the drawing changes


def ensure(name: str) -> Path:
    writer = write_boxed if name == "boxed_scenes" else write
    return made(name, VERSION, lambda folder: writer(folder, **SETS[name]))


def write_boxed(folder: Path, size: int, train: int, validation: int) -> None:
    """COCO JSON of the boxed scenes, a file per split beside its images/."""
    import json

    categories = [{"id": i, "name": name} for i, name in enumerate(CLASSES) if i]
    for number, (split, count) in enumerate((("train", train), ("validation", validation))):
        (folder / split / "images").mkdir(parents=True)
        listed, notes = [], []
        for index in range(count):
            image, shapes = draw_boxed_scene(size, np.random.default_rng([11, number, index]))
            name = f"{index:04d}.png"
            image.save(folder / split / "images" / name)
            listed.append({"id": index, "file_name": name, "width": size, "height": size})
            for label, (left, top, right, bottom) in shapes:
                box = [left, top, right - left, bottom - top]
                notes.append(
                    {
                        "id": len(notes) + 1,
                        "image_id": index,
                        "category_id": label,
                        "bbox": box,
                        "area": box[2] * box[3],
                        "iscrowd": 0,
                    }
                )
        coco = {"images": listed, "annotations": notes, "categories": categories}
        (folder / split / "annotations.json").write_text(json.dumps(coco))


def draw_boxed_scene(size: int, rng: np.random.Generator) -> tuple[object, list]:
    """(an RGB scene of one to three shapes apart, [(class id, xyxy box)] of each)."""
    from PIL import ImageDraw

    image = _background(size, rng)
    pen = ImageDraw.Draw(image)
    placed: list[tuple[int, tuple[int, int, int, int]]] = []
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):  # a place apart from the shapes already drawn
            extent = int(rng.integers(size // 6, size // 2))
            left, top = (int(v) for v in rng.integers(0, size - extent, 2))
            box = (left, top, left + extent, top + extent)
            if not any(_overlap(box, other) for _, other in placed):
                break
        else:
            continue
        label = int(rng.integers(1, len(CLASSES)))
        _shape(pen, CLASSES[label], box, tuple(int(c) for c in rng.integers(110, 256, 3)))
        placed.append((label, box))
    return image, placed


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _background(size: int, rng: np.random.Generator) -> object:
    from PIL import Image

    background = rng.integers(0, 90, 3)
    noise = rng.integers(-25, 26, (size, size, 3))
    return Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8), "RGB")


def _shape(pen: object, kind: str, box: tuple[int, int, int, int], fill: object) -> None:
    """A shape filling `box` (right and bottom edges exclusive)."""
    left, top, right, bottom = box
    extent = right - left
    inside = (left, top, right - 1, bottom - 1)  # PIL's rectangles include both edges
    if kind == "circle":
        pen.ellipse(inside, fill=fill)  # type: ignore[attr-defined]
    elif kind == "square":
        pen.rectangle(inside, fill=fill)  # type: ignore[attr-defined]
    else:
        corners = [(left, bottom - 1), (right - 1, bottom - 1), (left + extent // 2, top)]
        pen.polygon(corners, fill=fill)  # type: ignore[attr-defined]


def write(folder: Path, size: int, train: int, validation: int) -> None:
    for number, (split, count) in enumerate((("train", train), ("validation", validation))):
        for part in ("images", "masks"):
            (folder / split / part).mkdir(parents=True)
        for index in range(count):
            image, mask = draw_scene(size, np.random.default_rng([7, number, index]))
            image.save(folder / split / "images" / f"{index:04d}.png")
            mask.save(folder / split / "masks" / f"{index:04d}.png")


def draw_scene(size: int, rng: np.random.Generator) -> tuple[object, object]:
    """(an RGB scene of two to four shapes, its mask of class ids)."""
    from PIL import Image, ImageDraw

    background = rng.integers(0, 90, 3)
    noise = rng.integers(-25, 26, (size, size, 3))
    image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8), "RGB")
    mask = Image.new("L", (size, size), 0)
    pens = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(2, 5))):
        label = int(rng.integers(1, len(CLASSES)))
        colour = tuple(int(c) for c in rng.integers(110, 256, 3))
        extent = int(rng.integers(size // 6, size // 2))
        left, top = (int(v) for v in rng.integers(0, size - extent, 2))
        box = (left, top, left + extent, top + extent)
        for pen, fill in zip(pens, (colour, label), strict=True):
            if CLASSES[label] == "circle":
                pen.ellipse(box, fill=fill)
            elif CLASSES[label] == "square":
                pen.rectangle(box, fill=fill)
            else:
                corners = [(left, top + extent), (left + extent, top + extent)]
                pen.polygon([*corners, (left + extent // 2, top)], fill=fill)
    return image, mask
