"""Boxes around objects: every conversion between box formats, and the geometry that moves
boxes with their image (crop, flip, resize).

Inside ft a box is `xyxy` in the image's pixels: (x_min, y_min, x_max, y_max), the
right and bottom edges exclusive, so a box's width is x_max - x_min. Annotations
arrive as `xywh` (COCO: the top-left corner, width, height) or `cxcywh` (the
centre, width, height), and detection models read `cxcywh` as fractions of the
image. Those are converted here and nowhere else.
"""

from __future__ import annotations

import numpy as np

FORMATS = ("xyxy", "xywh", "cxcywh")
# A box must keep at least this many pixels of width and height inside a crop to stay.
MIN_SIDE = 1.0


def to_xyxy(boxes: np.ndarray, fmt: str) -> np.ndarray:
    """Boxes [n, 4] in `fmt` as xyxy."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    a, b, c, d = boxes.T
    if fmt == "xyxy":
        return boxes.copy()
    if fmt == "xywh":
        return np.stack([a, b, a + c, b + d], axis=1)
    if fmt == "cxcywh":
        return np.stack([a - c / 2, b - d / 2, a + c / 2, b + d / 2], axis=1)
    raise ValueError(f"unknown box format {fmt!r}; one of {', '.join(FORMATS)}")


def from_xyxy(boxes: np.ndarray, fmt: str) -> np.ndarray:
    """xyxy boxes [n, 4] in `fmt`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = boxes.T
    if fmt == "xyxy":
        return boxes.copy()
    if fmt == "xywh":
        return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    if fmt == "cxcywh":
        return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1)
    raise ValueError(f"unknown box format {fmt!r}; one of {', '.join(FORMATS)}")


def to_model(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """xyxy pixel boxes as a detection model's targets: cxcywh fractions of the image."""
    scale = np.array([width, height, width, height], dtype=np.float64)
    return from_xyxy(boxes, "cxcywh") / scale


def from_model(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """A model's cxcywh fractions as xyxy pixel boxes of a `width` x `height` image."""
    scale = np.array([width, height, width, height], dtype=np.float64)
    return to_xyxy(np.asarray(boxes, dtype=np.float64) * scale, "cxcywh")


def crop(
    boxes: np.ndarray, classes: np.ndarray, window: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes seen through a crop `window` (left, top, right, bottom): shifted, cut at its
    edges; a box with less than MIN_SIDE pixels of width or height left is dropped."""
    left, top, right, bottom = window
    moved = boxes - np.array([left, top, left, top], dtype=np.float64)
    moved = np.clip(moved, 0, [right - left, bottom - top] * 2)
    kept = ((moved[:, 2] - moved[:, 0]) >= MIN_SIDE) & ((moved[:, 3] - moved[:, 1]) >= MIN_SIDE)
    return moved[kept], classes[kept]


def flip(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes of an image flipped left to right."""
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return flipped


def resize(boxes: np.ndarray, size: tuple[int, int], new: tuple[int, int]) -> np.ndarray:
    """Boxes of a (width, height) image resized to `new` (width, height)."""
    sx, sy = new[0] / size[0], new[1] / size[1]
    return boxes * np.array([sx, sy, sx, sy], dtype=np.float64)


def outside(boxes: np.ndarray, width: int, height: int, slack: float = 1.0) -> int | None:
    """The index of the first box that is empty or reaches more than `slack` pixels past
    the image's edges (None: all fit). The slack forgives annotation tools' rounding."""
    x0, y0, x1, y1 = boxes.T
    bad = (x1 <= x0) | (y1 <= y0) | (x0 < -slack) | (y0 < -slack)
    bad |= (x1 > width + slack) | (y1 > height + slack)
    found = np.flatnonzero(bad)
    return int(found[0]) if len(found) else None
