"""Audio classification: one class per clip (spoken words, sounds, speakers, emotions),
through transformers' audio classifiers (wav2vec2, HuBERT, AST, Whisper's encoder, ...)
and the model's own feature extractor.

Clips come as images do (`format=audiofolder`: `<split folder>/<label>/<file>`, a
table whose `data.audio_column` holds paths or bytes, or a hub audio dataset); every
clip is checked once when the data is loaded, unreadable ones left out with a counted
warning. A clip longer than `data.max_seconds` is cropped for training and read in
overlapping windows for evaluation and prediction, its windows' logits pooled
(`data.window_pooling`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ft_cli.config.schema import DataConfig, TaskConfig
from ft_cli.inputs import sounds
from ft_cli.tasks.image_classification import ImageClassification
from ft_cli.tasks.objective import Objective


class AudioClassification(ImageClassification):
    name = "audio_classification"
    pipeline_tag = "audio-classification"
    column_key = "data.audio_column"
    extensions = sounds.EXTENSIONS
    noun = "audio clip"
    a_file = "a sound file"

    def column(self, cfg: DataConfig) -> str:
        return cfg.audio_column

    def unreadable(self, ref: Any) -> str | None:
        return sounds.unreadable(ref)

    def split_of(self, refs: list[Any], targets: list[Any], cfg: DataConfig, split: str) -> Any:
        """Training clips whole (cropped per batch); the others in windows, scored whole."""
        if split == "train":
            return sounds.SoundSplit(refs, targets)
        return sounds.windowed(refs, targets, cfg.max_seconds)

    def long_input_rows(self, cfg: DataConfig, processor: Any) -> list[list[str]]:
        """What `ft explain` shows of the training clips: durations, rates, what the model
        reads of one, and what data.max_seconds cuts."""
        import numpy as np

        refs = sounds_of(self.train_rows(cfg), cfg)
        if not refs:
            return []
        headers = [sounds.header(ref) for ref in refs]
        seconds = np.array([frames / rate for frames, rate, _ in headers])
        rates = sorted({rate for _, rate, _ in headers})
        channels = sorted({count for _, _, count in headers})
        features = sounds.Features(processor)
        middle = int(np.argsort(seconds)[len(seconds) // 2])
        batch = features([sounds.decode(refs[middle], features.rate)])
        shape = " x ".join(str(n) for n in batch[features.name].shape[1:])
        over = seconds > cfg.max_seconds
        windows = sum(len(sounds.window_offsets(s, cfg.max_seconds)) for s in seconds)
        return [
            [
                "clips",
                f"{len(seconds):,}; {seconds.min():.2f} to {seconds.max():.2f} s, median"
                f" {np.median(seconds):.2f} s, {seconds.sum() / 3600:.2f} h in all",
            ],
            [
                "rate, channels",
                f"{', '.join(f'{r:,}' for r in rates)} Hz, {', '.join(map(str, channels))}"
                f" channel(s) in the files; the model reads mono at {features.rate:,} Hz",
            ],
            [
                "the median clip, as the model reads it",
                f"{features.name} {shape} ({seconds[middle]:.2f} s)",
            ],
            [
                f"clips over data.max_seconds={cfg.max_seconds:g}",
                f"{int(over.sum()):,} of {len(seconds):,} ({over.mean():.1%}): "
                + self.cut_note.format(windows=windows),
            ],
        ]

    cut_note = "cropped for training; evaluated, the split would be {windows:,} windows"

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        values, _ = super().head(labels)
        return values, "AutoModelForAudioClassification"

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        processor: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Any:
        return AudioObjective(
            net, len(labels or []), processor, compile_model, label_smoothing, task.class_weights
        )

    def predicted(self, refs: list[Any], processor: Any, cfg: DataConfig) -> tuple[Any, Any, Any]:
        split = sounds.windowed(refs, [0] * len(refs), cfg.max_seconds)
        features = sounds.Features(processor)
        collate = sounds.SoundCollator(split, features, cfg.max_seconds)
        return split, collate, [cfg.window_pooling.value] * len(split)


def sounds_of(table: Any, cfg: DataConfig) -> list[Any]:
    """The clips a table's audio column references (paths made absolute, bytes as bytes)."""
    from ft_cli.inputs import pictures

    return pictures.resolve_refs(table[cfg.audio_column], None, "data.audio_column")


class AudioObjective(Objective):
    """Cross-entropy on clips: training clips cropped (and augmented); evaluated ones read
    in windows whose logits are pooled per clip."""

    smaller_inputs = "lower data.max_seconds"

    def __init__(
        self,
        net: nn.Module,
        num_labels: int,
        processor: Any,
        compile_model: bool,
        label_smoothing: float,
        class_weights: Any,
        task: str = "classification",
    ) -> None:
        super().__init__(net, task, num_labels, 0, compile_model, label_smoothing, class_weights)
        self.features = sounds.Features(processor)
        self.max_seconds, self.crop = 10.0, "random"
        # Samples per output frame (20 ms for wav2vec2-style encoders): the unit that
        # train.pad_to_multiple_of counts for clips, as it counts tokens for text.
        config = getattr(net, "config", None)
        self.frame = getattr(config, "inputs_to_logits_ratio", 0) or self.features.rate // 50

    def configure(self, cfg: DataConfig) -> None:
        super().configure(cfg)
        self.max_seconds, self.crop = cfg.max_seconds, cfg.audio_crop.value

    @property
    def pad_samples(self) -> int:
        """What a batch's padded length is a multiple of, in samples."""
        return self.pad_multiple * self.frame

    def collator(self, split: Any, seed: int) -> Any:
        windows = split.rows is not None
        return sounds.SoundCollator(
            split,
            self.features,
            self.max_seconds,
            seed,
            windows=windows,
            multiple=self.pad_samples,
        )

    def train_collator(self, split: Any, seed: int) -> Any:
        return sounds.SoundCollator(
            split,
            self.features,
            self.max_seconds,
            seed,
            crop=self.crop,
            keep_decoded=True,
            multiple=self.pad_samples,
        )

    def count(self, batch: Any) -> tuple[int, int, int]:
        return len(batch["labels"]), 0, 0  # no tokens, no padding

    def input_shape(self, batch: Any) -> str:
        return self.features.shape(batch)


TASK = AudioClassification()
