"""The demo sound set: beeps, chirps, hums and noise bursts, made by ft itself.

`ensure("tones")` returns a folder `train/<class>/*.wav`, `validation/<class>/*.wav`
in ft's cache, written on first use: 16 kHz mono clips of 0.4 to 1.2 s, each a
sound of its class at a random pitch, loudness and place over a quiet hiss. Every
clip is a pure function of its split, class and index: the same set on every
machine, nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ft_cli.assets import shapes

RATE = 16_000
SETS = {"tones": {"train": 100, "validation": 40}}
CLASSES = ("beeps", "chirp", "hum", "noise")
VERSION = 2  # bump when the sounds change: a new folder, never a mixed one


def ensure(name: str) -> Path:
    """The folder of the generated set `name`, written now if not there yet."""
    return shapes.made(name, VERSION, lambda folder: write(folder, **SETS[name]))


def write(folder: Path, train: int, validation: int) -> None:
    from ft_cli.inputs import sounds

    soundfile = sounds.library("soundfile")

    for number, (split, count) in enumerate((("train", train), ("validation", validation))):
        for label, kind in enumerate(CLASSES):
            target = folder / split / kind
            target.mkdir(parents=True)
            for index in range(count):
                rng = np.random.default_rng([number, label, index, 7])
                soundfile.write(target / f"{index}.wav", clip(kind, rng), RATE, "PCM_16")


def clip(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One clip: a sound of `kind` somewhere in it, over background hiss."""
    length = int(RATE * rng.uniform(0.4, 1.2))
    out = rng.normal(0, 0.005, length)
    duration = int(length * rng.uniform(0.5, 0.9))
    start = int(rng.integers(0, length - duration + 1))
    time = np.arange(duration) / RATE
    pitch = rng.uniform(300, 1500)
    if kind == "hum":  # a low buzz: a fundamental of 80-250 Hz and its first harmonics
        low = pitch / 6
        sound = sum(np.sin(2 * np.pi * low * k * time) / k for k in range(1, 6))
    elif kind == "chirp":  # a sweep up or down over an octave or two
        end = pitch * rng.choice([0.3, 3.0])
        phase = 2 * np.pi * (pitch * time + (end - pitch) * time**2 / (2 * time[-1]))
        sound = np.sin(phase)
    elif kind == "beeps":  # two to four short pulses of one pitch
        pulses = int(rng.integers(2, 5))
        gate = (np.floor(time / time[-1] * (2 * pulses - 1)) % 2 == 0).astype(float)
        sound = np.sin(2 * np.pi * pitch * time) * gate
    else:  # a burst of noise
        sound = rng.normal(0, 0.5, duration)
    fade = np.minimum(1, np.minimum(np.arange(duration), np.arange(duration)[::-1]) / 80)
    out[start : start + duration] += sound * fade * rng.uniform(0.1, 0.6)
    return out.astype(np.float32)
