"""Image classification: the offline shapes (four classes, 32x32) with the tiny ResNet
from its config (fresh weights, seed 42, as ft's demo), against the Trainer as
`run_image_classification.py` builds it: an imagefolder dataset, a random resized crop
and flip for training, resize and centre crop for evaluation, normalised as the model's
image processor says (the script's torchvision transforms, written with PIL here:
torchvision's wheels need another torch build)."""

from __future__ import annotations

import random
import tempfile
from typing import Any

from task_benches import common

METRIC = "accuracy"
MODEL = "pkg:ft_cli/assets/tiny_resnet"


def ft_overrides(args: Any) -> list[str]:
    return ["+recipe=demo_images", "optimizer.lr=3e-3"]


def random_resized_crop(image: Any, side: int, rng: random.Random) -> Any:
    """torchvision's RandomResizedCrop at its defaults (scale 0.08-1, ratio 3/4-4/3)."""
    import math

    width, height = image.size
    for _ in range(10):
        area = width * height * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return image.resize((side, side), box=(left, top, left + w, top + h))
    return image.resize((side, side))


def run_hf(args: Any, clock: Any, started: float) -> dict:
    import datasets
    import numpy as np
    import torch
    from PIL import Image
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForImageClassification,
        Trainer,
        set_seed,
    )

    from ft_cli.assets import generated
    from ft_cli.paths import resolve_path

    common.quiet()
    set_seed(42)
    folder = generated("shapes")
    found = datasets.load_dataset("imagefolder", data_dir=str(folder))
    names = found["train"].features["label"].names
    path = resolve_path(MODEL, "model")
    processor = AutoImageProcessor.from_pretrained(path)
    config = AutoConfig.from_pretrained(path, num_labels=len(names))
    model = AutoModelForImageClassification.from_config(config)
    side = processor.size["shortest_edge"]
    mean, std = np.array(processor.image_mean), np.array(processor.image_std)
    rng = random.Random(42)

    def tensor(image: Any) -> torch.Tensor:
        pixels = (np.asarray(image, dtype=np.float32) / 255 - mean) / std
        return torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1)

    def train_view(batch: dict) -> dict:
        views = []
        for image in batch["image"]:
            image = random_resized_crop(image.convert("RGB"), side, rng)
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            views.append(tensor(image))
        return {"pixel_values": views, "labels": batch["label"]}

    def eval_view(batch: dict) -> dict:
        views = [tensor(image.convert("RGB").resize((side, side))) for image in batch["image"]]
        return {"pixel_values": views, "labels": batch["label"]}

    train_set = found["train"].with_transform(train_view)
    dev_set = common.evaluated(found["validation"], args).with_transform(eval_view)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=common.training_args(args, out, learning_rate=3e-3, remove_unused_columns=False),
            train_dataset=train_set,
            data_collator=lambda rows: {
                "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                "labels": torch.tensor([r["labels"] for r in rows]),
            },
            callbacks=[clock],
        )
        trainer.train()
        predicted = trainer.predict(dev_set)
    guessed = np.argmax(predicted.predictions, -1)
    accuracy = float((guessed == predicted.label_ids).mean())
    return common.hf_result(trainer, clock, args, accuracy, started)
