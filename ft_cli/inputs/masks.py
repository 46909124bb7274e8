"""Masks of class ids beside images (semantic segmentation): reading and checking them,
the augmentation that moves an image and its mask together, and their batches.

A mask is a one-channel image (PNG, mode L, P or I) whose pixel values are class ids;
`task.ignore_index` marks pixels no loss or metric reads. Images and masks go to the
model's input size together, the image bilinear, the mask nearest-neighbour (a class
id is never blended); training crops and flips both with the same draw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ft_cli.errors import FtError
from ft_cli.inputs import pictures
from ft_cli.inputs.pictures import ImageRef


@dataclass
class MaskedSplit(pictures.ImageRows):
    """One split of images and their masks (references; decoded per batch)."""

    images: list[ImageRef]
    masks: list[ImageRef]

    def update_digest(self, digest: Any) -> None:
        """Feed the split's identity to a hash (resume refuses changed data)."""
        for ref in [*self.images, *self.masks]:
            digest.update(ref.encode() if isinstance(ref, str) else hashlib.sha1(ref).digest())
            digest.update(b"|")


def open_mask(ref: ImageRef, where: str) -> np.ndarray:
    """A mask's class ids [height, width]; one line naming the file if it is no mask."""
    image = pictures.open_image(ref, mode=None)
    if image.mode not in ("L", "P", "I", "I;16"):
        raise FtError(
            f"{where}: a mask must be one channel of class ids (mode L, P or I), not"
            f" {image.mode}; save it as a grey-level or palette PNG"
        )
    return np.asarray(image, dtype=np.int64)


def check_masks(split: MaskedSplit, num_labels: int, ignore: int, key: str) -> set[int]:
    """Every mask against its image (same size) and the labels (ids below `num_labels`, or
    `ignore`); the ids found. One line names the first file that fails."""
    found: set[int] = set()
    for index, (image_ref, mask_ref) in enumerate(zip(split.images, split.masks, strict=True)):
        where = f"{key}: mask {mask_ref if isinstance(mask_ref, str) else f'of row {index}'}"
        ids = open_mask(mask_ref, where)
        size = pictures.open_image(image_ref, mode=None).size  # the header, no decoding
        if (ids.shape[1], ids.shape[0]) != size:
            raise FtError(
                f"{where} is {ids.shape[1]}x{ids.shape[0]}, its image {size[0]}x{size[1]};"
                " a mask must have its image's size"
            )
        values = set(np.unique(ids).tolist()) - {ignore}
        unknown = sorted(v for v in values if not 0 <= v < num_labels)
        if unknown:
            raise FtError(
                f"{where} holds class id {unknown[0]}, but there are {num_labels} classes"
                f" (0 to {num_labels - 1}, or task.ignore_index={ignore}); fix the mask or"
                " list every class in task.labels"
            )
        found |= values
    return found


def class_ids(split: MaskedSplit, key: str) -> list[int]:
    """The class ids the masks hold (for a label set not given), sorted."""
    found: set[int] = set()
    for index, ref in enumerate(split.masks):
        found |= set(np.unique(open_mask(ref, f"{key}: mask of row {index}")).tolist())
    return sorted(found)


class MaskCollator(pictures.ImageCollator):
    """Row indices in; `pixel_values` and `labels` (class ids [rows, height, width], at
    the model's input size) out. With an `augmentation`, each row's image and mask are
    cropped and flipped by one draw of (seed, epoch, row)."""

    split: MaskedSplit  # type: ignore[assignment]

    def pair(self, index: int) -> tuple[Any, Any]:
        """The row's image (RGB) and mask (as a 32-bit image of ids), both PIL."""
        from PIL import Image

        kept = self.decoded.get(index)
        if kept is not None:
            return kept
        image = pictures.open_image(self.split.images[index])
        ids = open_mask(self.split.masks[index], self.split.name(index))
        pair = image, Image.fromarray(ids.astype(np.int32), mode="I")
        self.decoded.keep(index, pair, image.width * image.height * 3 + ids.size * 4)
        return pair

    def augmented_pair(self, image: Any, mask: Any, row: int) -> tuple[Any, Any]:
        from PIL import Image

        from ft_cli import augment

        assert self.augmentation is not None
        if self.augmentation.crop_scale is not None:
            rng = augment.draws(self.seed, self.epoch, row, "crop")
            box = pictures.crop_box(*image.size, self.augmentation.crop_scale, rng)
            image, mask = image.crop(box), mask.crop(box)
        flip = augment.draws(self.seed, self.epoch, row, "flip")
        if self.augmentation.flip and flip.random() < 0.5:
            turn = Image.Transpose.FLIP_LEFT_RIGHT
            image, mask = image.transpose(turn), mask.transpose(turn)
        return image, mask

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        from PIL import Image

        images, masks = [], []
        for index in indices:
            image, mask = self.pair(index)
            if self.augmentation is not None:
                image, mask = self.augmented_pair(image, mask, index)
            size = (self.pixels.width, self.pixels.height)
            images.append(image)
            masks.append(np.asarray(mask.resize(size, Image.Resampling.NEAREST), dtype=np.int64))
        return {
            "pixel_values": self.pixels.resized(images),
            "labels": torch.from_numpy(np.stack(masks)),
        }
