"""Object detection: box formats, boxes through augmentation, mAP, annotations, the workflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_spec
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from ft_cli.errors import FtError
from ft_cli.inputs import box_annotations as annotations
from ft_cli.inputs import boxes
from ft_cli.inputs.pictures import Augmentation
from ft_cli.tasks.box_metrics import Detections, mean_average_precision

SMALL = [
    "+recipe=demo_detection",
    "data.max_train_samples=48",
    "data.max_eval_samples=16",
    "train.batch_size=16",
    "train.log_every=1",
    "hardware.precision=fp32",
    "data.image_workers=0",
]

corner = st.floats(0, 500, allow_nan=False)
side = st.floats(0.5, 300, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(x=corner, y=corner, w=side, h=side, fmt=st.sampled_from(boxes.FORMATS))
def test_every_box_format_round_trips(x, y, w, h, fmt) -> None:
    xyxy = np.array([[x, y, x + w, y + h]])
    there = boxes.from_xyxy(xyxy, fmt)
    assert np.allclose(boxes.to_xyxy(there, fmt), xyxy)
    fractions = boxes.to_model(xyxy, 800, 600)
    assert np.allclose(boxes.from_model(fractions, 800, 600), xyxy)
    assert np.allclose(fractions[0, 2:], [w / 800, h / 600])  # cxcywh: width and height


def test_the_formats_say_the_same_box() -> None:
    assert boxes.to_xyxy(np.array([10, 20, 30, 40]), "xywh").tolist() == [[10, 20, 40, 60]]
    assert boxes.to_xyxy(np.array([25, 40, 30, 40]), "cxcywh").tolist() == [[10, 20, 40, 60]]


def painted(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 40x30 image of three rectangles, each a colour of its own, and their boxes."""
    found = np.array([[2, 3, 12, 9], [20, 5, 38, 28], [5, 15, 17, 30]], dtype=np.float64)
    image = Image.new("RGB", (40, 30))
    pen = ImageDraw.Draw(image)
    for number, (x0, y0, x1, y1) in enumerate(found.astype(int)):
        pen.rectangle((x0, y0, x1 - 1, y1 - 1), fill=(50 * (number + 1), 0, 0))
    path = tmp_path / "boxes.png"
    image.save(path)
    return path, found


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), epoch=st.integers(0, 50), row=st.integers(0, 1000))
def test_boxes_follow_every_crop_and_flip_exactly(tmp_path_factory, seed, epoch, row) -> None:
    path, found = painted(tmp_path_factory.mktemp("boxes"))
    split = annotations.BoxedSplit([str(path)] * 1001, [found] * 1001, [np.arange(3)] * 1001)
    collate = annotations.BoxCollator(split, None, seed, Augmentation((0.2, 1.0), True))  # type: ignore[arg-type]
    collate.set_epoch(epoch)
    image, moved, classes = collate.augmented_boxes(collate.load(row), found, np.arange(3), row)
    red = np.asarray(image)[..., 0]
    for number in range(3):
        ys, xs = np.nonzero(red == 50 * (number + 1))
        if number not in classes:  # dropped: the crop leaves less than a pixel's width
            assert len(xs) == 0 or np.ptp(xs) < 1 or np.ptp(ys) < 1
            continue
        seen = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert moved[list(classes).index(number)].tolist() == seen


def test_mean_average_precision_on_hand_made_boxes() -> None:
    labels = ["cat", "dog"]
    truth = [Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 1]))]
    perfect = Detections(truth[0].boxes, np.array([0, 1]), np.array([0.9, 0.8]))
    assert mean_average_precision([perfect], truth, labels) == pytest.approx(
        {"map": 1.0, "map_50": 1.0, "map_75": 1.0, "ap_cat": 1.0, "ap_dog": 1.0}
    )
    # The dog's box shifted to IoU 0.626: found at thresholds 0.50, 0.55, 0.60 of ten.
    shifted = np.array([[0, 0, 10, 10], [20, 22.3, 30, 32.3]])
    found = mean_average_precision(
        [Detections(shifted, np.array([0, 1]), np.array([0.9, 0.8]))], truth, labels
    )
    assert found["map_50"] == pytest.approx(1.0) and found["map_75"] == pytest.approx(0.5)
    assert found["ap_cat"] == pytest.approx(1.0) and found["ap_dog"] == pytest.approx(0.3)
    # The dog called a cat: no dog found; the cat's false box ranks below its hit.
    wrong = Detections(truth[0].boxes, np.array([0, 0]), np.array([0.9, 0.8]))
    found = mean_average_precision([wrong], truth, labels)
    assert found["ap_dog"] == 0.0 and found["ap_cat"] == pytest.approx(1.0)
    assert found["map"] == pytest.approx(0.5)
    nothing = Detections(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))
    assert mean_average_precision([nothing], truth, labels)["map"] == 0.0


def coco(tmp_path: Path, **changes: object) -> Path:
    """A COCO JSON of one 40x30 image with two boxes, with `changes` to its keys."""
    path, _ = painted(tmp_path)
    found = {
        "images": [{"id": 7, "file_name": path.name, "width": 40, "height": 30}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [2, 3, 10, 6]},
            {"id": 2, "image_id": 7, "category_id": 5, "bbox": [20, 5, 18, 23]},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
        **changes,
    }
    target = tmp_path / "train.json"
    target.write_text(json.dumps(found))
    return target


def test_coco_json_reads_into_boxes_and_names(tmp_path: Path) -> None:
    table, names = annotations.read_coco(coco(tmp_path), "data.files.train")
    assert names == ["cat", "dog"]
    assert table[annotations.BOXES] == [[[2, 3, 12, 9], [20, 5, 38, 28]]]
    assert table[annotations.LABELS] == [["cat", "dog"]]


def test_bad_annotations_are_refused_in_one_line(tmp_path: Path) -> None:
    key = "data.files.train"
    with pytest.raises(FtError, match='has no "images" list'):
        annotations.read_coco(coco(tmp_path, images=[]), key)
    unknown = [{"id": 9, "image_id": 7, "category_id": 4, "bbox": [0, 0, 5, 5]}]
    with pytest.raises(FtError, match="annotation 9 has category_id 4, not in"):
        annotations.read_coco(coco(tmp_path, annotations=unknown), key)
    path, found = painted(tmp_path)
    outside = found.copy()
    outside[1, 2] = 45  # x_max past the 40-pixel-wide image
    split = annotations.BoxedSplit([str(path)], [outside], [np.arange(3)])
    with pytest.raises(FtError, match=r"box 2 of .*boxes.png, \[20, 5, 45, 28\].* outside the"):
        annotations.check_boxes(split, key)
    with pytest.raises(FtError, match="class 'bird', not one of the 2 classes"):
        annotations.class_targets([["cat", "bird"]], ["cat", "dog"], key)
    assert annotations.class_targets([["dog", "0"]], ["cat", "dog"], key)[0].tolist() == [1, 0]


def test_a_table_of_a_box_per_row_groups_by_image(tmp_path: Path) -> None:
    import datasets

    path, _ = painted(tmp_path)
    table = datasets.Dataset.from_dict(
        {
            "image": [str(path), str(path), "other.png"],
            "label": ["cat", "dog", None],
            "x": [2, 20, None],
            "y": [3, 5, None],
            "width": [10, 18, None],
            "height": [6, 23, None],
        }
    )
    grouped = annotations.from_box_rows(table, "image", "label", "k")
    assert grouped["image"] == [str(path), "other.png"]
    assert grouped[annotations.BOXES] == [[[2, 3, 12, 9], [20, 5, 38, 28]], []]
    with pytest.raises(FtError, match="no box columns"):
        annotations.from_box_rows(table.remove_columns("x"), "image", "label", "k")


@pytest.mark.slow
def test_training_finds_boxes_predicts_and_serves_them(tmp_path: Path) -> None:
    from ft_cli.training.engine import train

    spec = compose_spec([*SMALL, "train.epochs=2"])
    result = train(spec, run_dir=tmp_path / "run", overrides=SMALL)
    final = result.final
    assert {"map", "map_50", "map_75", "loss"} <= set(final)
    assert 0.0 <= final["map"] <= final["map_50"] <= 1.0

    # Predictions written as JSON lines and read back; ft serve gives the same objects.
    import base64

    from fastapi.testclient import TestClient

    from ft_cli.assets import generated
    from ft_cli.commands import predict, serve
    from ft_cli.deploy import serving

    scenes = sorted((generated("boxed_scenes") / "validation" / "images").glob("*.png"))[:3]
    source = tmp_path / "images.csv"
    source.write_text("image\n" + "".join(f"{p}\n" for p in scenes))
    target = tmp_path / "out.jsonl"
    run = str(tmp_path / "run")
    overrides = ["task.overlay=true", "task.score_threshold=0.05"]
    assert predict.predict_file(run, source, target, overrides) == 3
    written = [json.loads(line) for line in target.read_text().splitlines()]
    assert sum(row["count"] for row in written) > 0
    for row in written:
        assert row["count"] == len(row["objects"])
        for found in row["objects"]:
            assert found["label"] in {"circle", "square", "triangle"}
            assert found["score"] >= 0.05
            x0, y0, x1, y1 = found["box"]
            assert -1 <= x0 <= x1 <= 65 and -1 <= y0 <= y1 <= 65  # the 64x64 scene's pixels
        assert Image.open(row["drawn_image"]).size == (64, 64)
    served, _ = serve.load(run, None, None, ["task.score_threshold=0.05"], 8)
    with TestClient(serving.build_app(served, serving.Limits())) as client:
        body = {"images": [base64.b64encode(p.read_bytes()).decode() for p in scenes]}
        answer = client.post("/predict", json=body).json()["predictions"]
        assert client.post("/predict", json={"image": "bm90IGFuIGltYWdl"}).status_code == 422
    for reply, row in zip(answer, written, strict=True):
        assert [o["label"] for o in reply["objects"]] == [o["label"] for o in row["objects"]]
        for mine, theirs in zip(reply["objects"], row["objects"], strict=True):
            assert mine["box"] == pytest.approx(theirs["box"], abs=0.05)
            assert mine["score"] == pytest.approx(theirs["score"], abs=1e-4)

    from ft_cli.commands import report

    sheet = tmp_path / "worst.png"
    caption, path = report.task_figure(tmp_path / "run", sheet, "run")
    assert caption.startswith("lowest-mAP@50 images") and Image.open(path).size[0] > 200


def test_detection_refuses_export_and_ensembles_in_one_line(tmp_path: Path) -> None:
    from ft_cli import tasks

    task = tasks.get("object_detection")
    assert not task.exportable and "ft serve" in task.not_exported
    assert tasks.info("object_detection").ensembles == ()
    with pytest.raises(FtError, match="no ensembles"):
        task.prediction(None, None, None, False)


@pytest.mark.slow
def test_detection_resumes_bit_identical(tmp_path: Path) -> None:
    from conftest import resumes_bit_identical

    from ft_cli.training.engine import train as run

    def train(run_dir: Path, overrides: list[str]) -> object:
        spec = compose_spec([*SMALL, *overrides])
        return run(spec, run_dir=run_dir, overrides=[*SMALL, *overrides])

    overrides = ["train.epochs=2", "train.save_every=2", "train.keep_checkpoints=100"]
    assert resumes_bit_identical(train, tmp_path, overrides)


def test_a_detectors_layer_groups_are_its_backbone_stages() -> None:
    import torch
    from transformers import AutoConfig, AutoModelForObjectDetection

    from ft_cli import paths
    from ft_cli.strategies import layers

    config = AutoConfig.from_pretrained(paths.resolve_path("pkg:ft_cli/assets/tiny_rtdetr", "k"))
    with torch.device("meta"):
        net = AutoModelForObjectDetection.from_config(config)
    groups = layers.groups_of(net)
    assert layers.num_layers_of(net) == 4  # the ResNet's stages
    assert groups["model.backbone.model.embedder.embedder.0.convolution.weight"] == "embeddings"
    stage = "model.backbone.model.encoder.stages.2.layers.0.layer.0.convolution.weight"
    assert groups[stage] == "layer.2"
    # The decoder's own `layers.N` are the detector's, not the backbone's: they train as head.
    assert groups["model.decoder.layers.1.self_attn.q_proj.weight"] == "head"
    assert groups["model.encoder.aifi.0.layers.0.mlp.fc1.weight"] == "head"
