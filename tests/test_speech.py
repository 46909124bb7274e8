"""Speech recognition (CTC): vocabulary, greedy decoding, error rates, transcripts from
folders and sidecar files, training, the saved processor, predict."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import compose_spec
from test_audio import write_tree

from ft_cli.errors import FtError
from ft_cli.tasks import speech_recognition as ctc

SMALL = [
    "task=speech_recognition",
    "data=audio",
    "model=tiny_wav2vec2",
    "train.batch_size=8",
    "train.eval_batch_size=16",
    "train.log_every=1",
    "hardware.precision=fp32",
    "optimizer.lr=3e-3",
    "data.max_seconds=1.5",
    "data.files.validation=validation",
    "data.folder_transcripts={beeps: beeps, hum: hum, noise: noise burst}",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write_tree(tmp_path / "data" / "train", 8)
    write_tree(tmp_path / "data" / "validation", 3)
    return tmp_path / "data"


def test_the_vocabulary_is_the_training_characters_after_the_special_tokens() -> None:
    labels = ctc.vocabulary(["Hello  world", "hold"])
    assert labels == ["<pad>", "<unk>", "|", "d", "e", "h", "l", "o", "r", "w"]
    ids = {name: i for i, name in enumerate(labels)}
    assert ctc.encode_text("Hello  World!", ids) == [5, 4, 6, 6, 7, 2, 9, 7, 8, 6, 3, 1]
    assert ctc.decode_ids([5, 4, 6, 6, 7, 2, 9, 1], labels) == "hello w"


def frames(path: list[str], labels: list[str]) -> torch.Tensor:
    """Logits whose best token per frame spells `path` (one frame each)."""
    ids = {name: i for i, name in enumerate(labels)}
    logits = torch.zeros(len(path), len(labels))
    for frame, token in enumerate(path):
        logits[frame, ids[token]] = 5.0
    return logits


def test_greedy_decoding_merges_repeats_and_drops_blanks() -> None:
    labels = ctc.vocabulary(["hello world"])
    b = "<pad>"
    path = [b, "h", "h", "e", b, "l", "l", b, "l", "o", "o", "|", "|", "w", "o", "r", "l", "d", b]
    assert ctc.greedy(frames(path, labels), labels) == "hello world"
    assert ctc.greedy(frames(["l", "l", "l"], labels), labels) == "l"  # no blank: one l
    assert ctc.greedy(frames([b, b], labels), labels) == ""
    assert ctc.greedy(frames(["|", "o", "|", "|"], labels), labels) == "o"  # no edge spaces


def test_error_rates_on_known_cases() -> None:
    rates = ctc.error_rates(["the cat sat"], ["the cat sat down"])
    assert rates["wer"] == pytest.approx(1 / 4)
    assert rates["cer"] == pytest.approx(5 / 16)  # " down" deleted from 16 characters
    assert ctc.error_rates(["one two"], ["one two"]) == {"wer": 0.0, "cer": 0.0}
    substituted = ctc.error_rates(["a b c", "x"], ["a b d", "x"])
    assert substituted["wer"] == pytest.approx(1 / 4)


def test_a_prediction_reads_only_its_own_frames() -> None:
    labels = ctc.vocabulary(["ab"])
    logits = frames(["a", "<pad>", "b", "a", "a", "b"], labels)  # the last 3: padding
    own = (torch.tensor([500, 1000]), (0.0, 16_000))  # 500 of the batch's 1,000 samples
    assert ctc.TASK.prediction(logits, labels, own, False) == {"transcript": "ab"}
    assert ctc.TASK.prediction(logits, labels, None, False) == {"transcript": "abab"}


def test_a_long_clips_windows_are_stitched_where_each_is_further_inside() -> None:
    labels = ctc.vocabulary(["abcd"])
    b = "<pad>"
    # Two windows of 1 s, 4 frames each, the second from 0.5 s: the overlap's middle is
    # 0.75 s, so the first keeps its frames before it (0.125, 0.375, 0.625 s) and the
    # second those after (0.875, 1.125, 1.375 s).
    first, second = frames(["a", b, "b", "d"], labels), frames(["a", b, "c", "d"], labels)
    windows = [(first, 0.0, 1.0), (second, 0.5, 1.0)]
    joined = ctc.stitched(windows)
    assert torch.equal(joined, torch.cat([first[:3], second[1:]]))
    assert ctc.greedy(joined, labels) == "abcd"  # not "abdacd", the windows end to end
    extras = [(torch.tensor([16_000, 16_000]), (start, 16_000)) for _, start, _ in windows]
    assert ctc.TASK.prediction([first, second], labels, extras, False) == {"transcript": "abcd"}


def test_metrics_merge_into_the_single_process_result() -> None:
    labels = ctc.vocabulary(["ab ba"])
    ids = {name: i for i, name in enumerate(labels)}
    rows = [ctc.encode_text("ab ba", ids), ctc.encode_text("ab", ids)]
    logits = torch.stack(
        [
            frames(["a", "b", "|", "b", "a"], labels),
            frames(["a", "<pad>", "a", "<pad>", "<pad>"], labels),
        ]
    )
    targets = (ctc.padded_targets(rows), torch.tensor([5, 3]))
    whole = ctc.TranscriptMetrics(labels)
    whole.update(logits, targets)
    first, second = ctc.TranscriptMetrics(labels), ctc.TranscriptMetrics(labels)
    first.update(logits[:1], (targets[0][:1], targets[1][:1]))
    second.update(logits[1:], (targets[0][1:], targets[1][1:]))
    assert first.merge([second]).compute() == whole.compute()
    assert whole.predicted == ["ab ba", "aa"] and whole.truth == ["ab ba", "ab"]
    assert whole.compute()["wer"] == pytest.approx(1 / 3)


def test_transcripts_come_from_folders_or_sidecar_files(tree: Path) -> None:
    from ft_cli.tasks import get

    spec = compose_spec([*SMALL, f"data.path={tree}"])
    raw = get("speech_recognition").load_raw(spec.data)
    assert set(raw.splits["train"]["label"]) == {"beeps", "hum", "noise burst"}
    plain = [o for o in SMALL if "folder_transcripts" not in o]
    for wav in (tree / "train").rglob("*.wav"):
        wav.with_suffix(".txt").write_text(f"  {wav.parent.name} number {wav.stem[-1]}\n")
    for wav in (tree / "validation").rglob("*.wav"):
        wav.with_suffix(".txt").write_text("x")
    spec = compose_spec([*plain, f"data.path={tree}"])
    raw = get("speech_recognition").load_raw(spec.data)
    assert "hum number 3" in raw.splits["train"]["label"]
    next((tree / "train" / "hum").glob("*.txt")).unlink()
    with pytest.raises(FtError, match="has no transcript") as caught:
        get("speech_recognition").load_raw(spec.data)
    assert "(000.txt beside it); write one per clip, or set data.folder_transcripts" in str(
        caught.value
    )


def test_a_folder_without_a_transcript_is_named(tree: Path) -> None:
    from ft_cli.tasks import get

    overrides = [o for o in SMALL if "folder_transcripts" not in o]
    spec = compose_spec([*overrides, f"data.path={tree}", "data.folder_transcripts={hum: hum}"])
    with pytest.raises(FtError) as caught:
        get("speech_recognition").load_raw(spec.data)
    assert str(caught.value) == (
        "data.folder_transcripts: no transcript for class folder 'beeps' of data.files.train;"
        " add beeps: <its words>"
    )


def test_long_training_clips_are_left_out_not_cropped(tree: Path, capsys) -> None:
    long = tree / "train" / "hum" / "long.wav"
    soundfile.write(long, np.zeros(16_000 * 3, np.float32), 16_000)
    from ft_cli.tasks import get

    spec = compose_spec([*SMALL, f"data.path={tree}"])
    prepared = get("speech_recognition").prepare(
        spec.data, spec.task, get("speech_recognition").processor(spec.model), 0
    )
    assert str(long) not in prepared.train.sounds and len(prepared.train) == 24
    assert "left out 1 of 25 training clips longer than data.max_seconds=1.5" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_train_save_reload_and_predict(tree: Path, tmp_path: Path) -> None:
    from transformers import AutoProcessor

    from ft_cli import cli
    from ft_cli.training.engine import train

    overrides = [*SMALL, f"data.path={tree}", "train.epochs=3", "augment=audio"]
    train(compose_spec(overrides), run_dir=tmp_path / "run", overrides=overrides)
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    assert '"wer"' in metrics and '"cer"' in metrics
    processor = AutoProcessor.from_pretrained(tmp_path / "run" / "model")
    vocab = processor.tokenizer.get_vocab()
    assert vocab["<pad>"] == 0 and vocab["|"] == 2 and len(vocab) == 15  # no <s>, </s>
    assert processor.tokenizer.decode([5, 14, 7]) == "hum"  # h, u, m
    assert processor.feature_extractor.sampling_rate == 16_000
    target = tmp_path / "out.csv"
    folder = tree / "validation"
    args = [str(tmp_path / "run"), "--input", str(folder), "--output", str(target)]
    assert cli._run_tool("predict", args) == 0
    with open(target) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and set(rows[0]) == {"audio", "transcript"}
    allowed = set("".join(t for t in ["beeps", "hum", "noise burst"]))
    assert all(set(r["transcript"]) <= allowed for r in rows)


def test_speech_recognition_settings_are_checked() -> None:
    with pytest.raises(FtError, match=r"^train\.early_stopping\.metric: 'accuracy' is not a"):
        from ft_cli.tasks import metrics

        spec = compose_spec([*SMALL, "train.early_stopping.metric=accuracy"])
        metrics.monitored(spec.task, spec.train.early_stopping)
    spec = compose_spec(SMALL)
    from ft_cli.tasks import metrics

    assert metrics.monitored(spec.task, spec.train.early_stopping)[1].value == "min"  # wer


@pytest.mark.slow
def test_predict_export_and_serve_agree(tree: Path, tmp_path: Path) -> None:
    import base64

    from test_serve import call, serving

    from ft_cli import cli
    from ft_cli.training.engine import train

    run = tmp_path / "run"
    overrides = [*SMALL, f"data.path={tree}", "train.epochs=2"]
    train(compose_spec(overrides), run_dir=run, overrides=overrides)
    assert cli._run_tool("export", [str(run)]) == 0
    folder = tree / "validation"
    written = {}
    for backend in ("torch", "onnxruntime"):
        target = tmp_path / f"{backend}.csv"
        args = [str(run), "--input", str(folder), "--output", str(target), "--backend", backend]
        assert cli._run_tool("predict", args) == 0
        with open(target) as handle:
            written[backend] = list(csv.DictReader(handle))
    assert written["torch"] == written["onnxruntime"]
    rows = written["torch"]
    encoded = [base64.b64encode((folder / r["audio"]).read_bytes()).decode() for r in rows]
    with serving(run) as (url, _):
        code, answer = call(url, "/predict", {"audios": encoded})
        assert code == 200
        assert [p["transcript"] for p in answer["predictions"]] == [r["transcript"] for r in rows]
        code, answer = call(url, "/predict", {"audio": encoded[0]})
        assert answer["prediction"]["transcript"] == rows[0]["transcript"]
        bad = [
            ({"audio": "%%%"}, "audio: not base64"),
            (
                {"audios": [encoded[0], base64.b64encode(b"text").decode()]},
                "audios.1: not a readable sound file (",
            ),
            ({"text": "hello"}, "send one of: audio (a sound file, base64) or audios (a list)"),
        ]
        for body, message in bad:
            code, answer = call(url, "/predict", body)
            assert (code, answer["error"][: len(message)]) == (422, message)
        assert call(url, "/health")[0] == 200  # still serving


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tree: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file

    from ft_cli.training.engine import train

    overrides = [
        *SMALL,
        f"data.path={tree}",
        "train.epochs=2",
        "train.save_every=2",
        "train.export=last",
        "train.keep_checkpoints=100",
        "augment=audio",
    ]
    reference, cut = tmp_path / "reference", tmp_path / "cut"
    train(compose_spec(overrides), run_dir=reference, overrides=overrides)
    shutil.copytree(reference, cut)
    for ckpt in (cut / "checkpoints").glob("step-*"):
        if int(ckpt.name.split("-")[1]) > 2:  # mid-way through the first epoch
            shutil.rmtree(ckpt)
    shutil.rmtree(cut / "model")
    (cut / "metrics.json").unlink()
    resumed = [*overrides, "resume=auto"]
    train(compose_spec(resumed), run_dir=cut, overrides=resumed)
    a = load_file(reference / "model" / "model.safetensors")
    b = load_file(cut / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
