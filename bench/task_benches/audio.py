"""Audio classification: the offline tones (four kinds of sound, WAV) with the tiny
wav2vec2 from its config (fresh weights, as ft's demo), against the Trainer as
`run_audio_classification.py` builds it: a random stretch of at most
`max_length_seconds` of each training clip, the model's feature extractor on every
batch. The clips are read with soundfile (the datasets library's own audio decoding
needs torchcodec, whose wheels need another torch build)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

from task_benches import common

METRIC = "accuracy"
MODEL = "pkg:ft_cli/assets/tiny_wav2vec2"
MAX_SECONDS = 2.0  # ft's data.max_seconds for the demo; the script's max_length_seconds


def ft_overrides(args: Any) -> list[str]:
    return ["+recipe=demo_audio"]


def read(folder: Path, names: list[str]) -> list[tuple[Any, int]]:
    import soundfile

    clips = []
    for label, name in enumerate(names):
        for path in sorted((folder / name).glob("*.wav")):
            wave, rate = soundfile.read(path, dtype="float32")
            assert rate == 16_000, (path, rate)  # the tones are made at the model's rate
            clips.append((wave, label))
    return clips


def run_hf(args: Any, clock: Any, started: float) -> dict:
    import numpy as np
    import torch
    from transformers import (
        AutoConfig,
        AutoFeatureExtractor,
        AutoModelForAudioClassification,
        Trainer,
        set_seed,
    )

    from ft_cli.assets import generated
    from ft_cli.paths import resolve_path

    common.quiet()
    set_seed(42)
    root = generated("tones")
    names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    train_clips = read(root / "train", names)
    dev_clips = common.evaluated(read(root / "validation", names), args)
    path = resolve_path(MODEL, "model")
    extractor = AutoFeatureExtractor.from_pretrained(path)
    config = AutoConfig.from_pretrained(path, num_labels=len(names))
    model = AutoModelForAudioClassification.from_config(config)
    rate, most = extractor.sampling_rate, int(MAX_SECONDS * extractor.sampling_rate)
    rng = random.Random(42)

    def subsample(wave: Any) -> Any:
        if len(wave) <= most:
            return wave
        start = rng.randint(0, len(wave) - most)
        return wave[start : start + most]

    def collate(rows: list[tuple[Any, int]], training: bool) -> dict:
        waves = [subsample(w) if training else w[:most] for w, _ in rows]
        batch = extractor(waves, sampling_rate=rate, padding=True, return_tensors="pt")
        return {**batch, "labels": torch.tensor([label for _, label in rows])}

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=common.training_args(args, out, learning_rate=3e-3, remove_unused_columns=False),
            train_dataset=train_clips,
            data_collator=lambda rows: collate(rows, True),
            callbacks=[clock],
        )
        trainer.train()
        trainer.data_collator = lambda rows: collate(rows, False)
        found = trainer.predict(dev_clips)
    logits = found.predictions[0] if isinstance(found.predictions, tuple) else found.predictions
    accuracy = float((np.argmax(logits, -1) == found.label_ids).mean())
    return common.hf_result(trainer, clock, args, accuracy, started)
