"""Audio: decoding and resampling, crops and windows, augmentation, training, strategies,
resume, predict, bad files and settings."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import compose_spec, resumes_bit_identical
from safetensors.torch import load_file

from ft_cli import inputs
from ft_cli.assets import tones
from ft_cli.errors import FtError
from ft_cli.inputs import pictures, sounds

SMALL = [
    "task=audio_classification",
    "data=audio",
    "model=tiny_wav2vec2",
    "train.batch_size=8",
    "train.eval_batch_size=16",
    "train.log_every=1",
    "hardware.precision=fp32",
    "optimizer.lr=3e-3",
    "data.max_seconds=1.0",
]
CLASSES = ("beeps", "hum", "noise")
INPUTS = ("input_values", "attention_mask")


def write_tree(root: Path, per_class: int, rate: int = 16_000) -> Path:
    """root/<class>/<i>.wav of the demo sounds, deterministic (`rate`: resampled to it)."""
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            clip = tones.clip(name, np.random.default_rng([label, i, len(str(root))]))
            soundfile.write(root / name / f"{i:03d}.wav", sounds.resample(clip, 16_000, rate), rate)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write_tree(tmp_path / "data" / "train", 8)
    write_tree(tmp_path / "data" / "validation", 3, rate=8_000)  # resampled when read
    return tmp_path / "data"


def data_of(tree: Path) -> list[str]:
    return [f"data.path={tree}", "data.files.validation=validation"]


def train(run_dir: Path, overrides: list[str]):
    from ft_cli.training.engine import train as run

    spec = compose_spec([*SMALL, *overrides])
    return run(spec, run_dir=run_dir, overrides=[*SMALL, *overrides])


def sine(frequency: float, rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    time = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * frequency * time).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def peak(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("original", [8_000, 22_050, 44_100, 16_000])
def test_a_sine_keeps_its_frequency_and_duration_when_resampled(tmp_path, original) -> None:
    path = tmp_path / "a.flac"
    soundfile.write(path, sine(440.0, original, 1.0, channels=2), original)  # stereo FLAC
    samples = sounds.decode(str(path), 16_000)
    assert samples.dtype == np.float32 and samples.ndim == 1  # mixed down to mono
    assert abs(len(samples) - 16_000) <= 2
    assert abs(peak(samples, 16_000) - 440.0) < 2.0
    assert np.abs(samples).max() == pytest.approx(0.5, abs=0.02)  # the level kept
    assert sounds.decode(path.read_bytes(), 16_000) == pytest.approx(samples)  # bytes too


def test_channels_are_averaged() -> None:
    import io

    left, right = sine(300, 16_000, 0.5), sine(1200, 16_000, 0.5)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([left, right], axis=1), 16_000, format="WAV")
    mono = sounds.decode(buffer.getvalue(), 16_000)
    assert mono == pytest.approx((left + right) / 2, abs=1e-4)


def test_windows_cover_a_long_clip_with_overlap() -> None:
    assert sounds.window_offsets(0.8, 1.0) == [0.0]
    assert sounds.window_offsets(1.0, 1.0) == [0.0]
    starts = sounds.window_offsets(3.1, 1.0)
    assert starts[0] == 0.0 and starts[-1] == pytest.approx(2.1)  # the last ends at the end
    steps = np.diff(starts)
    assert np.allclose(steps, steps[0]) and steps[0] <= 0.75  # overlapping by at least 1/4


def features() -> sounds.Features:
    spec = compose_spec(SMALL)
    return sounds.Features(inputs.get("audio").processor(spec.model))


def test_crops_windows_and_their_inputs(tmp_path) -> None:
    long, short = tmp_path / "long.wav", tmp_path / "short.wav"
    ramp = np.linspace(-0.5, 0.5, 16_000 * 3, dtype=np.float32)  # each sample says where it is
    soundfile.write(long, ramp, 16_000, subtype="FLOAT")
    soundfile.write(short, ramp[:8000], 16_000, subtype="FLOAT")
    extract = features()
    assert extract.rate == 16_000 and extract.name == "input_values"
    assert not extract.spectrogram
    split = sounds.SoundSplit([str(long), str(short)], [0, 1])
    centre = sounds.SoundCollator(split, extract, 1.0)
    assert np.array_equal(centre.load(0), ramp[16_000:32_000])  # the middle second
    assert np.array_equal(centre.load(1), ramp[:8000])  # shorter: whole
    crop = sounds.SoundCollator(split, extract, 1.0, seed=3, crop="random")
    first = crop.load(0)
    assert len(first) == 16_000 and np.array_equal(first, crop.load(0))  # seeded
    crop.set_epoch(1)
    assert not np.array_equal(first, crop.load(0))  # another epoch, another crop
    windows = sounds.windowed([str(long), str(short)], [0, 1], 1.0)
    assert windows.rows == [0, 0, 0, 0, 1] and windows.labels == [0, 0, 0, 0, 1]
    cut = sounds.SoundCollator(windows, extract, 1.0, windows=True)
    assert np.array_equal(cut.load(3), ramp[32_000:48_000])  # the last window ends at the end
    batch = cut([0, 4])
    assert batch["input_values"].shape == (2, 16_000)
    assert batch["attention_mask"].tolist()[1] == [1] * 8000 + [0] * 8000  # padding masked
    assert batch["window"].tolist() == [0, 4] and batch["labels"].tolist() == [0, 1]


def test_batches_are_padded_to_a_multiple_only_where_the_padding_is_masked(tmp_path) -> None:
    from transformers import AutoConfig, AutoModelForAudioClassification, Wav2Vec2FeatureExtractor

    rng = np.random.default_rng(5)
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for path, size in zip(paths, (9_000, 12_345), strict=True):
        soundfile.write(path, rng.normal(0, 0.3, size).astype(np.float32), 16_000, "FLOAT")
    split = sounds.SoundSplit([str(p) for p in paths], [0, 1])
    extract = features()
    assert extract.pads_freely  # the tiny wav2vec2's extractor masks its padding
    longest = sounds.SoundCollator(split, extract, 2.0)([0, 1])
    rounded = sounds.SoundCollator(split, extract, 2.0, multiple=2_560)([0, 1])
    assert longest["input_values"].shape == (2, 12_345)
    assert rounded["input_values"].shape == (2, 12_800)  # 5 x 2,560
    assert rounded["attention_mask"].sum(-1).tolist() == [9_000, 12_345]
    capped = sounds.SoundCollator(split, extract, 0.78, multiple=2_560)([0, 1])
    assert capped["input_values"].shape == (2, 12_480)  # not past max_seconds' samples
    from ft_cli.paths import resolve_path

    path = resolve_path("pkg:ft_cli/assets/tiny_wav2vec2", "model")
    config = AutoConfig.from_pretrained(path, num_labels=2)
    torch.manual_seed(0)
    model = AutoModelForAudioClassification.from_config(config).eval()
    with torch.no_grad():
        wide, narrow = (model(**{k: b[k] for k in INPUTS}).logits for b in (rounded, longest))
    assert torch.allclose(wide, narrow, atol=1e-5)  # the extra padding changes nothing
    unmasked = sounds.Features(Wav2Vec2FeatureExtractor(return_attention_mask=False))
    assert not unmasked.pads_freely  # the model would read its padding: kept to the longest
    plain = sounds.SoundCollator(split, unmasked, 2.0, multiple=2_560)([0, 1])
    assert plain["input_values"].shape == (2, 12_345)


def test_each_clip_is_decoded_once_and_its_windows_share_it(tmp_path, monkeypatch) -> None:
    clip = tmp_path / "clip.wav"
    ramp = np.linspace(-0.5, 0.5, 16_000 * 3, dtype=np.float32)
    soundfile.write(clip, ramp, 16_000, subtype="FLOAT")
    decoded: list[object] = []
    real_decode = sounds.decode
    monkeypatch.setattr(
        sounds, "decode", lambda ref, rate: decoded.append(ref) or real_decode(ref, rate)
    )
    windows = sounds.windowed([str(clip)], [0], 1.0)
    cut = sounds.SoundCollator(windows, features(), 1.0, windows=True, keep_decoded=True)
    first = cut([0, 1, 2, 3])["input_values"]
    cut.set_epoch(1)
    assert torch.equal(cut([0, 1, 2, 3])["input_values"], first)
    assert decoded == [str(clip)]  # one decoding for four windows and two epochs
    crop = sounds.SoundCollator(windows, features(), 1.0, seed=3, crop="random", keep_decoded=True)
    with pytest.raises(ValueError, match="read-only"):  # what is kept cannot be changed
        crop.decoded_clip(0)[0] = 1.0
    once = sounds.SoundCollator(windows, features(), 1.0, windows=True)  # one pass: predict
    once([0, 1])
    assert not once.decoded.kept and len(decoded) == 4  # each window decodes its clip anew


def augmenting(tree: Path, **keys) -> tuple[sounds.SoundCollator, sounds.SoundCollator]:
    from ft_cli.config.schema import AugmentConfig

    paths, _ = pictures.list_class_folders(tree / "train", "x", sounds.EXTENSIONS)
    split = sounds.SoundSplit(paths, [0] * len(paths))
    plain = sounds.SoundCollator(split, features(), 2.0, seed=7)
    return plain, plain.augmented_with(AugmentConfig(**keys))


@pytest.mark.parametrize(
    "keys",
    [
        {"audio_gain_db": 6.0},
        {"audio_noise_snr": [10.0, 20.0]},
        {"audio_time_shift": 0.2},
        {"audio_speed": [0.8, 1.2]},
        {"audio_time_mask": 0.3},
    ],
)
def test_each_augmentation_is_seeded_per_epoch_and_absent_at_evaluation(tree, keys) -> None:
    plain, changed = augmenting(tree, **keys)
    assert changed is not plain and plain.augmentation is None
    batch = changed([0, 1, 2])
    first, length = batch["input_values"], int(batch["attention_mask"][1].sum())
    assert torch.equal(first, changed([0, 1, 2])["input_values"])  # a pure function
    assert torch.equal(first[1][:length], changed([5, 1])["input_values"][1][:length])
    assert not torch.equal(first, plain([0, 1, 2])["input_values"])  # it changes the clip
    changed.set_epoch(1)
    assert not torch.equal(first, changed([0, 1, 2])["input_values"])
    none, _ = augmenting(tree)
    assert torch.equal(plain([0, 1, 2])["input_values"], none([0, 1, 2])["input_values"])


def test_noise_lands_at_its_signal_to_noise_ratio() -> None:
    clean = sine(440, 16_000, 2.0)
    noisy = sounds.add_noise(clean, 20.0, np.random.default_rng(0))
    ratio = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert ratio == pytest.approx(20.0, abs=0.3)


def test_speed_changes_pitch_and_length_together() -> None:
    faster = sounds.change_speed(sine(440, 16_000, 1.0), 1.25, 16_000)
    assert abs(len(faster) - 12_800) <= 2
    assert abs(peak(faster, 16_000) - 550.0) < 3.0


def test_spectrogram_masks_hide_a_time_span_and_a_band() -> None:
    from transformers import ASTFeatureExtractor

    from ft_cli.config.schema import AugmentConfig

    extract = sounds.Features(ASTFeatureExtractor(num_mel_bins=32, max_length=100))
    assert extract.spectrogram and extract.name == "input_values"
    assert (extract.time_axis, extract.frequency_axis) == (1, 2)
    clip = sine(440, 16_000, 1.0) + np.random.default_rng(0).normal(0, 0.1, 16_000)
    split = sounds.SoundSplit([clip.astype(np.float32)], [0])
    plain = sounds.SoundCollator(split, extract, 1.0, seed=1)
    plain.load = lambda index: split.sounds[index]  # the clip as it is
    masked = plain.augmented_with(AugmentConfig(audio_time_mask=0.2, audio_freq_mask=0.25))
    before, after = plain([0])["input_values"][0], masked([0])["input_values"][0]
    changed = before != after
    frames, bins = changed.all(dim=1).sum(), changed.all(dim=0).sum()
    assert 15 <= frames <= 21 and bins == 8  # a span of ~20% of frames, 25% of 32 bins


@pytest.mark.parametrize(("mask", "normalize"), [(True, True), (False, True), (True, False)])
def test_waveform_batches_are_the_extractors_own(mask: bool, normalize: bool) -> None:
    from transformers import ASTFeatureExtractor, Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=mask, do_normalize=normalize)
    extract = sounds.Features(extractor)
    assert extract.batched  # the whole batch at once
    rng = np.random.default_rng(4)
    clips = [rng.normal(0.1, 0.4, n).astype(np.float32) for n in (16_000, 9_000, 12_345)]
    theirs = extractor(clips, sampling_rate=16_000, return_tensors="pt", padding=True)
    ours = extract(clips)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype
        assert torch.allclose(ours[key].float(), value.float(), atol=1e-5)
    assert not sounds.Features(ASTFeatureExtractor(num_mel_bins=32, max_length=100)).batched


def test_the_demo_set_is_made_once_and_the_same_everywhere(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path))
    assert np.array_equal(
        tones.clip("chirp", np.random.default_rng(1)), tones.clip("chirp", np.random.default_rng(1))
    )
    from ft_cli import assets

    with pytest.raises(FtError, match="use one of generated:shapes, generated:tones"):
        assets.generated("birdsong")


def test_layer_groups_put_the_feature_encoder_in_the_stem() -> None:
    from transformers import AutoConfig, AutoModelForAudioClassification

    from ft_cli.config.schema import StrategyConfig, StrategyKind
    from ft_cli.paths import resolve_path
    from ft_cli.strategies import layers

    config = AutoConfig.from_pretrained(
        resolve_path("pkg:ft_cli/assets/tiny_wav2vec2", "model"), num_labels=3
    )
    net = AutoModelForAudioClassification.from_config(config)
    groups = {layers.group_of(name) for name, _ in net.named_parameters()}
    assert groups == {"embeddings", "layer.0", "layer.1", "head"}
    assert layers.group_of("wav2vec2.feature_extractor.conv_layers.0.conv.weight") == "embeddings"
    assert layers.group_of("wav2vec2.encoder.layers.1.attention.q_proj.weight") == "layer.1"
    # freeze_layers with no layer: the feature encoder alone stops training, as usual first.
    layers.apply_strategy(net, StrategyConfig(kind=StrategyKind.freeze_layers, frozen_layers=0))
    frozen = {n.split(".")[1] for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"feature_extractor", "feature_projection", "encoder"}  # its pos_conv_embed
    assert all(
        p.requires_grad for n, p in net.named_parameters() if ".layers." in n or "classifier" in n
    )


@pytest.mark.slow
def test_train_predict_and_report(tree: Path, tmp_path: Path) -> None:
    from test_train import scalars

    from ft_cli import cli

    train(tmp_path / "run", [*data_of(tree), "train.epochs=3", "augment=audio"])
    losses = [v for _, v in scalars(tmp_path / "run", "train/loss")]
    assert len(losses) == 9 and np.mean(losses[-3:]) < np.mean(losses[:3])
    export = tmp_path / "run" / "model"
    assert (export / "preprocessor_config.json").is_file()
    assert (export / "model.safetensors").is_file()
    target = tmp_path / "out.csv"
    folder = tree / "validation"
    args = [str(tmp_path / "run"), "--input", str(folder), "--output", str(target)]
    assert cli._run_tool("predict", args) == 0
    with open(target) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["audio"] for r in rows] == sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*.wav")
    )
    assert {r["predicted_label"] for r in rows} <= set(CLASSES)
    from ft_cli.commands import report

    report.write_report(tmp_path / "run")
    counts, labels = report.confusion_matrix(tmp_path / "run")
    assert labels == sorted(CLASSES) and sum(map(sum, counts)) == 9
    wrong = sum(counts[i][j] for i in range(3) for j in range(3) if i != j)
    assert (tmp_path / "run" / "misclassified.png").is_file() == (wrong > 0)


def test_bad_files_are_counted_and_skipped(tree: Path, capsys) -> None:
    from ft_cli.tasks import get

    (tree / "train" / "hum" / "empty.wav").write_bytes(b"")
    soundfile.write(tree / "train" / "hum" / "silent.wav", np.zeros(0, np.float32), 16_000)
    (tree / "train" / "noise" / "text.wav").write_text("not a sound\n")
    spec = compose_spec([*SMALL, *data_of(tree)])
    raw = get("audio_classification").load_raw(spec.data)
    assert len(raw.splits["train"]) == 24
    err = capsys.readouterr().err
    assert "data.files.train: skipped 3 of 27 audio clips that cannot be read (first:" in err


def test_a_set_of_only_bad_files_is_refused(tmp_path: Path) -> None:
    from ft_cli.tasks import get

    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "x.wav").write_bytes(b"RIFF")
    spec = compose_spec([*SMALL, f"data.path={tmp_path}"])
    with pytest.raises(FtError, match=r"^data.files.train: no audio clip can be read \(first:"):
        get("audio_classification").load_raw(spec.data)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["augment=token_mask"],
            "augment.token_mask: changes tokens or sentence vectors; task=audio_classification"
            " reads audio clips, augmented by augment.audio_gain_db, augment.audio_noise_snr,"
            " augment.audio_time_shift, augment.audio_speed, augment.audio_time_mask,"
            " augment.audio_freq_mask: set it to 0",
        ),
        (
            ["data.format=text"],
            "task=audio_classification reads audio: set data.format to one of audiofolder,"
            " hub, csv, tsv, json, parquet",
        ),
        (["data.max_seconds=0"], "data.max_seconds=0"),
        (["augment.audio_speed=[0.1,1]"], "augment.audio_speed"),
    ],
)
def test_audio_settings_are_checked(overrides: list[str], message: str) -> None:
    with pytest.raises(FtError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        compose_spec([*SMALL, *overrides])


def test_audio_augmentation_is_refused_for_text() -> None:
    with pytest.raises(FtError) as caught:
        compose_spec(["augment.audio_gain_db=3"])
    assert str(caught.value).startswith(
        "augment.audio_gain_db: changes sounds; task=classification reads text, augmented by"
        " augment.token_mask"
    )


def test_frequency_masks_need_a_spectrogram(tree: Path) -> None:
    with pytest.raises(FtError, match=r"^augment\.audio_freq_mask: the model reads waveforms"):
        augmenting(tree, audio_freq_mask=0.2)


def test_freeze_layers_keeps_the_feature_encoder_bit_identical(tree: Path, tmp_path) -> None:
    from ft_cli.hardware import parallel
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.training import setup

    overrides = [*data_of(tree), "strategy=freeze_layers", "strategy.frozen_layers=0"]
    overrides.append("train.max_steps=4")
    train(tmp_path / "run", overrides)
    spec = compose_spec([*SMALL, *overrides])
    start = setup.build(
        spec, setup.Purpose.evaluate, parallel.Backend(), setup_hardware(spec.hardware)
    ).net.state_dict()
    final = load_file(tmp_path / "run" / "model" / "model.safetensors")
    encoder = [k for k in final if ".feature_extractor." in k]
    assert encoder and all(torch.equal(final[k], start[k]) for k in encoder)
    moved = [k for k in final if ".layers." in k]
    assert any(not torch.equal(final[k], start[k]) for k in moved)


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tree: Path, tmp_path: Path) -> None:

    overrides = [
        *data_of(tree),
        "train.epochs=2",
        "train.save_every=2",
        "train.export=last",
        "train.keep_checkpoints=100",
        "augment=audio",
    ]
    assert resumes_bit_identical(train, tmp_path, overrides)


def test_hub_audio_model_offline_message(monkeypatch) -> None:
    from ft_cli.models import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    spec = compose_spec([*SMALL, "model=wav2vec2_base"])
    with pytest.raises(FtError) as caught:
        inputs.get("audio").processor(spec.model)
    assert str(caught.value) == (
        "model.name_or_path: 'facebook/wav2vec2-base' is not a local path, not in the Hugging"
        " Face cache, and the hub cannot be reached (offline?); use a local folder"
        " (model.name_or_path=DIR) or a packaged audio model, model=tiny_wav2vec2 (fresh"
        " weights)"
    )


@pytest.mark.slow
def test_ensembles_and_distillation_of_audio_runs(tree: Path, tmp_path: Path, capsys) -> None:
    import json

    from ft_cli import cli

    runs = []
    for seed in (1, 2):
        runs.append(tmp_path / f"run{seed}")
        train(runs[-1], [*data_of(tree), "train.epochs=2", f"train.seed={seed}"])
    capsys.readouterr()
    assert cli._run_tool("eval", [*map(str, runs), "--ensemble", "mean,vote,stack"]) == 0
    assert "ensemble: stack" in " ".join(capsys.readouterr().out.split())
    folder = tmp_path / "twice"
    args = [str(runs[0]), str(runs[0]), "--method", "mean", "--output", str(folder)]
    assert cli._run_tool("ensemble", args) == 0
    assert cli._run_tool("eval", [str(folder)]) == 0
    scored = json.loads((folder / "ensemble_metrics.json").read_text())
    best = json.loads((runs[0] / "metrics.json").read_text())["best"]
    alone = {k: v for k, v in best.items() if k != "step"}
    assert scored["rows"] == 9
    for row in scored["models"]:  # a run with itself is the run
        assert row["metrics"] == pytest.approx(alone, abs=1e-5), row["name"]
    from ft_cli.hardware import parallel
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.training import setup

    distilled = [*data_of(tree), "strategy=distill", f"strategy.teacher.from_run={runs[0]}"]
    assert train(tmp_path / "student", [*distilled, "train.max_steps=3"]).steps == 3

    def teacher_cache(extra: list[str]):
        spec = compose_spec([*SMALL, *distilled, *extra])
        ready = setup.build(
            spec, setup.Purpose.train, parallel.Backend(), setup_hardware(spec.hardware)
        )
        return ready.objective.cache

    assert teacher_cache(["augment=audio"]) is None  # changed anew each epoch: never kept
    assert teacher_cache(["data.audio_crop=random"]) is None  # so is a random crop
    assert teacher_cache(["data.audio_crop=centre"]) == {}


def test_a_missing_audio_library_names_the_install_command(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "soxr", None)  # an import of it fails
    with pytest.raises(FtError) as caught:
        sounds.resample(np.zeros(100, np.float32), 8_000, 16_000)
    assert str(caught.value) == (
        "audio needs the soxr package: pip install 'ft-cli[audio]' (soundfile, soxr)"
    )


def test_served_requests_are_decoded_and_checked_before_they_queue() -> None:
    import base64
    import io

    from ft_cli.deploy.serving import Limits
    from ft_cli.inputs.base import RequestError

    audio = inputs.get("audio")
    buffer = io.BytesIO()
    soundfile.write(buffer, sine(440, 16_000, 0.5), 16_000, format="FLAC")
    clip = buffer.getvalue()
    rows, single = audio.request_rows(
        {"audio": base64.b64encode(clip).decode()}, {"audio": "file"}, Limits(), False
    )
    assert single and rows == [{"file": clip}]

    def refused(body: dict) -> tuple[int, str]:
        with pytest.raises(RequestError) as raised:
            audio.request_rows(body, {"audio": "file"}, Limits(max_items=2), False)
        return raised.value.status, str(raised.value)

    assert refused({"audio": 3}) == (422, "audio: expected a base64 string, got a number")
    cut = base64.b64encode(clip[: len(clip) // 2]).decode()
    status, message = refused({"audios": [base64.b64encode(clip).decode(), cut]})
    assert status == 422 and message.startswith("audios.1: not a readable sound file (")
    assert refused({"audios": ["a", "b", "c"]}) == (413, "audios: 3 items; at most 2 a request")


@pytest.mark.slow
def test_the_onnx_export_predicts_as_torch_does(tree: Path, tmp_path: Path) -> None:
    from ft_cli import cli

    train(tmp_path / "run", [*data_of(tree), "train.max_steps=3", "data.max_seconds=0.5"])
    assert cli._run_tool("export", [str(tmp_path / "run")]) == 0
    written = {}
    for backend in ("torch", "onnxruntime"):
        target = tmp_path / f"{backend}.csv"
        args = [str(tmp_path / "run"), "--input", str(tree / "validation")]
        assert cli._run_tool("predict", [*args, "--output", str(target), "--backend", backend]) == 0
        with open(target) as handle:
            written[backend] = list(csv.DictReader(handle))
    assert [r["predicted_label"] for r in written["torch"]] == [
        r["predicted_label"] for r in written["onnxruntime"]
    ]
    for mine, theirs in zip(written["torch"], written["onnxruntime"], strict=True):
        assert (
            abs(float(mine["predicted_probability"]) - float(theirs["predicted_probability"]))
            < 1e-5
        )


SPOKEN_DIGITS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "spoken_digits"


@pytest.mark.skipif(not SPOKEN_DIGITS.is_dir(), reason="../shared/data/spoken_digits is absent")
def test_the_spoken_digits_recipes_read_the_shared_recordings() -> None:
    from ft_cli.tasks import get

    spec = compose_spec(["+recipe=spoken_digits", f"data.path={SPOKEN_DIGITS}"])
    raw = get("audio_classification").load_raw(spec.data)
    assert (len(raw.splits["train"]), len(raw.splits["validation"])) == (1500, 500)
    assert sorted(set(raw.splits["train"]["label"])) == [str(d) for d in range(10)]
    heard = {Path(p).name.split("_")[1] for p in raw.splits["validation"]["audio"]}
    assert heard == {"nicolas"}  # a speaker training never hears
    spec = compose_spec(["+recipe=spoken_digits_asr", f"data.path={SPOKEN_DIGITS}"])
    raw = get("speech_recognition").load_raw(spec.data)
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert sorted(set(raw.splits["validation"]["label"])) == sorted(words)
    first = raw.splits["train"][0]
    assert first["label"] == words[int(Path(first["audio"]).parent.name)]
    clip = sounds.decode(first["audio"], 16_000)  # 8 kHz files, read at 16 kHz
    assert len(clip) == pytest.approx(2 * soundfile.info(first["audio"]).frames, abs=2)


def test_tables_of_paths_or_of_audio_bytes_load_like_the_folders(tree: Path, tmp_path) -> None:
    import datasets

    from ft_cli.tasks import get

    paths, labels = pictures.list_class_folders(tree / "train", "x", sounds.EXTENSIONS)
    table = tree / "train.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "kind"])
        for path, label in zip(paths, labels, strict=True):
            writer.writerow([str(Path(path).relative_to(tree)), label])
    columns = ["data.audio_column=file", "data.label_column=kind"]
    spec = compose_spec([*SMALL, "data=csv", f"data.files.train={table}", *columns])
    raw = get("audio_classification").load_raw(spec.data)
    assert raw.splits["train"]["file"] == paths and raw.splits["train"]["kind"] == labels
    # A hub audio dataset keeps its clips as encoded bytes (datasets' Audio feature).
    cells = [{"bytes": Path(p).read_bytes(), "path": None} for p in paths]
    hub = datasets.Dataset.from_dict({"audio": cells, "label": labels})
    hub = hub.cast_column("audio", datasets.Audio(decode=False))
    hub.to_parquet(tmp_path / "train.parquet")
    spec = compose_spec([*SMALL, "data=parquet", f"data.files.train={tmp_path / 'train.parquet'}"])
    raw = get("audio_classification").load_raw(spec.data)
    refs = raw.splits["train"]["audio"]
    assert all(isinstance(r, bytes) for r in refs) and refs[0] == Path(paths[0]).read_bytes()
    assert sounds.decode(refs[0], 16_000) == pytest.approx(sounds.decode(paths[0], 16_000))
