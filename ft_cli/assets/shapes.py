"""The demo image set: coloured shapes on noisy backgrounds, drawn by ft itself.

`ensure("shapes")` returns a folder `train/<shape>/*.png`, `validation/<shape>/*.png`
in ft's cache, drawing it on first use. Every image is a pure function of its
split, class and index: the same set on every machine, nothing downloaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ft_cli import paths

SETS = {"shapes": {"size": 32, "train": 150, "validation": 50}}
CLASSES = ("circle", "cross", "square", "triangle")
VERSION = 1  # bump when the drawing changes: a new folder, never a mixed one


def ensure(name: str) -> Path:
    """The folder of the generated set `name`, drawn now if not there yet."""
    return made(name, VERSION, lambda folder: write(folder, **SETS[name]))


def made(name: str, version: int, write_to: Callable[[Path], None]) -> Path:
    """ft's cache folder of a generated set, written by `write_to` on first use (into a
    private folder renamed into place, so a reader never sees half of it)."""
    folder = paths.cache_root() / "generated" / f"{name}-v{version}"
    if (folder / "COMPLETE").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{name}-"))
    try:
        write_to(partial)
        (partial / "COMPLETE").write_text("made by ft_cli.assets\n")
        os.replace(partial, folder)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / "COMPLETE").is_file():  # another process may have won the race
            raise
    return folder


def write(folder: Path, size: int, train: int, validation: int) -> None:
    for number, (split, count) in enumerate((("train", train), ("validation", validation))):
        for label, shape in enumerate(CLASSES):
            target = folder / split / shape
            target.mkdir(parents=True)
            for index in range(count):
                seed = [number, label, index]
                draw_shape(shape, size, np.random.default_rng(seed)).save(target / f"{index}.png")


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> object:
    """One image: a shape of random colour, size and place on a noisy dark background."""
    from PIL import Image, ImageDraw

    background = rng.integers(0, 90, 3)
    noise = rng.integers(-20, 21, (size, size, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    pen = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in rng.integers(130, 256, 3))
    extent = int(rng.integers(size * 3 // 8, size * 3 // 4))
    left = int(rng.integers(0, size - extent))
    top = int(rng.integers(0, size - extent))
    box = (left, top, left + extent, top + extent)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "triangle":
        pen.polygon(
            [(left, top + extent), (left + extent, top + extent), (left + extent // 2, top)],
            fill=colour,
        )
    else:  # cross
        bar = max(extent // 4, 2)
        middle = extent // 2
        pen.rectangle(
            (left + middle - bar // 2, top, left + middle + bar // 2, top + extent), fill=colour
        )
        pen.rectangle(
            (left, top + middle - bar // 2, left + extent, top + middle + bar // 2), fill=colour
        )
    return image
