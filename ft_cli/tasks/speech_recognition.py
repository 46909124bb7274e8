"""Speech recognition with CTC: a clip in, its transcript out, through transformers' CTC
models (wav2vec2, HuBERT, WavLM, ... `AutoModelForCTC`) and the model's own feature
extractor.

The transcript of a clip comes from `data.label_column` of a table, or, for a folder
of class folders, from `data.folder_transcripts` (one transcript per folder) or a
sidecar `FILE.txt` beside each clip. Transcripts are lower-cased with runs of
whitespace made one space; the vocabulary is the characters of the training
transcripts (`|` between words, `<pad>` the CTC blank, `<unk>` for a character
training never saw), saved with the model as a `Wav2Vec2CTCTokenizer` inside a
processor that transformers reloads. Training clips longer than `data.max_seconds`
are left out (a crop would cut words off their transcript); evaluated clips are read
whole, and a predicted one longer than that in overlapping windows whose frames are
stitched (each from the window it is further inside) before decoding. Decoding is
greedy: the best character per frame, repeats merged, blanks dropped. Metrics: word
and character error rates (torchmetrics).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ft_cli.config.schema import DataConfig, TaskConfig
from ft_cli.errors import FtError
from ft_cli.inputs import pictures, sounds
from ft_cli.tasks.audio_classification import AudioClassification, AudioObjective

BLANK, UNKNOWN, SPACE = "<pad>", "<unk>", "|"  # the CTC blank is id 0, as padding


def normalized(text: Any) -> str:
    """A transcript as the vocabulary spells it: lower case, single spaces."""
    return " ".join(str(text or "").lower().split())


def vocabulary(transcripts: list[Any]) -> list[str]:
    """The tokens in id order: blank, unknown, word delimiter, then every character seen."""
    chars = sorted(set("".join(normalized(t) for t in transcripts)) - {" "})
    return [BLANK, UNKNOWN, SPACE, *chars]


def encode_text(text: str, ids: dict[str, int]) -> list[int]:
    unknown = ids[UNKNOWN]
    return [ids.get(SPACE if c == " " else c, unknown) for c in normalized(text)]


def decode_ids(ids: list[int], labels: list[str]) -> str:
    """Token ids to text (ids already collapsed; blanks and unknowns dropped)."""
    chars = [labels[i] for i in ids if labels[i] not in (BLANK, UNKNOWN)]
    return " ".join("".join(" " if c == SPACE else c for c in chars).split())


def greedy(logits: torch.Tensor, labels: list[str]) -> str:
    """The transcript of one clip's frame logits [frames, vocabulary]: the best token per
    frame, runs of one token merged, blanks dropped."""
    best = logits.argmax(-1).tolist()
    merged = [token for i, token in enumerate(best) if i == 0 or token != best[i - 1]]
    return decode_ids([t for t in merged if t != 0], labels)


def error_rates(predicted: list[str], truth: list[str]) -> dict[str, float]:
    """Word and character error rates of transcripts against the truth."""
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    if not truth:
        return {"wer": 0.0, "cer": 0.0}
    return {
        "wer": float(word_error_rate(predicted, truth)),
        "cer": float(char_error_rate(predicted, truth)),
    }


class SpeechRecognition(AudioClassification):
    name = "speech_recognition"
    pipeline_tag = "automatic-speech-recognition"
    confusion_matrix = False
    replaces_head = True  # a CTC checkpoint's own vocabulary gives way to the data's
    cut_note = "left out of training; read whole at evaluation"

    def load_raw(self, cfg: DataConfig) -> Any:
        raw = super().load_raw(cfg)
        if cfg.format.value.endswith("folder"):
            for split, table in list(raw.splits.items()):
                raw.splits[split] = _folder_transcripts(table, cfg, f"data.files.{split}")
        return raw

    def label_names(
        self, task: TaskConfig, cfg: DataConfig, train: Any, hub_names: list[str] | None
    ) -> list[str] | None:
        if task.labels:
            return [str(label) for label in task.labels]
        return vocabulary(train[cfg.label_column])

    def check_labels(self, labels: list[str] | None, task: TaskConfig) -> None:
        if labels is None or len(labels) <= 3 or labels[:3] != [BLANK, UNKNOWN, SPACE]:
            raise FtError(
                "data.label_column: the training transcripts hold no characters; give each"
                " clip its transcript (or task.labels: <pad>, <unk>, |, then the characters)"
            )

    def targets(
        self, values: list[Any], labels: list[str] | None, split: str, column: str
    ) -> list[Any]:
        assert labels is not None
        ids = {name: i for i, name in enumerate(labels)}
        targets = [encode_text(value, ids) for value in values]
        unknown = sum(t.count(ids[UNKNOWN]) for t in targets)
        if unknown:
            pictures.warn(
                f"the {split} split's transcripts hold {unknown} character(s) the vocabulary"
                " lacks; they are scored as errors"
            )
        return targets

    def split_of(self, refs: list[Any], targets: list[Any], cfg: DataConfig, split: str) -> Any:
        """Whole clips; training leaves out those over data.max_seconds (counted)."""
        if split == "train":
            keep = [i for i, ref in enumerate(refs) if sounds.seconds(ref) <= cfg.max_seconds]
            if not keep:
                raise FtError(
                    f"data.max_seconds={cfg.max_seconds:g}: every training clip is longer; raise it"
                )
            if len(keep) < len(refs):
                pictures.warn(
                    f"left out {len(refs) - len(keep)} of {len(refs)} training clips longer"
                    f" than data.max_seconds={cfg.max_seconds:g}"
                )
                refs, targets = [refs[i] for i in keep], [targets[i] for i in keep]
        return sounds.SoundSplit(refs, targets)

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        assert labels is not None
        return {
            "vocab_size": len(labels),
            "pad_token_id": 0,
            "ctc_loss_reduction": "mean",
            "ctc_zero_infinity": True,
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
        }, "AutoModelForCTC"

    def teacher_width(self, labels: list[str] | None) -> int:
        return len(labels or [])

    def save(
        self,
        net: nn.Module,
        tokenizer: Any,
        folder: Path,
        weights: dict[str, torch.Tensor] | None,
        task: TaskConfig,
        labels: Any,
    ) -> None:
        """The model, and a processor of its feature extractor and a CTC tokenizer of the
        vocabulary (`AutoProcessor.from_pretrained(folder)` reloads both)."""
        from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2Processor

        net.save_pretrained(folder, state_dict=weights)
        extractor = getattr(tokenizer, "feature_extractor", tokenizer)
        with tempfile.TemporaryDirectory() as scratch:
            vocab = Path(scratch) / "vocab.json"
            vocab.write_text(json.dumps({token: i for i, token in enumerate(labels)}))
            ctc = Wav2Vec2CTCTokenizer(
                str(vocab),
                unk_token=UNKNOWN,
                pad_token=BLANK,
                word_delimiter_token=SPACE,
                bos_token=None,
                eos_token=None,
            )
            Wav2Vec2Processor(feature_extractor=extractor, tokenizer=ctc).save_pretrained(folder)

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        processor: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Any:
        return CTCObjective(net, labels or [], processor, compile_model)

    def predicted(self, refs: list[Any], processor: Any, cfg: DataConfig) -> tuple[Any, Any, Any]:
        """A clip longer than data.max_seconds in overlapping windows (memory stays that of
        one window); each entry's start and the rate, to stitch its frames back."""
        split = sounds.windowed(refs, [[]] * len(refs), cfg.max_seconds)
        features = sounds.Features(processor)
        collate = sounds.SoundCollator(split, features, cfg.max_seconds, samples=True)
        starts = split.offsets or [0.0] * len(split)
        return split, collate, [(start, features.rate) for start in starts]

    def prediction(
        self, logits: Any, labels: list[str] | None, extra: Any, lists: bool
    ) -> dict[str, Any]:
        """The transcript, from the frames of the clip itself (not its batch's padding); a
        long clip's windows stitched first."""
        assert labels is not None
        if not isinstance(logits, list):
            logits, extra = [logits], [extra]
        windows = []
        for frames, item in zip(logits, extra, strict=True):
            own, place = item if item is not None else (None, None)
            start, rate = place if place is not None else (0.0, 1)
            samples, longest = (int(v) for v in own) if own is not None else (len(frames), 0)
            if own is not None:
                frames = frames[: max(1, round(len(frames) * samples / longest))]
            windows.append((frames, start, samples / rate))
        return {"transcript": greedy(stitched(windows), labels)}


def stitched(windows: list[tuple[torch.Tensor, float, float]]) -> torch.Tensor:
    """One clip's frame logits from its windows' ((frames, start s, length s), in order):
    where two windows overlap, each frame comes from the window it is further inside,
    the cut in the middle of the overlap."""
    if len(windows) == 1:
        return windows[0][0]
    kept = []
    for index, (frames, start, length) in enumerate(windows):
        step = length / len(frames)
        times = start + (torch.arange(len(frames)) + 0.5) * step
        low, high = -float("inf"), float("inf")
        if index > 0:
            _, before, before_length = windows[index - 1]
            low = (start + before + before_length) / 2
        if index + 1 < len(windows):
            _, after, _ = windows[index + 1]
            high = (after + start + length) / 2
        kept.append(frames[(times >= low) & (times < high)])
    return torch.cat(kept)


def padded_targets(rows: list[list[int]]) -> torch.Tensor:
    """Each row's token ids, padded with -100 to the longest."""
    longest = max((len(r) for r in rows), default=0)
    return torch.tensor([r + [-100] * (longest - len(r)) for r in rows], dtype=torch.long)


class CTCObjective(AudioObjective):
    """CTC loss over each clip's frames; transcripts decoded greedily for WER and CER."""

    def __init__(
        self, net: nn.Module, labels: list[str], processor: Any, compile_model: bool
    ) -> None:
        super().__init__(
            net, len(labels), processor, compile_model, 0.0, None, "speech_recognition"
        )
        self.net, self.labels = net, labels

    def collator(self, split: Any, seed: int, keep_decoded: bool = False) -> Any:
        return sounds.SoundCollator(
            split,
            self.features,
            None,
            seed,
            targets=padded_targets,
            keep_decoded=keep_decoded,
            multiple=self.pad_samples,
        )

    def train_collator(self, split: Any, seed: int) -> Any:
        return self.collator(split, seed, keep_decoded=True)

    def outputs(self, batch: Any) -> tuple[torch.Tensor, Any]:
        """(frame logits [rows, frames, vocabulary], (targets, each row's frames))."""
        labels = batch.pop("labels")
        logits = self.forward(**batch).logits
        mask = batch.get("attention_mask")
        if mask is None:
            frames = torch.full((len(logits),), logits.shape[1], device=logits.device)
        else:
            frames = _output_lengths(self.net, mask.sum(-1))
        return logits, (labels, frames.clamp(max=logits.shape[1]))

    def loss(self, logits: torch.Tensor, targets: Any) -> torch.Tensor:
        labels, frames = targets
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        lengths = (labels >= 0).sum(-1)
        return F.ctc_loss(
            log_probs,
            labels.clamp(min=0),
            frames,
            lengths,
            blank=0,
            reduction="mean",
            zero_infinity=True,
        )

    def new_metrics(self, split: Any = None) -> Any:
        return TranscriptMetrics(self.labels, self)


class TranscriptMetrics:
    """Greedy transcripts against the truth over an evaluation pass: WER, CER and loss
    (what several processes gathered merges into the single-process result)."""

    def __init__(self, labels: list[str], objective: CTCObjective | None = None) -> None:
        self.labels, self.objective = labels, objective
        self.predicted: list[str] = []
        self.truth: list[str] = []
        self.loss_sum, self.count = 0.0, 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "objective": None}  # the model stays in its process

    def update(self, logits: torch.Tensor, targets: Any) -> None:
        labels, frames = targets
        if self.objective is not None:
            loss = self.objective.loss(logits.detach(), (labels, frames))
            self.loss_sum += float(loss) * len(labels)
        self.count += len(labels)
        for row, length, truth in zip(logits.detach().float().cpu(), frames, labels, strict=True):
            self.predicted.append(greedy(row[: int(length)], self.labels))
            self.truth.append(decode_ids([int(t) for t in truth if t >= 0], self.labels))

    def merge(self, others: list[TranscriptMetrics]) -> TranscriptMetrics:
        for other in others:
            self.predicted += other.predicted
            self.truth += other.truth
            self.loss_sum += other.loss_sum
            self.count += other.count
        return self

    def compute(self) -> dict[str, float]:
        return {
            **error_rates(self.predicted, self.truth),
            "loss": self.loss_sum / max(1, self.count),
        }


def _output_lengths(net: nn.Module, samples: torch.Tensor) -> torch.Tensor:
    """The frames a model makes of clips of `samples` (its convolutions' arithmetic, which
    its own classes hold; a wrapped model's inner one answers)."""
    for module in net.modules():
        lengths = getattr(module, "_get_feat_extract_output_lengths", None)
        if lengths is not None:
            return lengths(samples)
    raise FtError(f"{type(net).__name__} does not say how many frames a clip makes")


def _folder_transcripts(table: Any, cfg: DataConfig, key: str) -> Any:
    """A folder set's label column made the transcripts: each class folder's own
    (data.folder_transcripts), or each clip's sidecar FILE.txt."""
    column, label = cfg.audio_column, cfg.label_column
    if cfg.folder_transcripts:
        given = {str(k): str(v) for k, v in cfg.folder_transcripts.items()}
        missing = sorted({str(v) for v in table[label]} - set(given))
        if missing:
            raise FtError(
                f"data.folder_transcripts: no transcript for class folder '{missing[0]}' of"
                f" {key}; add {missing[0]}: <its words>"
            )
        texts = [given[str(v)] for v in table[label]]
    else:
        texts = []
        for path in table[column]:
            sidecar = Path(path).with_suffix(".txt")
            if not sidecar.is_file():
                raise FtError(
                    f"{key}: clip '{path}' has no transcript ({sidecar.name} beside it); write"
                    " one per clip, or set data.folder_transcripts={FOLDER: TEXT, ...}"
                )
            texts.append(sidecar.read_text(encoding="utf-8-sig").strip())
    return table.remove_columns(label).add_column(label, texts)


TASK = SpeechRecognition()
