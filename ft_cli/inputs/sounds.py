"""Sound files for the audio tasks: checking them once, decoding them to the model's
rate, cutting them to length, augmenting training clips, and turning a batch of them
into the model's inputs through its own feature extractor.

A clip is referenced by its file path or its bytes (hub datasets, served requests).
soundfile decodes it (WAV, FLAC, OGG, MP3, AIFF), channels are averaged to mono and
soxr resamples it to the feature extractor's rate. A split holds references only:
each clip is decoded when its batch is built. A training clip longer than
`data.max_seconds` is cropped (at random, or its centre); an evaluated or predicted
one is read whole, in overlapping windows of that length whose outputs are pooled.
Every random draw comes from (seed, epoch, row, purpose), like every augmentation of
ft, so a resumed epoch hears the same sounds.
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ft_cli.data import batching
from ft_cli.inputs.decoded import DecodedCache

EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
# Share of a window the next one repeats: a word one window cuts is whole in the next.
WINDOW_OVERLAP = 0.25

SoundRef = str | bytes
INSTALL = "pip install 'ft-cli[audio]' (soundfile, soxr)"


def library(name: str) -> Any:
    """soundfile or soxr, the audio extra's packages; missing: one line that says how to
    install them."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        from ft_cli.errors import FtError

        raise FtError(f"audio needs the {name} package: {INSTALL}") from err


def _source(ref: SoundRef) -> Any:
    return io.BytesIO(ref) if isinstance(ref, bytes) else ref


def unreadable(ref: SoundRef) -> str | None:
    """Why the clip cannot be read (None: it can), from its header."""
    soundfile = library("soundfile")

    try:
        found = soundfile.info(_source(ref))
    except Exception as err:  # libsndfile raises several types for a file it cannot open
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return text.replace(str(ref) if isinstance(ref, str) else "", "").strip(" :") or "unknown"
    if found.frames <= 0 or found.samplerate <= 0:
        return "zero-length: it holds no samples"
    return None


def undecodable(data: bytes) -> str | None:
    """Why the clip cannot be decoded whole (None: it can): a truncated file is refused
    here, where `unreadable`'s header check would let it pass."""
    soundfile = library("soundfile")

    why = unreadable(data)
    if why is not None:
        return why
    try:
        soundfile.read(io.BytesIO(data), dtype="float32", frames=-1)
    except Exception as err:  # libsndfile raises several types for a bad stream
        return (str(err).strip().splitlines() or [type(err).__name__])[0]
    return None


def header(ref: SoundRef) -> tuple[int, int, int]:
    """(frames, samples per second, channels) from the clip's header."""
    soundfile = library("soundfile")

    found = soundfile.info(_source(ref))
    return found.frames, found.samplerate, found.channels


def seconds(ref: SoundRef) -> float:
    """The clip's duration, from its header."""
    soundfile = library("soundfile")

    found = soundfile.info(_source(ref))
    return found.frames / found.samplerate


def decode(ref: SoundRef, rate: int) -> np.ndarray:
    """The clip as mono float32 samples at `rate` (channels averaged, resampled by soxr)."""
    soundfile = library("soundfile")

    samples, original = soundfile.read(_source(ref), dtype="float32", always_2d=True)
    return resample(samples.mean(axis=1), original, rate)


def resample(samples: np.ndarray, original: int, rate: int) -> np.ndarray:
    """`samples` at `original` Hz as samples at `rate` Hz (soxr's high quality)."""
    if original == rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    soxr = library("soxr")

    return soxr.resample(samples, original, rate, quality="HQ").astype(np.float32)


def window_offsets(duration: float, length: float) -> list[float]:
    """Start times of the windows of `length` seconds that cover a clip of `duration`,
    spread evenly, each repeating at least WINDOW_OVERLAP of the one before."""
    if duration <= length:
        return [0.0]
    hop = length * (1 - WINDOW_OVERLAP)
    count = math.ceil((duration - length) / hop) + 1
    return [round(i * (duration - length) / (count - 1), 6) for i in range(count)]


@dataclass
class SoundSplit(torch.utils.data.Dataset):
    """One split of clips: references, targets and, for windows of long clips read at
    evaluation, each window's start (seconds) and row; decoding happens per batch."""

    sounds: list[SoundRef]
    labels: list[Any]
    offsets: list[float] | None = None  # None: each entry is a whole clip (cropped to length)
    rows: list[int] | None = None  # the row each window belongs to (None: a row per entry)

    def __len__(self) -> int:
        return len(self.sounds)

    def __getitem__(self, index: int) -> int:
        return index  # the collator gathers rows by index

    def lengths(self) -> list[int]:
        return [1] * len(self.sounds)  # cut to the same length: every entry costs about the same

    def name(self, index: int) -> str:
        ref = self.sounds[index]
        return ref if isinstance(ref, str) else f"row {index}"

    def update_digest(self, digest: Any) -> None:
        """Feed the split's identity to a hash (resume refuses changed data)."""
        for ref in self.sounds:
            digest.update(ref.encode() if isinstance(ref, str) else hashlib.sha1(ref).digest())
            digest.update(b"|")
        digest.update(repr((self.labels, self.offsets, self.rows)).encode())


def windowed(sounds: list[SoundRef], labels: list[Any], length: float) -> SoundSplit:
    """A split whose long clips are read in windows of `length` seconds (evaluation)."""
    entries, targets, offsets, rows = [], [], [], []
    for row, (ref, label) in enumerate(zip(sounds, labels, strict=True)):
        for start in window_offsets(seconds(ref), length):
            entries.append(ref)
            targets.append(label)
            offsets.append(start)
            rows.append(row)
    if len(entries) == len(sounds):
        return SoundSplit(list(sounds), list(labels), offsets)
    return SoundSplit(entries, targets, offsets, rows)


@dataclass(frozen=True)
class Augmentation:
    """Training-time changes to a clip (the augment group's audio keys; 0 or None: off)."""

    gain_db: float = 0.0  # a gain drawn in +-gain_db decibels
    noise_snr: tuple[float, float] | None = None  # white noise at an SNR drawn in [low, high] dB
    time_shift: float = 0.0  # the clip moved by up to this many seconds, either way
    speed: tuple[float, float] | None = None  # played at a speed factor drawn in [low, high]
    time_mask: float = 0.0  # share of the clip's time silenced (its features zeroed), one span
    freq_mask: float = 0.0  # share of the feature bins hidden, one band (spectrogram inputs)

    @classmethod
    def from_config(cls, cfg: Any) -> Augmentation:
        noise, speed = cfg.audio_noise_snr, cfg.audio_speed
        return cls(
            cfg.audio_gain_db,
            tuple(noise) if noise else None,  # type: ignore[arg-type]
            cfg.audio_time_shift,
            tuple(speed) if speed else None,  # type: ignore[arg-type]
            cfg.audio_time_mask,
            cfg.audio_freq_mask,
        )

    @property
    def active(self) -> bool:
        return bool(
            self.gain_db
            or self.noise_snr
            or self.time_shift
            or self.speed
            or self.time_mask
            or self.freq_mask
        )


def change_speed(samples: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """The clip played `factor` times as fast (shorter and higher for factor > 1)."""
    return resample(samples, round(rate * factor), rate)


def shift(samples: np.ndarray, by: int) -> np.ndarray:
    """The clip moved `by` samples later (earlier when negative), silence filling the gap."""
    moved = np.zeros_like(samples)
    if by >= 0:
        moved[by:] = samples[: len(samples) - by]
    else:
        moved[:by] = samples[-by:]
    return moved


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise added at a signal-to-noise ratio of `snr_db` decibels."""
    power = float(np.mean(samples.astype(np.float64) ** 2))
    if power == 0.0:
        return samples
    scale = math.sqrt(power / 10 ** (snr_db / 10))
    return (samples + rng.standard_normal(len(samples)) * scale).astype(np.float32)


def span(size: int, share: float, rng: np.random.Generator) -> tuple[int, int]:
    """A random [start, end) of about `share` of `size` positions."""
    width = min(size, round(size * share))
    start = int(rng.integers(0, size - width + 1))
    return start, start + width


class Features:
    """The model's inputs for a list of clips, through its own feature extractor.

    `rate`: the samples per second it reads; `name`: the input it makes
    (`input_values`: waveforms or a spectrogram, `input_features`: a spectrogram);
    `spectrogram`: its input has a time and a frequency axis (`time_axis`,
    `frequency_axis` of a batch), else it is the waveform itself.
    """

    def __init__(self, extractor: Any) -> None:
        self.extractor = extractor
        self.rate = int(extractor.sampling_rate)
        self.batched = False  # waveforms padded and normalised here, the batch at once
        self.pads_freely = False  # padding past the longest clip is masked: changes nothing
        short, long = self._probe(1.0), self._probe(2.0)
        self.name = next(k for k in short if k.startswith("input_"))
        shape = short[self.name].shape
        self.spectrogram = len(shape) == 3
        self.time_axis = self.frequency_axis = 0
        if self.spectrogram:
            grown = [a for a in (1, 2) if long[self.name].shape[a] != shape[a]]
            bins = getattr(extractor, "num_mel_bins", None) or extractor.feature_size
            self.time_axis = grown[0] if grown else (1 if shape[2] == bins else 2)
            self.frequency_axis = 3 - self.time_axis
        else:
            self.batched = self._batch_path_matches()
            self.pads_freely = self.batched and bool(extractor.return_attention_mask)

    def _probe(self, duration: float) -> dict[str, Any]:
        return self(np.zeros(int(self.rate * duration), dtype=np.float32)[None])

    def __call__(self, clips: Any, width: int = 0) -> dict[str, torch.Tensor]:
        """The batch's inputs; `width`: pad the clips to that many samples where the
        padding is masked (`pads_freely`), else to the longest clip."""
        if self.batched:
            return self._waveforms(list(clips), width if self.pads_freely else 0)
        return dict(
            self.extractor(
                list(clips), sampling_rate=self.rate, return_tensors="pt", padding=True
            ).items()
        )

    def _waveforms(self, clips: list[np.ndarray], width: int = 0) -> dict[str, torch.Tensor]:
        """A waveform extractor's work on the whole batch: clips padded on the right to
        the longest (or to `width` if wider), each normalised to zero mean and unit
        variance over its own samples (over the padded row when the extractor makes no
        attention mask, as it does)."""
        extractor = self.extractor
        masked = bool(extractor.return_attention_mask)
        width = max(width, *map(len, clips))
        values = np.full((len(clips), width), extractor.padding_value, np.float32)
        mask = np.zeros(values.shape, dtype=np.int32)
        for row, clip in enumerate(clips):
            values[row, : len(clip)] = clip
            mask[row, : len(clip)] = 1
            if extractor.do_normalize and masked:
                real = values[row, : len(clip)]
                real[:] = (real - real.mean()) / np.sqrt(real.var() + 1e-7)
        if extractor.do_normalize and not masked:
            values -= values.mean(axis=1, keepdims=True)
            values /= np.sqrt(values.var(axis=1, keepdims=True) + 1e-7)
        batch = {"input_values": torch.from_numpy(values)}
        if masked:
            batch["attention_mask"] = torch.from_numpy(mask)
        return batch

    def _batch_path_matches(self) -> bool:
        """Whether `_waveforms` gives the extractor's output, on two noise clips of two
        lengths; False for an extractor of another kind."""
        extractor = self.extractor
        known = ("return_attention_mask", "do_normalize", "padding_value", "padding_side")
        if getattr(extractor, "feature_size", None) != 1 or not all(
            hasattr(extractor, key) for key in known
        ):
            return False
        if extractor.padding_side != "right":
            return False
        rng = np.random.default_rng(0)
        clips = [rng.standard_normal(n).astype(np.float32) * 0.3 for n in (self.rate, 700)]
        theirs = self(clips)
        ours = self._waveforms(clips)
        return theirs.keys() == ours.keys() and all(
            theirs[k].shape == ours[k].shape
            and theirs[k].dtype == ours[k].dtype
            and torch.allclose(theirs[k].float(), ours[k].float(), atol=1e-4)
            for k in ours
        )

    def shape(self, batch: dict[str, torch.Tensor]) -> str:
        """One row's input, in words (an out-of-memory message)."""
        size = batch[self.name].shape[1:]
        if not self.spectrogram:
            return f"clips of {size[-1] / self.rate:.1f} s"
        return f"spectrograms of {size[self.time_axis - 1]}x{size[self.frequency_axis - 1]}"


def class_ids(labels: list[int]) -> torch.Tensor:
    """A batch's targets as one class id per row."""
    return torch.tensor(labels, dtype=torch.long)


class SoundCollator:
    """Entry indices of a sound split in, the model's inputs and `labels` out.

    A whole clip longer than `max_seconds` is cropped (`crop`: "random", for training,
    or "centre"; None: clips are read whole); a window is cut at its offset. With an
    `augmentation`, training batches: each clip is changed from its own generators
    of (seed, epoch, row); `set_epoch` selects the epoch. `targets` turns the batch's
    labels into the tensor the task trains on (a class id per row by default).
    """

    def __init__(
        self,
        split: SoundSplit,
        features: Features,
        max_seconds: float | None,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        crop: str = "centre",
        targets: Any = None,
        windows: bool = False,
        samples: bool = False,
        keep_decoded: bool = False,
        multiple: int = 1,
    ) -> None:
        self.split, self.features, self.seed = split, features, seed
        self.longest = None if max_seconds is None else round(max_seconds * features.rate)
        # Batches padded to a multiple of this many samples where padding is masked: fewer
        # shapes, so fewer convolution kernels built and cached per shape (oneDNN's cache
        # only grows: the audio demo peaked at 1.7 GB with every batch a new length).
        self.multiple = multiple
        self.augmentation = augmentation if augmentation and augmentation.active else None
        self.crop = crop
        self.targets = targets or class_ids
        self.windows = windows  # add each entry's index ("window"): scored by its row
        self.samples = samples  # add each row's samples and the batch's padded length
        self.epoch = 0
        self.decoded = DecodedCache(keep_decoded)  # whole clips at the model's rate

    @property
    def augments(self) -> bool:
        """Whether a row's inputs may differ from epoch to epoch (a distillation teacher's
        outputs cannot be kept): augmented, or a long clip cropped at random."""
        return self.augmentation is not None or (self.crop == "random" and bool(self.longest))

    def augmented_with(self, cfg: Any) -> SoundCollator:
        """This collator changing training clips as the augment group's audio keys say."""
        from ft_cli.errors import FtError

        augmentation = Augmentation.from_config(cfg)
        if augmentation.freq_mask and not self.features.spectrogram:
            raise FtError(
                "augment.audio_freq_mask: the model reads waveforms, not spectrograms; use"
                " augment.audio_time_mask, or a model fed spectrograms (AST, Whisper)"
            )
        if not augmentation.active:
            return self
        changed = copy.copy(self)
        changed.augmentation = augmentation
        return changed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _draws(self, row: int, purpose: str) -> np.random.Generator:
        from ft_cli import augment

        return augment.draws(self.seed, self.epoch, row, purpose)

    def load(self, index: int) -> np.ndarray:
        """The entry's samples at the model's rate: its window, or its clip cut to length."""
        samples = self.decoded_clip(index)
        if self.augmentation is not None and self.augmentation.speed is not None:
            factor = self._draws(index, "speed").uniform(*self.augmentation.speed)
            samples = change_speed(samples, factor, self.features.rate)
        if self.longest is None:  # read whole
            return samples
        if self.split.offsets is not None:
            start = round(self.split.offsets[index] * self.features.rate)
            return samples[start : start + self.longest]
        extra = len(samples) - self.longest
        if extra <= 0:
            return samples
        random = self.crop == "random"
        start = int(self._draws(index, "crop").integers(0, extra + 1)) if random else extra // 2
        return samples[start : start + self.longest]

    def decoded_clip(self, index: int) -> np.ndarray:
        """The entry's whole clip decoded at the model's rate, kept for the next epochs (by
        clip: the windows of one clip share it)."""
        ref = self.split.sounds[index]
        key = ref if isinstance(ref, str) else id(ref)  # a clip's bytes: one object
        samples = self.decoded.get(key)
        if samples is not None:
            return samples
        try:
            samples = decode(ref, self.features.rate)
        except Exception as err:  # passed the check at load; a file changed since
            from ft_cli.inputs.pictures import warn

            warn(f"cannot decode {self.split.name(index)} ({err}); silence stands in")
            return np.zeros(self.features.rate // 10, dtype=np.float32)
        samples.flags.writeable = False  # shared: every change below makes a new array
        self.decoded.keep(key, samples, samples.nbytes)
        return samples

    def augmented(self, samples: np.ndarray, row: int) -> np.ndarray:
        aug = self.augmentation
        assert aug is not None
        rate = self.features.rate
        if aug.time_shift:
            most = round(aug.time_shift * rate)
            samples = shift(samples, int(self._draws(row, "shift").integers(-most, most + 1)))
        if aug.gain_db:
            samples = samples * 10 ** (self._draws(row, "gain").uniform(-1, 1) * aug.gain_db / 20)
        if aug.noise_snr is not None:
            rng = self._draws(row, "audio_noise")
            samples = add_noise(samples, rng.uniform(*aug.noise_snr), rng)
        if aug.time_mask and not self.features.spectrogram:
            start, end = span(len(samples), aug.time_mask, self._draws(row, "time_mask"))
            samples = samples.copy()
            samples[start:end] = 0.0
        return samples.astype(np.float32)

    def masked(self, values: torch.Tensor, lengths: list[int], rows: list[int]) -> torch.Tensor:
        """SpecAugment: one time span and one frequency band of each row's spectrogram set to
        the row's mean (only frames of the clip itself, never its padding)."""
        aug = self.augmentation
        assert aug is not None
        features = self.features
        values = values.clone()
        frames = values.shape[features.time_axis]
        longest = max(lengths)
        for position, (row, length) in enumerate(zip(rows, lengths, strict=True)):
            plane = values[position]
            fill = plane.mean()
            time, frequency = features.time_axis - 1, features.frequency_axis - 1
            if aug.time_mask:
                real = max(1, min(frames, math.ceil(frames * length / longest)))
                start, end = span(real, aug.time_mask, self._draws(row, "time_mask"))
                plane.narrow(time, start, end - start).fill_(fill)
            if aug.freq_mask:
                bins = plane.shape[frequency]
                start, end = span(bins, aug.freq_mask, self._draws(row, "freq_mask"))
                plane.narrow(frequency, start, end - start).fill_(fill)
        return values

    def width(self, longest: int) -> int:
        """The batch's padded samples: `longest` up to a multiple of `multiple`, but not
        past `max_seconds` (past which no clip is read)."""
        cap = self.longest if self.longest is not None else sys.maxsize  # read whole
        return batching.padded_width(longest, self.multiple, cap)

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        clips = [self.load(i) for i in indices]
        if self.augmentation is not None:
            clips = [self.augmented(c, i) for c, i in zip(clips, indices, strict=True)]
        longest = max(len(c) for c in clips)
        padded = self.width(longest) if self.features.pads_freely else longest
        batch = self.features(clips, padded)
        aug = self.augmentation
        if aug is not None and self.features.spectrogram and (aug.time_mask or aug.freq_mask):
            name = self.features.name
            batch[name] = self.masked(batch[name], [len(c) for c in clips], indices)
        batch["labels"] = self.targets([self.split.labels[i] for i in indices])
        if self.windows:
            batch["window"] = torch.tensor(indices)
        if self.samples:
            batch["samples"] = torch.tensor([[len(c), padded] for c in clips])
        return batch
