"""Audio: one clip per row, a file path (relative to its table or folder) or the file's
bytes, read through the model's own feature extractor.

Decoding, resampling, cutting, augmentation and batches are in `sounds`. A served
request gives `audio` (a sound file, base64) or `audios` (a list); `ft predict`
also reads a folder of sound files or a .txt list of paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ft_cli.errors import FtError
from ft_cli.inputs.base import (
    Modality,
    RequestError,
    Rows,
    base64_files,
    check_file_column,
    listed_files,
)

if TYPE_CHECKING:
    from ft_cli.config.schema import DataConfig, ModelConfig

HINT = (
    "use a local folder (model.name_or_path=DIR) or a packaged audio model,"
    " model=tiny_wav2vec2 (fresh weights)"
)
# The data formats audio comes in: folders of class folders, or tables of paths.
FORMATS = ("audiofolder", "hub", "csv", "tsv", "json", "parquet")
SHEET_SIZE = 16  # mistakes on ft report's sheet


class Audio(Modality):
    name = "audio"
    noun = "audio clips"
    request_fields = {"audio": str | None, "audios": list[str] | None}  # noqa: RUF012
    body_limit = 32_000_000  # a few minutes of base64 WAV
    own_formats = ("audiofolder",)
    names_files = True
    augment_keys = (
        "audio_gain_db",
        "audio_noise_snr",
        "audio_time_shift",
        "audio_speed",
        "audio_time_mask",
        "audio_freq_mask",
    )

    def processor(self, cfg: ModelConfig) -> Any:
        """The model's feature extractor (its rate, normalisation, spectrogram)."""
        from transformers import AutoFeatureExtractor

        from ft_cli.models import model

        return model.load_part(cfg, AutoFeatureExtractor.from_pretrained, "feature extractor", HINT)

    def same_inputs(self, processor: Any, other: Any) -> bool:
        def inputs(extractor: Any) -> tuple[Any, ...]:
            extractor = getattr(extractor, "feature_extractor", extractor)
            settings = extractor.to_dict()
            settings.pop("processor_class", None)
            return type(extractor).__name__, sorted(settings.items(), key=str)

        return inputs(processor) == inputs(other)

    def check_data(self, data: DataConfig, task: str, data_key: str, kind_key: str) -> None:
        if data.format.value not in FORMATS:
            raise FtError(
                f"{kind_key}{task} reads audio: set {data_key}format to one of {', '.join(FORMATS)}"
            )
        given = data.folder_transcripts
        if given is not None and not (
            isinstance(given, dict) and all(isinstance(v, (str, int)) for v in given.values())
        ):
            raise FtError(
                f"{data_key}folder_transcripts: give each class folder's transcript,"
                " {FOLDER: TEXT, ...}, or null to read each clip's FILE.txt"
            )

    def columns(self, data: DataConfig) -> dict[str, str]:
        return {"data.audio_column": data.audio_column}

    def measure(self, value: Any) -> dict[str, float]:
        from ft_cli.inputs import sounds

        if isinstance(value, dict):  # a hub cell
            value = value.get("bytes") or value.get("path")
        try:
            return {"seconds": sounds.seconds(value)}
        except Exception:  # unreadable: the loader warns about it
            return {}

    def check_column(self, first: Any, key: str, column: str, split: str, source: str) -> None:
        check_file_column(first, key, "data.audio_column", column, split, source, "sound")

    def request_columns(self, data: DataConfig) -> dict[str, str]:
        return {"audio": data.audio_column}

    def request_rows(
        self, body: dict[str, Any], columns: dict[str, str], limits: Any, word_lists: bool
    ) -> tuple[Rows, bool]:
        """Base64 sound files, each checked to be decodable."""
        from ft_cli.inputs import sounds

        hint = "audio (a sound file, base64) or audios (a list)"
        found, single = base64_files(body, "audio", "audios", hint, limits)
        for where, data in found:
            why = sounds.undecodable(data)
            if why is not None:
                raise RequestError(422, f"{where}: not a readable sound file ({why})")
        return [{columns["audio"]: data} for _, data in found], single

    def listed(self, source: Path) -> list[str] | None:
        """A folder (every sound file under it, sorted by path) or a .txt list of paths."""
        from ft_cli.inputs import sounds

        return listed_files(source, sounds.EXTENSIONS, "sound files")

    def describe(self, data: DataConfig) -> str:
        return (
            f"audio column `{data.audio_column}`; clips mixed down to mono, resampled to the"
            f" feature extractor's rate and read {data.max_seconds:g} s at a time (training:"
            f" a {data.audio_crop.value} crop of a longer clip; evaluation: overlapping"
            " windows)"
        )

    def activation_bytes(self, ready: Any, batch: int) -> int | None:
        """What a forward pass of one batch of the longest clips saves for backward (the net
        is on the meta device)."""
        import numpy as np
        import torch

        from ft_cli.models import profile

        features = ready.objective.features
        clip = np.zeros((1, round(ready.spec.data.max_seconds * features.rate)), np.float32)
        probe = features(clip)
        # The clip alone: a full-length batch masks nothing, and a mask on the meta device
        # would be asked whether it does.
        value = probe[features.name]
        inputs = {
            features.name: torch.zeros((batch, *value.shape[1:]), dtype=value.dtype, device="meta")
        }
        return profile.saved_activation_bytes(ready.net, inputs)

    def mistakes_sheet(self, ready: Any, wrong: list[Any], path: Path, title: str) -> str | None:
        """The most confidently wrong clips as a sheet of their spectrograms."""
        import matplotlib.pyplot as plt

        from ft_cli.inputs import sounds

        wrong = wrong[:SHEET_SIZE]
        if not wrong:
            return None
        split, labels = ready.rows, ready.labels
        owners = split.rows or list(range(len(split)))
        first = {row: entry for entry, row in reversed(list(enumerate(owners)))}
        columns = min(4, len(wrong))
        lines = -(-len(wrong) // columns)
        figure, grid = plt.subplots(
            lines, columns, figsize=(3.2 * columns, 2.4 * lines + 0.6), squeeze=False
        )
        for axes in grid.flat:
            axes.axis("off")
        for axes, outcome in zip(grid.flat, wrong, strict=False):
            entry = first[outcome.row]
            rate = sounds.header(split.sounds[entry])[1]  # the file's own: no empty band
            clip = sounds.decode(split.sounds[entry], rate)
            if len(clip) >= 256:
                axes.specgram(clip, NFFT=256, Fs=rate, noverlap=128, cmap="magma")
            name = Path(split.name(entry)).name
            guess = f"{labels[outcome.guess]} ({outcome.confidence:.2f})"
            axes.set_title(f"{name}\ntrue {labels[outcome.truth]}\npredicted {guess}", fontsize=8)
        figure.suptitle(title)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return "spectrograms of misclassified clips"


MODALITY = Audio()
