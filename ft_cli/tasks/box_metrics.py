"""Scores of detected boxes: COCO's mean average precision, through faster-coco-eval (the
maintained C++ port of the COCO evaluation that torchmetrics' MeanAveragePrecision
also runs; that wrapper needs torchvision, which ft does not).

mAP averages the precision over recall levels and IoU thresholds 0.50:0.95;
map_50 and map_75 at one threshold each; ap_<class> is a class's mAP. Boxes are
in each image's own pixels, as the annotations are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Detections:
    """One image's boxes (xyxy pixels [n, 4]), class ids [n] and scores [n] (None: truth)."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray | None = None


def mean_average_precision(
    found: list[Detections], truth: list[Detections], labels: list[str]
) -> dict[str, float]:
    """map, map_50, map_75 and each class's ap_<name> (a class without true boxes has
    none) of the detections `found` against `truth`, image by image."""
    from faster_coco_eval import COCO, COCOeval_faster

    images, annotations, results = [], [], []
    for image, (mine, true) in enumerate(zip(found, truth, strict=True)):
        images.append({"id": image})
        for box, label in zip(true.boxes.tolist(), true.classes.tolist(), strict=True):
            width, height = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image,
                    "category_id": int(label),
                    "bbox": [box[0], box[1], width, height],
                    "area": width * height,
                    "iscrowd": 0,
                }
            )
        assert mine.scores is not None
        for box, label, score in zip(
            mine.boxes.tolist(), mine.classes.tolist(), mine.scores.tolist(), strict=True
        ):
            corner = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            results.append(
                {"image_id": image, "category_id": int(label), "bbox": corner, "score": score}
            )
    scores = {"map": 0.0, "map_50": 0.0, "map_75": 0.0}
    if not annotations or not results:  # nothing to find, or nothing found
        return scores
    categories = [{"id": i, "name": name} for i, name in enumerate(labels)]
    true_set = COCO()
    true_set.dataset = {"images": images, "annotations": annotations, "categories": categories}
    true_set.createIndex()
    evaluation = COCOeval_faster(
        true_set, true_set.loadRes(results), "bbox", print_function=lambda *_: None
    )
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    scores.update(zip(scores, (max(float(v), 0.0) for v in evaluation.stats[:3]), strict=True))
    # precision [IoU thresholds, recall levels, classes, areas (all first), max detections]
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    present = {int(a["category_id"]) for a in annotations}
    for index, name in enumerate(labels):
        values = precision[:, :, index]
        if index in present and (values > -1).any():
            scores[f"ap_{name}"] = float(values[values > -1].mean())
    return scores


def detected(
    processor: Any, logits: torch.Tensor, boxes: torch.Tensor, sizes: Any, threshold: float
) -> list[Detections]:
    """The model's outputs as each image's detections above `threshold`, in the image's
    pixels (`sizes`: (height, width) each), through the model's own image processor
    (softmax with a no-object class for DETR, sigmoid top-k for RT-DETR, ...)."""
    from types import SimpleNamespace

    outputs = SimpleNamespace(logits=logits.float(), pred_boxes=boxes.float())
    sizes = [tuple(int(v) for v in size) for size in sizes]
    found = processor.post_process_object_detection(
        outputs, threshold=threshold, target_sizes=sizes
    )
    return [
        Detections(
            f["boxes"].detach().cpu().double().numpy().reshape(-1, 4),
            f["labels"].detach().cpu().numpy(),
            f["scores"].detach().cpu().float().numpy(),
        )
        for f in found
    ]


class DetectionMetrics:
    """mAP, map_50, map_75, each class's AP and the loss over the evaluated images; the
    detections are kept (a few numbers an image) and merged across processes."""

    def __init__(self, labels: list[str], processor: Any) -> None:
        self.labels, self.processor = labels, processor
        self.found: list[Detections] = []
        self.truth: list[Detections] = []
        self.loss_sum, self.count = 0.0, 0

    def update(self, predictions: Any, targets: Any) -> None:
        from ft_cli.inputs import boxes as geometry

        loss, logits, boxes = predictions
        classes, true_boxes, sizes = targets
        self.loss_sum += float(loss) * len(classes)
        self.count += len(classes)
        self.found += detected(self.processor, logits.detach(), boxes.detach(), sizes, 0.0)
        for ids, fractions, (height, width) in zip(
            classes.cpu(), true_boxes.float().cpu(), sizes.tolist(), strict=True
        ):
            real = ids >= 0
            pixels = geometry.from_model(fractions[real].double().numpy(), width, height)
            self.truth.append(Detections(pixels, ids[real].numpy()))

    def merge(self, others: list[DetectionMetrics]) -> DetectionMetrics:
        for other in others:
            self.found += other.found
            self.truth += other.truth
            self.loss_sum += other.loss_sum
            self.count += other.count
        return self

    def compute(self) -> dict[str, float]:
        scores = mean_average_precision(self.found, self.truth, self.labels)
        return {**scores, "loss": self.loss_sum / max(self.count, 1)}
