"""Semantic segmentation: the offline scenes (shapes on noisy backgrounds, 64x64, exact
masks) with the tiny SegFormer from its config (fresh weights, seed 42, as ft's demo),
against the Trainer as `run_semantic_segmentation.py` builds it: image and mask
together through a pad-and-random-crop to the image processor's size and a random
left-right flip for training, a resize for evaluation, the model's own loss on logits
upsampled to the mask, and mean IoU over the classes on the evaluated masks (the
script's `evaluate` mean_iou: the mean of the classes' IoU, a class absent from masks
and predictions left out). The script's albumentations transforms are written with
PIL here; at 64x64 the crop keeps the whole scene, where ft's demo crops 50-100% of it
(data.image_crop)."""

from __future__ import annotations

import random
import tempfile
from typing import Any

from task_benches import common

METRIC = "mean_iou"
MODEL = "pkg:ft_cli/assets/tiny_segformer"


def ft_overrides(args: Any) -> list[str]:
    return ["+recipe=demo_segmentation"]


def mean_iou(found: Any, truth: Any, classes: int) -> float:
    """The mean over classes of |found ∩ truth| / |found ∪ truth| (pixel counts over all
    evaluated masks); a class in neither has no IoU and is left out."""
    import numpy as np

    ious = []
    for label in range(classes):
        guessed, true = found == label, truth == label
        union = np.logical_or(guessed, true).sum()
        if union:
            ious.append(np.logical_and(guessed, true).sum() / union)
    return float(np.mean(ious))


def run_hf(args: Any, clock: Any, started: float) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModelForSemanticSegmentation, Trainer, set_seed

    from ft_cli.assets import generated
    from ft_cli.assets.scenes import CLASSES

    common.quiet()
    set_seed(42)
    folder = generated("scenes")
    model, processor = common.fresh_vision_model(
        MODEL, list(CLASSES), AutoModelForSemanticSegmentation
    )
    height, width = processor.size["height"], processor.size["width"]
    rng = random.Random(42)

    def pairs(split: str) -> list[tuple[Any, Any]]:
        images = sorted((folder / split / "images").glob("*.png"))
        return [(image, folder / split / "masks" / image.name) for image in images]

    def pixels(image: Any) -> torch.Tensor:
        done = processor(images=image, do_resize=False, return_tensors="pt")
        return done["pixel_values"][0]

    class TrainSet(torch.utils.data.Dataset):
        def __init__(self, rows: list[tuple[Any, Any]]) -> None:
            self.rows = rows

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, index: int) -> dict:
            image_path, mask_path = self.rows[index]
            image, mask = Image.open(image_path).convert("RGB"), Image.open(mask_path)
            # PadIfNeeded then RandomCrop to the processor's size, then HorizontalFlip.
            pad_w, pad_h = max(width - image.width, 0), max(height - image.height, 0)
            if pad_w or pad_h:
                grown = Image.new("RGB", (image.width + pad_w, image.height + pad_h))
                grown.paste(image)
                image, mask = grown, _padded_mask(mask, pad_w, pad_h)
            left = rng.randint(0, image.width - width)
            top = rng.randint(0, image.height - height)
            box = (left, top, left + width, top + height)
            image, mask = image.crop(box), mask.crop(box)
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            labels = torch.tensor(np.asarray(mask, dtype=np.int64))
            return {"pixel_values": pixels(image), "labels": labels}

    def _padded_mask(mask: Any, pad_w: int, pad_h: int) -> Any:
        grown = Image.new("L", (mask.width + pad_w, mask.height + pad_h), 255)  # ignored
        grown.paste(mask)
        return grown

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=common.training_args(
                args, out, learning_rate=3e-3, weight_decay=0.01, remove_unused_columns=False
            ),
            train_dataset=TrainSet(pairs("train")),
            data_collator=lambda rows: {
                "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                "labels": torch.stack([r["labels"] for r in rows]),
            },
            callbacks=[clock],
        )
        trainer.train()
    model.eval()
    found, truth = [], []
    with torch.no_grad():
        for image_path, mask_path in common.evaluated(pairs("validation"), args):
            image = Image.open(image_path).convert("RGB")
            batch = processor(images=image, return_tensors="pt")
            logits = model(pixel_values=batch["pixel_values"]).logits
            size = (image.height, image.width)
            upsampled = torch.nn.functional.interpolate(
                logits, size=size, mode="bilinear", align_corners=False
            )
            found.append(upsampled.argmax(1)[0].numpy())
            truth.append(np.asarray(Image.open(mask_path), dtype=np.int64))
    score = mean_iou(np.stack(found), np.stack(truth), len(CLASSES))
    return common.hf_result(trainer, clock, args, score, started)
