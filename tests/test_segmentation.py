"""Semantic segmentation: masks follow the augmentation, metrics on hand-made masks, bad
masks refused in one line, training end to end on ft's scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_spec
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ft_cli.errors import FtError
from ft_cli.inputs import masks
from ft_cli.inputs.pictures import Augmentation
from ft_cli.tasks.semantic_segmentation import SegmentationMetrics

SMALL = [
    "+recipe=demo_segmentation",
    "data.max_train_samples=48",
    "data.max_eval_samples=16",
    "train.batch_size=16",
    "train.log_every=1",
    "hardware.precision=fp32",
    "data.image_workers=0",
]


def scene(tmp_path: Path, size: tuple[int, int] = (24, 16)) -> tuple[Path, Path]:
    """An image whose red channel is 40 x its mask's class id, and that mask."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, (size[1], size[0])).astype(np.uint8)
    pixels = np.stack([ids * 40, rng.integers(0, 255, ids.shape), ids], -1).astype(np.uint8)
    image, mask = tmp_path / "image.png", tmp_path / "mask.png"
    Image.fromarray(pixels, "RGB").save(image)
    Image.fromarray(ids, "L").save(mask)
    return image, mask


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), epoch=st.integers(0, 50), row=st.integers(0, 1000))
def test_the_mask_follows_every_crop_and_flip_exactly(tmp_path_factory, seed, epoch, row) -> None:
    image, mask = scene(tmp_path_factory.mktemp("scene"))
    split = masks.MaskedSplit([str(image)] * 1001, [str(mask)] * 1001)
    collate = masks.MaskCollator(split, None, seed, Augmentation((0.2, 1.0), True))  # type: ignore[arg-type]
    collate.set_epoch(epoch)
    picture, ids = collate.augmented_pair(*collate.pair(row), row)
    red = np.asarray(picture)[..., 0].astype(np.int64)
    assert picture.size == ids.size
    assert np.array_equal(red, np.asarray(ids, dtype=np.int64) * 40)


def test_iou_and_pixel_accuracy_on_hand_made_masks() -> None:
    truth = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    guess = torch.tensor([[[0, 1, 1, 1], [2, 0, 1, 2]]])
    logits = torch.nn.functional.one_hot(guess, 3).permute(0, 3, 1, 2).float() * 10
    scores = SegmentationMetrics(["a", "b", "c"], ignore=255)
    scores.update(logits, truth)
    found = scores.compute()
    # Class 0: 1 right of 3 in truth or guess; 1: 2 of 3; 2: 1 of 2 (ignored pixels left out).
    assert found["iou_a"] == pytest.approx(1 / 3)
    assert found["iou_b"] == pytest.approx(2 / 3)
    assert found["iou_c"] == pytest.approx(1 / 2)
    assert found["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert found["pixel_accuracy"] == pytest.approx(4 / 6)


def test_bad_masks_are_refused_in_one_line(tmp_path: Path) -> None:
    image, mask = scene(tmp_path)
    ok = masks.MaskedSplit([str(image)], [str(mask)])
    assert masks.check_masks(ok, 4, 255, "data.files.train") == {0, 1, 2, 3}
    with pytest.raises(FtError, match="holds class id 3, but there are 3 classes"):
        masks.check_masks(ok, 3, 255, "data.files.train")
    small = tmp_path / "small.png"
    Image.new("L", (8, 8)).save(small)
    with pytest.raises(FtError, match="is 8x8, its image 24x16; a mask must have its image's"):
        masks.check_masks(masks.MaskedSplit([str(image)], [str(small)]), 4, 255, "k")
    coloured = tmp_path / "coloured.png"
    Image.new("RGB", (24, 16)).save(coloured)
    with pytest.raises(FtError, match="a mask must be one channel of class ids"):
        masks.check_masks(masks.MaskedSplit([str(image)], [str(coloured)]), 4, 255, "k")


def test_a_maskfolder_needs_a_mask_for_every_image(tmp_path: Path) -> None:
    from ft_cli import tasks

    for part in ("images", "masks"):
        (tmp_path / "train" / part).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "images" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "images" / "b.png")
    Image.new("L", (8, 8)).save(tmp_path / "train" / "masks" / "a.png")
    spec = compose_spec([*SMALL, f"data.path={tmp_path}", "data.files.validation=null"])
    with pytest.raises(FtError, match="'b' has no mask"):
        tasks.get("semantic_segmentation").load_raw(spec.data)


@pytest.mark.slow
def test_training_learns_the_shapes_and_scores_each_class(tmp_path: Path) -> None:
    from ft_cli.training.engine import train

    spec = compose_spec([*SMALL, "train.epochs=2"])
    result = train(spec, run_dir=tmp_path / "run", overrides=SMALL)
    final = result.final
    assert {"mean_iou", "pixel_accuracy", "loss", "iou_background"} <= set(final)
    assert 0.0 < final["mean_iou"] <= 1.0 and final["pixel_accuracy"] > 0.5
    assert (tmp_path / "run" / "model" / "config.json").is_file()

    # Predicted masks: written as PNGs of class ids at each image's size, read back; the
    # served ones (inline, base64) are the same masks.
    import base64
    import csv
    import io

    from fastapi.testclient import TestClient

    from ft_cli.assets import generated
    from ft_cli.commands import predict, serve
    from ft_cli.deploy import serving

    scenes = sorted((generated("scenes") / "validation" / "images").glob("*.png"))[:2]
    source = tmp_path / "images.csv"
    source.write_text("image\n" + "".join(f"{p}\n" for p in scenes))
    target = tmp_path / "out.csv"
    run = str(tmp_path / "run")
    assert predict.predict_file(run, source, target, ["task.overlay=true"]) == 2
    with open(target) as handle:
        written = list(csv.DictReader(handle))
    kept = []
    for row, picture in zip(written, scenes, strict=True):
        mask = Image.open(row["predicted_mask"])
        assert mask.size == Image.open(picture).size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 1, 2, 3}
        shares = [float(row[f"share_{c}"]) for c in ("background", "circle", "square", "triangle")]
        assert sum(shares) == pytest.approx(1.0)
        assert Path(row["predicted_mask"].replace(".png", "_overlay.png")).is_file()
        kept.append(np.asarray(mask))
    served, _ = serve.load(run, None, None, [], 8)
    with TestClient(serving.build_app(served, serving.Limits())) as client:
        body = {"images": [base64.b64encode(p.read_bytes()).decode() for p in scenes]}
        answer = client.post("/predict", json=body).json()["predictions"]
    for reply, mask in zip(answer, kept, strict=True):
        inline = Image.open(io.BytesIO(base64.b64decode(reply["predicted_mask"])))
        assert np.array_equal(np.asarray(inline), mask)

    from ft_cli.commands import report

    sheet = tmp_path / "worst.png"
    caption, path = report.task_figure(tmp_path / "run", sheet, "run")
    assert caption.startswith("lowest-IoU images") and path == sheet
    assert Image.open(sheet).size[1] > Image.open(sheet).size[0]  # a row per image


@pytest.mark.slow
def test_export_predicts_the_masks_torch_does_and_resume_is_bit_identical(tmp_path: Path) -> None:
    from conftest import resumes_bit_identical

    from ft_cli.assets import generated
    from ft_cli.commands import export, predict
    from ft_cli.training.engine import train as run

    def train(run_dir: Path, overrides: list[str]) -> object:
        spec = compose_spec([*SMALL, *overrides])
        return run(spec, run_dir=run_dir, overrides=[*SMALL, *overrides])

    overrides = [
        "train.epochs=2",
        "train.save_every=2",
        "train.export=last",
        "train.keep_checkpoints=100",
    ]
    assert resumes_bit_identical(train, tmp_path, overrides)
    folder = str(tmp_path / "reference")
    assert export.main([folder]) == 0
    scenes = sorted((generated("scenes") / "validation" / "images").glob("*.png"))[:3]
    source = tmp_path / "images.csv"
    source.write_text("image\n" + "".join(f"{p}\n" for p in scenes))
    masks_of = {}
    for backend in ("torch", "onnxruntime"):
        target = tmp_path / f"{backend}.csv"
        predict.predict_file(folder, source, target, [], backend=backend)
        found = sorted((tmp_path / f"{backend}.masks").glob("*.png"))
        masks_of[backend] = [np.asarray(Image.open(path)) for path in found]
    assert len(masks_of["torch"]) == 3
    for ours, theirs in zip(masks_of["torch"], masks_of["onnxruntime"], strict=True):
        assert (ours != theirs).mean() < 0.001  # a tie between two classes may flip a pixel


@pytest.mark.slow
def test_an_ensemble_of_a_run_with_its_copy_scores_as_the_run(tmp_path: Path) -> None:
    import shutil

    from ft_cli.ensembles import scoring
    from ft_cli.training.engine import train

    overrides = [*SMALL, "train.epochs=1"]
    run = train(compose_spec(overrides), run_dir=tmp_path / "run", overrides=overrides)
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    folders = [str(tmp_path / "run"), str(tmp_path / "copy")]
    scored = scoring.score(folders, ["mean"], None, "validation", None, [])
    ensemble = scored.rows[-1].metrics
    # The mean of identical per-pixel class probabilities: the run's own masks, scores and
    # loss, as its evaluation computed them from its logits.
    for key in ("mean_iou", "pixel_accuracy", "iou_background", "loss"):
        assert ensemble[key] == pytest.approx(run.final[key], abs=1e-4)
