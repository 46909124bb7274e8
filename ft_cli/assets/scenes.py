"""The demo scenes: several shapes on a noisy background, with their exact masks, drawn by
ft itself.

`ensure("scenes")` returns a folder `train/images/*.png`, `train/masks/*.png`,
`validation/...` in ft's cache, drawing it on first use. A mask's pixel is the id of
the class it shows (`CLASSES`: 0 is the background); the shapes are drawn into the
image and the mask with the same call, so the mask is exact, overlaps included (a
later shape covers an earlier one in both). Every scene is a pure function of its
split and index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ft_cli.assets.shapes import made

SETS = {"scenes": {"size": 64, "train": 400, "validation": 80}}
CLASSES = ("background", "circle", "square", "triangle")
VERSION = 1  # bump when the drawing changes


def ensure(name: str) -> Path:
    return made(name, VERSION, lambda folder: write(folder, **SETS[name]))


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
