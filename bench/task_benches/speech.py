"""Speech recognition (CTC): the offline tones, each transcribed as its kind's name, with
the tiny wav2vec2 from its config (fresh weights, as ft's demo), against the Trainer as
`run_speech_recognition_ctc.py` builds it: a character vocabulary from the training
transcripts (with "|" between words, [UNK] and [PAD]), the feature extractor and
tokenizer as one processor, CTC loss averaged; WER on both sides by torchmetrics."""

from __future__ import annotations

import tempfile
from typing import Any

from task_benches import audio, common

METRIC = "wer"


def ft_overrides(args: Any) -> list[str]:
    return ["+recipe=demo_asr"]


def run_hf(args: Any, clock: Any, started: float) -> dict:
    import json

    import numpy as np
    import torch
    from torchmetrics.functional.text import word_error_rate
    from transformers import (
        AutoConfig,
        AutoFeatureExtractor,
        AutoModelForCTC,
        Trainer,
        Wav2Vec2CTCTokenizer,
        set_seed,
    )

    from ft_cli.assets import generated
    from ft_cli.paths import resolve_path

    common.quiet()
    set_seed(42)
    root = generated("tones")
    names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    train_clips = audio.read(root / "train", names)
    dev_clips = common.evaluated(audio.read(root / "validation", names), args)
    chars = sorted(set("".join(names)))
    vocab = {c: i for i, c in enumerate(["[PAD]", "[UNK]", "|", *chars])}
    with tempfile.TemporaryDirectory() as scratch:
        path = f"{scratch}/vocab.json"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(vocab))
        tokenizer = Wav2Vec2CTCTokenizer(path, unk_token="[UNK]", pad_token="[PAD]")
    model_path = resolve_path(audio.MODEL, "model")
    extractor = AutoFeatureExtractor.from_pretrained(model_path)
    config = AutoConfig.from_pretrained(
        model_path,
        vocab_size=len(vocab),
        pad_token_id=tokenizer.pad_token_id,
        ctc_loss_reduction="mean",
    )
    model = AutoModelForCTC.from_config(config)
    most = int(audio.MAX_SECONDS * extractor.sampling_rate)

    def collate(rows: list[tuple[Any, int]]) -> dict:
        waves = [wave[:most] for wave, _ in rows]
        batch = extractor(waves, sampling_rate=extractor.sampling_rate, padding=True)
        targets = tokenizer([names[label] for _, label in rows], padding=True)
        labels = torch.tensor(targets["input_ids"])
        labels[torch.tensor(targets["attention_mask"]) == 0] = -100
        return {"input_values": torch.tensor(np.array(batch["input_values"])), "labels": labels}

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=common.training_args(args, out, learning_rate=3e-3, remove_unused_columns=False),
            train_dataset=train_clips,
            data_collator=collate,
            callbacks=[clock],
        )
        trainer.train()
        found = trainer.predict(dev_clips)
    logits = found.predictions[0] if isinstance(found.predictions, tuple) else found.predictions
    said = tokenizer.batch_decode(np.argmax(logits, -1))
    wer = float(word_error_rate(said, [names[label] for _, label in dev_clips]))
    return common.hf_result(trainer, clock, args, wer, started)
