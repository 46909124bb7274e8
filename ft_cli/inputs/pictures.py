"""Images for image classification: finding them, checking them once, and turning a
batch of them into the model's `pixel_values`.

An image is referenced by its file path, or by its bytes (hub datasets). A
split holds references only: each image is decoded when its batch is built,
in the loader's worker processes or, without them, in the training process,
which keeps what it decoded for the next epochs (`inputs.decoded`).
Training batches get a random resized crop and a horizontal flip, drawn from
(seed, epoch, row) like every augmentation of ft, so a resumed epoch sees the
same pixels.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ft_cli.errors import FtError, warn
from ft_cli.inputs.decoded import DecodedCache

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
CROP_RATIO = (3 / 4, 4 / 3)  # aspect ratios a random crop may take (the usual range)

ImageRef = str | bytes


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS


def visible_files(folder: Path, skipped: list[str] | None = None) -> list[Path]:
    """Every file under `folder`, sorted, hidden ones (.DS_Store, .git) left out.

    Linked folders are not followed (a link may lead out of the tree or around in a
    loop), and names that are not UTF-8 cannot be stored as text: both are left out
    and named in `skipped`. Linked files are read.
    """
    skipped = [] if skipped is None else skipped
    found = []
    for root, folders, names in os.walk(folder):
        here = Path(root)
        for name in list(folders):
            if name.startswith(".") or (here / name).is_symlink() or not _utf8(name):
                folders.remove(name)
                if not name.startswith("."):
                    skipped.append(_shown_name(here / name))
        for name in names:
            path = here / name
            if name.startswith("."):
                continue
            if not _utf8(name):
                skipped.append(_shown_name(path))
            elif path.is_file():
                found.append(path)
    return sorted(found)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as surrogates
        return False
    return True


def _shown_name(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def warn_skipped(skipped: list[str], key: str) -> None:
    if skipped:
        warn(
            f"{key}: skipped {len(skipped)} linked folder(s) or name(s) that are not UTF-8"
            f" (first: {skipped[0]}); move the images in, or rename them"
        )


def list_class_folders(
    root: Path, key: str, extensions: tuple[str, ...] = EXTENSIONS, noun: str = "images"
) -> tuple[list[str], list[str]]:
    """(file paths, their labels) of a `root/<label>/<file>` tree of files ending in one of
    `extensions` (`noun`: what messages call them).

    Each class's files are sorted; the classes take turns (first image of each,
    then the second, ...), so the first N rows (data.max_train_samples) hold
    every class in proportion, as a shuffled table would.
    """
    if not root.is_dir():
        raise FtError(
            f"{key}: folder '{root}' does not exist; point it at a folder with one sub-folder"
            " per class"
        )
    skipped: list[str] = []
    classes = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if entry.is_symlink() or not _utf8(entry.name):  # never a class of its own
            skipped.append(_shown_name(entry))
        else:
            classes.append(entry)
    if not classes:
        raise FtError(
            f"{key}: '{root}' holds no class folders; put each class's {noun} in"
            f" {root}/<label>/ (for example {root}/cat/1{extensions[0]})"
        )
    per_class: list[list[Path]] = []
    others = 0
    for folder in classes:
        files = visible_files(folder, skipped)
        kept = [f for f in files if f.suffix.lower() in extensions]
        others += len(files) - len(kept)
        if not kept:
            raise FtError(
                f"{key}: class folder '{folder}' holds no {noun}; add {noun} ("
                + ", ".join(extensions[:3])
                + ", ...) or remove the folder"
            )
        per_class.append(kept)
    turns = sorted(
        ((i / len(files), c, f) for c, files in enumerate(per_class) for i, f in enumerate(files)),
        key=lambda item: item[:2],
    )
    paths = [str(f) for _, _, f in turns]
    labels = [classes[c].name for _, c, _ in turns]
    warn_skipped(skipped, key)
    loose = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    if others or loose:
        warn(
            f"{key}: skipped {others + len(loose)} file(s) in '{root}' that are not {noun} in a"
            " class folder"
        )
    return paths, labels


def list_images(folder: Path) -> list[str]:
    """The image files under `folder` (any depth), sorted: what `ft predict DIR` reads."""
    skipped: list[str] = []
    found = [str(p) for p in visible_files(folder, skipped) if is_image_name(p)]
    warn_skipped(skipped, "--input")
    return found


def open_image(ref: ImageRef, mode: str | None = "RGB") -> Any:
    """The image as a PIL image in `mode` (RGB: grey-scale, palette and RGBA converted;
    None: as stored, a mask's class ids)."""
    from PIL import Image, ImageOps

    image = Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref)
    image = ImageOps.exif_transpose(image)  # phone photos: upright, as viewers show them
    return image.convert(mode) if mode else image


def unreadable(ref: ImageRef) -> str | None:
    """Why the image cannot be read (None: it can), from its header and structure."""
    from PIL import Image

    source = io.BytesIO(ref) if isinstance(ref, bytes) else ref
    try:
        with Image.open(source) as image:
            image.verify()
    except Exception as err:  # PIL raises many types for a bad file
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return text.replace(str(source), "").replace("  ", " ").strip(" :")
    return None


def pixel_count(data: bytes) -> int | None:
    """Width x height from the image's header alone (None: no header PIL knows)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height
    except Exception:  # unreadable: `undecodable` says why
        return None


def undecodable(data: bytes) -> str | None:
    """Why the image cannot be decoded whole (None: it can); a truncated file is refused
    here, where `unreadable`'s structural check would let it pass."""
    from PIL import Image

    why = unreadable(data)
    if why is not None:
        return why
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as image:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Exception as err:  # PIL raises many types for a bad file
        return (str(err).strip().splitlines() or [type(err).__name__])[0]
    return None


def readable(
    refs: list[Any], names: list[str], key: str, check: Any = None, noun: str = "image"
) -> list[int]:
    """Indices of the files that can be read (`check`: why one cannot, else None; an
    image's by default); the others are counted in one warning."""
    check = check or unreadable
    keep, bad = [], []
    for index, ref in enumerate(refs):
        why = check(ref)
        if why is None:
            keep.append(index)
        else:
            bad.append((names[index], why))
    if bad and not keep:
        raise FtError(f"{key}: no {noun} can be read (first: {bad[0][0]}: {bad[0][1]})")
    if bad:
        warn(
            f"{key}: skipped {len(bad)} of {len(refs)} {noun}s that cannot be read (first:"
            f" {bad[0][0]}: {bad[0][1]})"
        )
    return keep


def resolve_refs(
    values: list[Any], base: Path | None, key: str, noun: str = "an image file"
) -> list[ImageRef]:
    """Paths relative to `base` made absolute; hub file cells ({bytes, path}) as bytes."""
    refs: list[ImageRef] = []
    for row, value in enumerate(values):
        if isinstance(value, dict):  # datasets' Image or Audio feature, not decoded
            value = value.get("bytes") or value.get("path")
        if isinstance(value, bytes):
            refs.append(value)
            continue
        if not isinstance(value, str) or not value.strip():
            raise FtError(f"{key}: row {row} holds {value!r}, not the path of {noun}")
        path = Path(value)
        refs.append(str(path if path.is_absolute() or base is None else base / path))
    return refs


def missing_files(refs: list[ImageRef]) -> list[str]:
    return [r for r in refs if isinstance(r, str) and not Path(r).is_file()]


class ImageRows(torch.utils.data.Dataset):
    """A split of image references (`images`), a row each; its collator gathers rows by
    index and decodes them per batch."""

    images: list[ImageRef]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> int:
        return index  # the collator gathers rows by index

    def lengths(self) -> list[int]:
        return [1] * len(self.images)  # no padding: every row costs the same

    def name(self, index: int) -> str:
        ref = self.images[index]
        return ref if isinstance(ref, str) else f"row {index}"


@dataclass
class ImageSplit(ImageRows):
    """One split of images: references and targets; decoding happens per batch."""

    images: list[ImageRef]
    labels: list[int]

    def update_digest(self, digest: Any) -> None:
        """Feed the split's identity to a hash (resume refuses changed data)."""
        for ref in self.images:
            digest.update(ref.encode() if isinstance(ref, str) else hashlib.sha1(ref).digest())
            digest.update(b"|")
        digest.update(repr(self.labels).encode())


@dataclass(frozen=True)
class Augmentation:
    """Training-time changes to an image: crop share of the area, flip (None/False: off)."""

    crop_scale: tuple[float, float] | None
    flip: bool

    @property
    def active(self) -> bool:
        return self.crop_scale is not None or self.flip


def random_resized_crop(image: Any, scale: tuple[float, float], rng: np.random.Generator) -> Any:
    """A crop of `scale` share of the area and an aspect ratio in CROP_RATIO."""
    return image.crop(crop_box(*image.size, scale, rng))


def crop_box(
    width: int, height: int, scale: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop of `scale` share of the area and an aspect ratio
    in CROP_RATIO (ten tries, then the largest centred crop of an allowed ratio)."""
    area = width * height
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(log_low, log_high))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    ratio = min(max(width / height, CROP_RATIO[0]), CROP_RATIO[1])
    if width / height < ratio:
        w, h = width, round(width / ratio)
    else:
        w, h = round(height * ratio), height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def loader_workers(asked: int | None) -> int:
    """Decoding processes: as asked, else a quarter of the usable cores (at most 4), so
    that on a small machine the model keeps every core."""
    if asked is not None:
        return asked
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, (cores or 1) // 4)


class Pixels:
    """The model's input for a list of PIL images, through its own image processor.

    Evaluation uses the processor as it is (its resize, crop, rescale and
    normalisation); training crops and resizes to the same output size here
    and leaves the processor the rest: done on the whole batch in torch when the
    processor's rest is a rescale and a normalisation (checked against the
    processor on a probe image), else by the processor image by image.
    """

    def __init__(self, processor: Any) -> None:
        from PIL import Image

        self.processor = processor
        probe = processor(Image.new("RGB", (64, 48)), return_tensors="pt")["pixel_values"]
        self.channels, self.height, self.width = probe.shape[1:]
        steps = ("do_resize", "do_center_crop")
        self.no_resize = {k: False for k in steps if hasattr(processor, k)}

    def evaluation(self, images: list[Any]) -> torch.Tensor:
        return self.processor(images, return_tensors="pt")["pixel_values"]

    def resized(self, images: list[Any]) -> torch.Tensor:
        """Images already cropped: resized to the output size, then rescaled and normalised."""
        from PIL import Image

        sized = [im.resize((self.width, self.height), Image.Resampling.BILINEAR) for im in images]
        if self.scale_shift is None:
            return self.processor(sized, return_tensors="pt", **self.no_resize)["pixel_values"]
        return _normalised(sized, *self.scale_shift)

    @functools.cached_property
    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The batch path's (scale, shift), if it gives the processor's pixels on a noise
        image (checked once, by the first batch that needs it); else None."""
        from PIL import Image

        found = _scale_shift(self.processor, self.channels)
        if found is None:
            return None
        noise = np.random.default_rng(0).integers(0, 256, (self.height, self.width, 3))
        image = Image.fromarray(noise.astype(np.uint8))
        ours = _normalised([image], *found)
        theirs = self.processor([image], return_tensors="pt", **self.no_resize)["pixel_values"]
        same = ours.shape == theirs.shape and torch.allclose(ours, theirs.float(), atol=1e-4)
        return found if same else None

    def blank(self) -> Any:
        from PIL import Image

        return Image.new("RGB", (self.width, self.height))


def _scale_shift(processor: Any, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) per channel such that pixels * scale + shift is the processor's
    rescale then normalisation; None for a processor with other steps or of other inputs."""
    if channels != 3 or getattr(processor, "do_pad", False):
        return None
    rescale = processor.rescale_factor if getattr(processor, "do_rescale", False) else 1.0
    mean, std = np.zeros(3), np.ones(3)
    if getattr(processor, "do_normalize", False):
        mean = np.broadcast_to(processor.image_mean, 3)
        std = np.broadcast_to(processor.image_std, 3)
    scale = torch.tensor(rescale / std, dtype=torch.float32).view(3, 1, 1)
    shift = torch.tensor(-mean / std, dtype=torch.float32).view(3, 1, 1)
    return scale, shift


def _normalised(images: list[Any], scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB images of one size as a [rows, 3, height, width] batch, * scale + shift."""
    stacked = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
    return (stacked.permute(0, 3, 1, 2).float() * scale + shift).contiguous()


class ImageCollator:
    """Row indices of an image split in, `pixel_values` and `labels` out.

    With an `augmentation`, training batches: each row is cropped and flipped
    from its own generator of (seed, epoch, row); `set_epoch` selects the epoch.
    An image that fails to decode mid-run (it passed the check at load) is
    replaced by a blank one with a warning, so an epoch never dies on one file.
    """

    def __init__(
        self,
        split: ImageSplit,
        pixels: Pixels,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        keep_decoded: bool = False,
    ) -> None:
        self.split, self.pixels, self.seed = split, pixels, seed
        self.augmentation = augmentation if augmentation and augmentation.active else None
        self.epoch = 0
        self.decoded = DecodedCache(keep_decoded)  # training: each epoch reads them again

    @property
    def augments(self) -> bool:
        return self.augmentation is not None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load(self, index: int) -> Any:
        kept = self.decoded.get(index)
        if kept is not None:
            return kept
        try:
            image = open_image(self.split.images[index])
        except Exception as err:
            warn(f"cannot decode {self.split.name(index)} ({err}); a blank image stands in")
            return self.pixels.blank()
        self.decoded.keep(index, image, image.width * image.height * len(image.getbands()))
        return image

    def augmented(self, image: Any, row: int) -> Any:
        from PIL import Image

        from ft_cli import augment

        assert self.augmentation is not None
        if self.augmentation.crop_scale is not None:
            rng = augment.draws(self.seed, self.epoch, row, "crop")
            image = random_resized_crop(image, self.augmentation.crop_scale, rng)
        flip = augment.draws(self.seed, self.epoch, row, "flip")
        if self.augmentation.flip and flip.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        images = [self.load(i) for i in indices]
        if self.augmentation is None:
            pixels = self.pixels.evaluation(images)
        else:
            changed = [self.augmented(im, i) for im, i in zip(images, indices, strict=True)]
            cropped = self.augmentation.crop_scale is not None
            pixels = self.pixels.resized(changed) if cropped else self.pixels.evaluation(changed)
        labels = torch.tensor([self.split.labels[i] for i in indices], dtype=torch.long)
        return {"pixel_values": pixels, "labels": labels}
