"""Object detection: the offline boxed scenes (one to three shapes, 64x64, COCO JSON)
with the tiny RT-DETR from its config (fresh weights, seed 42, as ft's demo), against
the Trainer as `run_object_detection.py` builds it: a random left-right flip of image
and boxes for training (the script's albumentations pipeline, written with PIL here;
ft's demo flips too), the model's image processor turning COCO annotations into its
labels, a collator stacking pixels and listing labels, and every box kept
(`post_process_object_detection` at threshold 0) for COCO mAP@50. Both sides are
scored by the same COCO evaluation (`ft_cli.tasks.box_metrics`, faster-coco-eval:
the script's torchmetrics MeanAveragePrecision runs the same code but needs
torchvision, whose wheels need another torch build)."""

from __future__ import annotations

import json
import random
import tempfile
from typing import Any

from task_benches import common

METRIC = "map_50"
MODEL = "pkg:ft_cli/assets/tiny_rtdetr"


def ft_overrides(args: Any) -> list[str]:
    return ["+recipe=demo_detection"]


def read_split(folder: Any, split: str) -> tuple[list[tuple[Any, list[dict]]], list[str]]:
    """Each image's path and annotations (category ids made 0-based, in the order of the
    file's categories), and the class names in that order."""
    coco = json.loads((folder / split / "annotations.json").read_text())
    index = {c["id"]: i for i, c in enumerate(coco["categories"])}
    notes: dict[int, list[dict]] = {}
    for note in coco["annotations"]:
        notes.setdefault(note["image_id"], []).append(
            {**note, "category_id": index[note["category_id"]]}
        )
    rows = [
        (folder / split / "images" / image["file_name"], notes.get(image["id"], []))
        for image in coco["images"]
    ]
    return rows, [c["name"] for c in coco["categories"]]


def run_hf(args: Any, clock: Any, started: float) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModelForObjectDetection, Trainer, set_seed

    from ft_cli.assets import generated
    from ft_cli.tasks.box_metrics import Detections, mean_average_precision

    common.quiet()
    set_seed(42)
    folder = generated("boxed_scenes")
    train_rows, names = read_split(folder, "train")
    dev_rows, _ = read_split(folder, "validation")
    model, processor = common.fresh_vision_model(MODEL, names, AutoModelForObjectDetection)
    rng = random.Random(42)

    class TrainSet(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(train_rows)

        def __getitem__(self, index: int) -> dict:
            image_path, notes = train_rows[index]
            image = Image.open(image_path).convert("RGB")
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                notes = [
                    {**n, "bbox": [image.width - n["bbox"][0] - n["bbox"][2], *n["bbox"][1:]]}
                    for n in notes
                ]
            done = processor(
                images=image,
                annotations={"image_id": index, "annotations": notes},
                return_tensors="pt",
            )
            return {"pixel_values": done["pixel_values"][0], "labels": done["labels"][0]}

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=common.training_args(
                args,
                out,
                learning_rate=1e-3,
                weight_decay=1e-4,
                max_grad_norm=0.1,
                remove_unused_columns=False,
            ),
            train_dataset=TrainSet(),
            data_collator=lambda rows: {
                "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                "labels": [r["labels"] for r in rows],
            },
            callbacks=[clock],
        )
        trainer.train()
    model.eval()
    found, truth = [], []
    evaluated = common.evaluated(dev_rows, args)
    with torch.no_grad():
        for start in range(0, len(evaluated), 16):
            chunk = evaluated[start : start + 16]
            images = [Image.open(p).convert("RGB") for p, _ in chunk]
            outputs = model(**processor(images=images, return_tensors="pt"))
            sizes = [(image.height, image.width) for image in images]
            for kept in processor.post_process_object_detection(
                outputs, threshold=0.0, target_sizes=sizes
            ):
                found.append(
                    Detections(
                        kept["boxes"].double().numpy().reshape(-1, 4),
                        kept["labels"].numpy(),
                        kept["scores"].float().numpy(),
                    )
                )
            for _, notes in chunk:
                boxes = [[x, y, x + w, y + h] for x, y, w, h in (n["bbox"] for n in notes)]
                classes = np.array([n["category_id"] for n in notes], dtype=np.int64)
                truth.append(Detections(np.array(boxes, dtype=float).reshape(-1, 4), classes))
    score = mean_average_precision(found, truth, names)["map_50"]
    return common.hf_result(trainer, clock, args, score, started)
