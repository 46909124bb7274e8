"""Image classification: loading, augmentation, training, freezing, resume, predict, bad input."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_spec
from safetensors.torch import load_file

from ft_cli import inputs
from ft_cli.assets import shapes
from ft_cli.errors import FtError
from ft_cli.inputs import decoded
from ft_cli.inputs import pictures as images

SMALL = [
    "task=image_classification",
    "data=images",
    "model=tiny_resnet",
    "train.batch_size=8",
    "train.eval_batch_size=16",
    "train.log_every=1",
    "hardware.precision=fp32",
    "data.image_workers=0",
    "optimizer.lr=3e-3",
]


def draw_tree(root: Path, per_class: int, classes=("circle", "square", "cross")) -> Path:
    """root/<class>/<i>.png with the demo drawing (32x32), deterministic."""
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([label, i, len(str(root))])
            shapes.draw_shape(name, 32, rng).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    draw_tree(tmp_path / "data" / "train", 12)
    draw_tree(tmp_path / "data" / "validation", 4)
    return tmp_path / "data"


def train(run_dir: Path, overrides: list[str]):
    from ft_cli.training.engine import train as run

    spec = compose_spec([*SMALL, *overrides])
    return run(spec, run_dir=run_dir, overrides=[*SMALL, *overrides])


def data_of(tree: Path) -> list[str]:
    return [f"data.path={tree}", "data.files.validation=validation"]


def test_class_folders_give_sorted_labels_and_balanced_first_rows(tree: Path) -> None:
    paths, labels = images.list_class_folders(tree / "train", "data.files.train")
    assert len(paths) == 36
    assert labels[:3] == ["circle", "cross", "square"]  # classes take turns, sorted
    assert sorted(set(labels)) == ["circle", "cross", "square"]
    assert [p for p, lab in zip(paths, labels, strict=True) if lab == "circle"] == sorted(
        str(p) for p in (tree / "train" / "circle").iterdir()
    )


def test_a_table_of_relative_paths_loads_the_same_rows_as_the_folders(tree: Path) -> None:
    from ft_cli.tasks import get

    paths, labels = images.list_class_folders(tree / "train", "x")
    table = tree / "train.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "kind"])
        for path, label in zip(paths, labels, strict=True):
            writer.writerow([str(Path(path).relative_to(tree)), label])
    spec = compose_spec(
        [
            *SMALL,
            "data=csv",
            f"data.files.train={table}",
            "data.image_column=file",
            "data.label_column=kind",
        ]
    )
    raw = get("image_classification").load_raw(spec.data)
    assert raw.splits["train"]["file"] == paths
    assert raw.splits["train"]["kind"] == labels


def test_images_stored_as_bytes_in_a_table_load_like_files(tree: Path, tmp_path: Path) -> None:
    """A hub image dataset keeps its images as encoded bytes (datasets' Image feature)."""
    import datasets

    from ft_cli.tasks import get

    paths, labels = images.list_class_folders(tree / "train", "x")
    cells = [{"bytes": Path(p).read_bytes(), "path": None} for p in paths]
    table = datasets.Dataset.from_dict({"image": cells, "label": labels})
    table = table.cast_column("image", datasets.Image())
    table.to_parquet(tmp_path / "train.parquet")
    spec = compose_spec([*SMALL, "data=parquet", f"data.files.train={tmp_path / 'train.parquet'}"])
    raw = get("image_classification").load_raw(spec.data)
    refs = raw.splits["train"]["image"]
    assert all(isinstance(r, bytes) for r in refs)
    assert refs[0] == Path(paths[0]).read_bytes()
    assert raw.splits["train"]["label"] == labels


def collator_for(tree: Path, augment: bool, keep_decoded: bool = False):
    from ft_cli.tasks import get

    spec = compose_spec([*SMALL, *data_of(tree)])
    processor = inputs.get("image").processor(spec.model)
    paths, _ = images.list_class_folders(tree / "train", "x")
    split = images.ImageSplit(paths, [0] * len(paths))
    pixels = images.Pixels(processor)
    kind = images.Augmentation((0.25, 1.0), True) if augment else None
    assert get("image_classification").vocab_size(processor) == 0
    collate = images.ImageCollator(split, pixels, 7, kind, keep_decoded=keep_decoded)
    return collate, processor, paths


def test_training_augmentation_is_seeded_per_epoch_and_off_for_evaluation(tree: Path) -> None:
    collate, processor, paths = collator_for(tree, augment=True)
    first = collate([0, 1, 2])["pixel_values"]
    assert torch.equal(first, collate([0, 1, 2])["pixel_values"])  # a pure function
    assert torch.equal(first[1], collate([5, 1])["pixel_values"][1])  # not of its batch
    collate.set_epoch(1)
    assert not torch.equal(first, collate([0, 1, 2])["pixel_values"])  # a new epoch, new crops
    plain, _, _ = collator_for(tree, augment=False)
    expected = processor([images.open_image(p) for p in paths[:3]], return_tensors="pt")
    batch = plain([0, 1, 2])
    assert torch.equal(batch["pixel_values"], expected["pixel_values"])
    assert batch["pixel_values"].shape == first.shape == (3, 3, 32, 32)


@pytest.mark.parametrize("model", ["tiny_resnet", "tiny_vit", "tiny_segformer", "tiny_rtdetr"])
def test_the_batch_path_gives_the_processors_pixels(model: str) -> None:
    """Training batches are rescaled and normalised in torch, not image by image."""
    from PIL import Image

    processor = inputs.get("image").processor(compose_spec([*SMALL, f"model={model}"]).model)
    pixels = images.Pixels(processor)
    assert pixels.scale_shift is not None  # the batch path is taken
    rng = np.random.default_rng(3)
    shots = [Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)) for _ in "ab"]
    sized = [im.resize((pixels.width, pixels.height), Image.Resampling.BILINEAR) for im in shots]
    expected = processor(sized, return_tensors="pt", **pixels.no_resize)["pixel_values"]
    assert torch.allclose(pixels.resized(shots), expected, atol=1e-5)


def test_a_processor_the_batch_path_cannot_match_keeps_its_own_steps() -> None:
    processor = inputs.get("image").processor(compose_spec(SMALL).model)
    processor.do_pad = True  # a step the batch path does not take
    assert images.Pixels(processor).scale_shift is None


@pytest.mark.parametrize(
    ("asked", "cores", "expected"), [(3, 2, 3), (None, 2, 0), (None, 8, 2), (None, 64, 4)]
)
def test_decoding_workers_leave_a_small_machine_to_the_model(
    monkeypatch, asked, cores, expected
) -> None:
    monkeypatch.setattr(images.os, "sched_getaffinity", lambda _: set(range(cores)))
    assert images.loader_workers(asked) == expected


def test_decoded_images_are_kept_for_the_next_epoch_within_the_budget(
    tree: Path, monkeypatch
) -> None:
    collate, _, _ = collator_for(tree, augment=True, keep_decoded=True)
    opened: list[object] = []
    real_open = images.open_image
    monkeypatch.setattr(images, "open_image", lambda ref: opened.append(ref) or real_open(ref))
    first = collate([0, 1])["pixel_values"]
    collate.set_epoch(1)
    collate([0, 1])
    collate.set_epoch(0)
    assert torch.equal(collate([0, 1])["pixel_values"], first)  # the same pixels
    assert len(opened) == 2  # each decoded once
    monkeypatch.setattr(decoded, "BUDGET_BYTES", collate.decoded.bytes)  # full now
    collate([2, 3])
    collate([2, 3])
    assert len(opened) == 6 and sorted(collate.decoded.kept) == [0, 1]
    once, _, _ = collator_for(tree, augment=False)  # evaluation, prediction: one pass
    once([0, 1])
    assert not once.decoded.kept


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_vit", "tiny_resnet"])
def test_tiny_models_train_with_falling_loss(tree: Path, tmp_path: Path, model: str) -> None:
    from test_train import scalars

    train(tmp_path / model, [*data_of(tree), f"model={model}", "train.epochs=4"])
    losses = [v for _, v in scalars(tmp_path / model, "train/loss")]
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5])
    export = tmp_path / model / "model"
    assert (export / "preprocessor_config.json").is_file()
    assert (export / "model.safetensors").is_file()


def test_freeze_backbone_leaves_the_backbone_bit_identical(tree: Path, tmp_path: Path) -> None:
    from ft_cli.hardware import parallel
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.training import setup

    overrides = [*data_of(tree), "strategy=freeze_backbone", "train.max_steps=6"]
    train(tmp_path / "run", overrides)
    spec = compose_spec([*SMALL, *overrides])
    start = setup.build(
        spec, setup.Purpose.evaluate, parallel.Backend(), setup_hardware(spec.hardware)
    ).net.state_dict()
    final = load_file(tmp_path / "run" / "model" / "model.safetensors")
    backbone = [k for k in final if k.startswith("resnet.")]
    assert backbone and any("running_mean" in k for k in backbone)  # batch-norm stats too
    assert all(torch.equal(final[k], start[k]) for k in backbone)
    assert not torch.equal(final["classifier.1.weight"], start["classifier.1.weight"])


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tree: Path, tmp_path: Path) -> None:
    import shutil

    overrides = [
        *data_of(tree),
        "train.epochs=2",
        "train.save_every=2",
        "train.export=last",
        "train.keep_checkpoints=100",
        "data.image_workers=2",
    ]
    train(tmp_path / "reference", overrides)
    train(tmp_path / "cut", overrides)
    cut = tmp_path / "cut"
    for ckpt in (cut / "checkpoints").glob("step-*"):
        if int(ckpt.name.split("-")[1]) > 4:  # mid-way through the first epoch
            shutil.rmtree(ckpt)
    shutil.rmtree(cut / "model")
    (cut / "metrics.json").unlink()
    train(cut, [*overrides, "resume=auto"])
    a = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    b = load_file(cut / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_predict_on_a_folder_writes_a_row_per_image_in_order(tree: Path, tmp_path: Path) -> None:
    from ft_cli import cli

    train(tmp_path / "run", [*data_of(tree), "train.max_steps=2"])
    target = tmp_path / "out.csv"
    folder = tree / "validation"
    assert (
        cli._run_tool(
            "predict", [str(tmp_path / "run"), "--input", str(folder), "--output", str(target)]
        )
        == 0
    )
    with open(target) as handle:
        rows = list(csv.DictReader(handle))
    expected = [str(Path(p).relative_to(folder)) for p in images.list_images(folder)]
    assert [r["image"] for r in rows] == expected == sorted(expected)
    assert {r["predicted_label"] for r in rows} <= {"circle", "cross", "square"}
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(folder / p) for p in expected[:3]) + "\n")
    assert (
        cli._run_tool(
            "predict",
            [str(tmp_path / "run"), "--input", str(listing), "--output", str(tmp_path / "few.csv")],
        )
        == 0
    )
    with open(tmp_path / "few.csv") as handle:
        assert [r["predicted_label"] for r in csv.DictReader(handle)] == [
            r["predicted_label"] for r in rows[:3]
        ]
    from ft_cli.commands import report

    report.write_report(tmp_path / "run")
    counts, labels = report.confusion_matrix(tmp_path / "run")
    assert labels == ["circle", "cross", "square"] and sum(map(sum, counts)) == 12
    wrong = sum(counts[i][j] for i in range(3) for j in range(3) if i != j)
    assert (tmp_path / "run" / "misclassified.png").is_file() == (wrong > 0)


def test_grey_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (20, 10), 128).save(tmp_path / "grey.png")
    Image.new("RGBA", (20, 10), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    for name in ("grey.png", "rgba.png"):
        image = images.open_image(str(tmp_path / name))
        assert image.mode == "RGB" and image.size == (20, 10)


def test_unreadable_and_non_image_files_are_counted_and_skipped(tree: Path, capsys) -> None:
    (tree / "train" / "circle" / "broken.png").write_bytes(b"not a png at all")
    (tree / "train" / "square" / "notes.txt").write_text("hello")
    from ft_cli.tasks import get

    spec = compose_spec([*SMALL, *data_of(tree)])
    raw = get("image_classification").load_raw(spec.data)
    err = capsys.readouterr().err
    assert "skipped 1 file(s)" in err and "not images" in err
    assert "skipped 1 of 37 images that cannot be read (first:" in err and "broken.png" in err
    assert len(raw.splits["train"]) == 36


def test_a_class_missing_from_validation_is_a_counted_warning(tree: Path, tmp_path, capsys):
    import shutil

    shutil.rmtree(tree / "validation" / "cross")
    train(tmp_path / "run", [*data_of(tree), "train.max_steps=1"])
    assert "the validation split has no images of 1 class(es): cross" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "empty_class",
            "data.files.train: class folder '{root}/train/empty' holds no images; add images (.png, .jpg, .jpeg, ...) or remove the folder",
        ),
        (
            "no_classes",
            "data.files.train: '{root}/train' holds no class folders; put each class's images in {root}/train/<label>/ (for example {root}/train/cat/1.png)",
        ),
        (
            "unknown_class",
            "data.label_column: label 'star' in column 'label' of the validation split (row 3) is not in the label set [circle, cross, square]; fix the data or list every class in task.labels",
        ),
        (
            "all_broken",
            "data.files.train: no image can be read (first: {root}/train/circle/000.png:",
        ),
    ],
)
def test_bad_image_data_gets_one_line(tree: Path, tmp_path: Path, change: str, message: str):
    import shutil

    if change == "empty_class":
        (tree / "train" / "empty").mkdir()
    elif change == "no_classes":
        shutil.rmtree(tree / "train")
        (tree / "train").mkdir()
    elif change == "unknown_class":
        (tree / "validation" / "star").mkdir()
        shutil.copy(tree / "validation" / "circle" / "000.png", tree / "validation" / "star")
    else:
        for png in (tree / "train").rglob("*.png"):
            png.write_bytes(b"junk")
    with pytest.raises(FtError) as caught:
        train(tmp_path / "run", [*data_of(tree), "train.max_steps=1"])
    text = str(caught.value)
    assert text.startswith(message.format(root=tree)) and "\n" not in text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["augment=token_mask"],
            "augment: changes tokens or sentence vectors; images are augmented by data.image_crop and data.image_flip: use augment=none",
        ),
        (
            ["data.image_crop=[0.9,0.5]"],
            "data.image_crop=[0.9, 0.5]: the low share is above the high one; give [low, high], e.g. [0.25, 1.0]",
        ),
        (
            ["task=classification"],
            "data.format=imagefolder holds images: use task=image_classification",
        ),
        (
            ["data=text", "data.files.train=x.txt"],
            "task=image_classification reads images: set data.format to one of imagefolder, maskfolder, coco, hub, csv, tsv, json, parquet",
        ),
    ],
)
def test_image_settings_are_checked(overrides: list[str], message: str) -> None:
    with pytest.raises(FtError, match="^" + re.escape(message)):
        compose_spec([*SMALL, "data.path=somewhere", *overrides])


def test_images_are_not_a_task_of_a_multi_task_run() -> None:
    with pytest.raises(
        FtError,
        match=r"^task\.tasks\.sentiment\.kind=image_classification: the tasks of a multi-task run share one text encoder; train the images in a run of their own$",
    ):
        compose_spec(["+recipe=demo_multitask", "task.tasks.sentiment.kind=image_classification"])


@pytest.mark.slow
def test_distill_an_image_teacher_into_a_student(tree: Path, tmp_path: Path) -> None:
    train(tmp_path / "teacher", [*data_of(tree), "train.max_steps=4"])
    result = train(
        tmp_path / "student",
        [
            *data_of(tree),
            "train.max_steps=4",
            "strategy=distill",
            f"strategy.teacher.from_run={tmp_path / 'teacher'}",
        ],
    )
    assert result.steps == 4
    from ft_cli.hardware import parallel
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.training import setup

    def teacher_cache(extra: list[str]):
        spec = compose_spec(
            [
                *SMALL,
                *data_of(tree),
                "strategy=distill",
                f"strategy.teacher.from_run={tmp_path / 'teacher'}",
                *extra,
            ]
        )
        ready = setup.build(
            spec, setup.Purpose.train, parallel.Backend(), setup_hardware(spec.hardware)
        )
        return ready.objective.cache

    assert teacher_cache([]) is None  # cropped and flipped anew each epoch: never cached
    assert teacher_cache(["data.image_crop=null", "data.image_flip=false"]) == {}


def test_a_teacher_must_prepare_images_as_the_student_does() -> None:
    from transformers import ViTImageProcessorPil

    from ft_cli.tasks import get

    task = get("image_classification")
    small = ViTImageProcessorPil(size={"height": 32, "width": 32})
    assert task.same_inputs(small, ViTImageProcessorPil(size={"height": 32, "width": 32}))
    assert not task.same_inputs(small, ViTImageProcessorPil(size={"height": 64, "width": 64}))
    assert not task.same_inputs(
        small, ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.4, 0.4, 0.4])
    )


def test_the_hub_recipe_fails_offline_in_one_line(tmp_path: Path) -> None:
    from ft_cli import cli

    code = cli.run_train(["+recipe=vit_beans", f"hydra.run.dir={tmp_path / 'run'}"])
    assert code != 0
    assert not (tmp_path / "run" / "model").exists()


def test_hub_image_model_offline_message(monkeypatch) -> None:
    from ft_cli.models import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    spec = compose_spec(["+recipe=vit_beans"])
    with pytest.raises(FtError) as caught:
        inputs.get("image").processor(spec.model)
    assert str(caught.value) == (
        "model.name_or_path: 'google/vit-base-patch16-224-in21k' is not a local path, not in the"
        " Hugging Face cache, and the hub cannot be reached (offline?); use a local folder"
        " (model.name_or_path=DIR) or a packaged image model with fresh weights:"
        " model=tiny_resnet, tiny_vit, tiny_segformer or tiny_rtdetr"
    )


def test_layer_groups_follow_blocks_and_stages() -> None:
    from transformers import AutoConfig, AutoModelForImageClassification, ConvNextConfig

    from ft_cli.config.schema import StrategyConfig, StrategyKind
    from ft_cli.strategies import layers

    def groups(net) -> dict[str, int]:
        found: dict[str, int] = {}
        for name, param in net.named_parameters():
            found[layers.group_of(name)] = found.get(layers.group_of(name), 0) + param.numel()
        return found

    resnet = AutoModelForImageClassification.from_config(
        AutoConfig.from_pretrained(resolve("tiny_resnet"), num_labels=3)
    )
    assert layers.num_layers_of(resnet) == 3
    assert set(groups(resnet)) == {"embeddings", "layer.0", "layer.1", "layer.2", "head"}
    assert (
        layers.group_of("resnet.encoder.stages.2.layers.0.layer.1.convolution.weight") == "layer.2"
    )
    convnext = AutoModelForImageClassification.from_config(
        ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3)
    )
    assert set(groups(convnext)) == {"embeddings", "layer.0", "layer.1", "head"}
    # freeze_layers over stages: the stem and the first two stages stop training.
    applied = layers.apply_strategy(
        resnet, StrategyConfig(kind=StrategyKind.freeze_layers, frozen_layers=2)
    )
    trainable = {layers.group_of(n) for n, p in resnet.named_parameters() if p.requires_grad}
    assert trainable == {"layer.2", "head"} and applied.num_layers == 3


def resolve(name: str) -> str:
    from ft_cli.paths import resolve_path

    return resolve_path(f"pkg:ft_cli/assets/{name}", "model")
