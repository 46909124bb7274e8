"""Typed run spec: one dataclass per config group, composed into `RunSpec`.

Every group option YAML in configs/ is merged into these schemas, so an unknown
key, a wrong type or a `+new.key` fails at compose time with the full key name.
Imports no torch: `ft recipes` and config checks stay cheap.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

from ft_cli.data.formats import FORMATS as TABLE_FORMATS
from ft_cli.strategies import STRATEGIES
from ft_cli.tasks import TASKS
from ft_cli.tasks import info as task_info

GROUPS = (
    "model",
    "data",
    "task",
    "strategy",
    "augment",
    "optimizer",
    "schedule",
    "hardware",
    "logger",
)


@dataclass(frozen=True)
class Bounds:
    """The range a numeric field (or each element of a list field) must lie in."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded
    high_open: bool = False
    length: int | None = None  # list fields: exactly this many values

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (
            value > self.high or (self.high_open and value == self.high)
        )

    def describe(self) -> str:
        if self.high is None:
            return f"greater than {self.low:g}" if self.low_open else f"at least {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


AT_LEAST_0 = Bounds(0)
AT_LEAST_1 = Bounds(1)
POSITIVE = Bounds(0, low_open=True)
SHARE = Bounds(0, 1)  # [0, 1]
FRACTION = Bounds(0, 1, high_open=True)  # [0, 1): a probability that must leave something
DECAY = Bounds(0, 1, low_open=True)  # (0, 1]: a multiplier that shrinks or keeps


def _help(default: object, text: str, bounds: Bounds | None = None) -> object:
    return field(default=default, metadata={"help": text, "bounds": bounds})


class ModelInit(str, Enum):
    pretrained = "pretrained"
    scratch = "scratch"


@dataclass
class ModelConfig:
    name_or_path: str = _help(
        MISSING, "Hub id, local folder, or pkg:PACKAGE/FOLDER inside an installed package."
    )
    revision: str | None = _help(None, "Hub revision (branch, tag or commit); null = main.")
    trust_remote_code: bool = _help(False, "Allow model code from the hub; off unless you say so.")
    init: ModelInit = _help(
        ModelInit.pretrained, "pretrained: load weights; scratch: fresh weights from the config."
    )
    from_run: str | None = _help(
        None,
        "Start from the trained model/ of an earlier ft run (RUN_DIR); wins over name_or_path"
        " and init.",
    )
    layers: int | None = _help(None, "scratch: encoder layers; null = the config's.", AT_LEAST_1)
    hidden_size: int | None = _help(None, "scratch: hidden size; null = the config's.", AT_LEAST_1)
    heads: int | None = _help(None, "scratch: attention heads; null = the config's.", AT_LEAST_1)
    intermediate_size: int | None = _help(
        None,
        "scratch: feed-forward size; null = the config's, or 4 x hidden_size when set.",
        AT_LEAST_1,
    )


SCRATCH_SIZES = ("layers", "hidden_size", "heads", "intermediate_size")


# Hub datasets, every table format (ft_cli.data.formats), and the folders of class folders
# images and audio files come in.
# maskfolder: images/ and masks/ matched by name (semantic segmentation).
# coco: data.files.* are COCO JSON files of boxes (object detection).
FOLDER_FORMATS = ("imagefolder", "audiofolder", "maskfolder", "coco")
DataFormat = Enum(  # type: ignore[misc]
    "DataFormat",
    {"hub": "hub", **{name: name for name in (*TABLE_FORMATS, *FOLDER_FORMATS)}},
    type=str,
    module=__name__,
)


class Quoting(str, Enum):
    auto = "auto"
    quoted = "quoted"
    none = "none"


class TextDocuments(str, Enum):
    line = "line"
    paragraph = "paragraph"


class LongInputs(str, Enum):
    truncate = "truncate"
    windows = "windows"


class AudioCrop(str, Enum):
    random = "random"
    centre = "centre"


class Calibration(str, Enum):
    none = "none"
    temperature = "temperature"


class DataChecks(str, Enum):
    warn = "warn"
    strict = "strict"
    off = "off"


class BoxFormat(str, Enum):
    xywh = "xywh"
    xyxy = "xyxy"
    cxcywh = "cxcywh"


class WindowPooling(str, Enum):
    mean = "mean"
    max = "max"
    first = "first"


@dataclass
class DataFiles:
    train: str | None = _help(None, "Training file (relative to data.path when set).")
    validation: str | None = _help(None, "Validation file; null = carve from train.")
    test: str | None = _help(None, "Test file; optional, evaluated once at the end.")


@dataclass
class DataConfig:
    format: DataFormat = _help(
        MISSING,
        "hub, glue_tsv, csv, tsv, json (json or jsonl), parquet, text (.txt; task=mlm),"
        " imagefolder or audiofolder (data.files.* are folders of <label>/<file> files),"
        " maskfolder (data.files.* hold images/ and masks/ of the same names), coco"
        " (data.files.* are COCO JSON files of boxes).",
    )
    hub_path: str | None = _help(None, "Hub dataset id (format=hub), e.g. nyu-mll/glue.")
    hub_name: str | None = _help(None, "Hub dataset config name (format=hub), e.g. mrpc.")
    path: str | None = _help(None, "Folder the data.files names are relative to.")
    files: DataFiles = field(default_factory=DataFiles)
    text_column: str = _help(
        "text", "Column with the (first) text; token_classification: the list of words."
    )
    text_pair_column: str | None = _help(None, "Column with the second text of a pair, if any.")
    prompt_column: str = _help(
        "prompt",
        "causal_lm, seq2seq: column with each example's prompt (seq2seq: its source text);"
        " ft predict and ft serve generate from it.",
    )
    response_column: str = _help(
        "response",
        "causal_lm, seq2seq: column with the answer to learn (seq2seq: the target text).",
    )
    max_target_length: int = _help(
        128, "seq2seq: longest target, in tokens (longer ones are cut).", AT_LEAST_1
    )
    messages_column: str = _help(
        "messages",
        "causal_lm: column with a conversation, a list of {role, content}, rendered with"
        " the chat template.",
    )
    image_column: str = _help(
        "image", "image_classification: column with each image's path (relative to its file)."
    )
    mask_column: str = _help(
        "mask",
        "semantic_segmentation: column with each image's mask (a PNG of class ids; its"
        " path, relative to its file); format=maskfolder: masks/ beside images/.",
    )
    objects_column: str = _help(
        "objects",
        "object_detection: column with each image's boxes, {bbox: [[...]], category: [...]}"
        " (a table with a box per row has box columns instead).",
    )
    box_format: BoxFormat = _help(
        BoxFormat.xywh,
        "object_detection: how data.objects_column's bboxes read, in pixels: xywh (COCO's"
        " corner, width, height), xyxy (corners) or cxcywh (centre, width, height).",
    )
    image_crop: list[float] | None = field(
        default_factory=lambda: [0.25, 1.0],
        metadata={
            "help": "image_classification: each training image is cropped to a random share of"
            " its area in [low, high], then resized; null = the processor's resize only.",
            "bounds": Bounds(0, 1, low_open=True, length=2),
        },
    )
    image_flip: bool = _help(
        True, "image_classification: flip training images left-right at random."
    )
    image_workers: int | None = _help(
        None,
        "image tasks: processes decoding images while the model trains; 0 = none (the"
        " training process decodes); null = a quarter of the usable cores, at most 4 (none"
        " on 2 or 3 cores, where they would take the model's).",
        AT_LEAST_0,
    )
    audio_column: str = _help(
        "audio",
        "audio tasks: column with each clip's path (relative to its file) or its bytes.",
    )
    max_seconds: float = _help(
        10.0,
        "audio tasks: the longest clip the model reads at once; a longer training clip is"
        " cropped (data.audio_crop), a longer evaluated or predicted one read in overlapping"
        " windows (speech_recognition: longer training clips are left out).",
        POSITIVE,
    )
    audio_crop: AudioCrop = _help(
        AudioCrop.random,
        "audio tasks: which part of a training clip longer than data.max_seconds is read: a"
        " random one each epoch, or its centre.",
    )
    folder_transcripts: Any = _help(
        None,
        "speech_recognition from format=audiofolder: the transcript of every clip in a class"
        " folder, by folder name ({'0': zero, ...}); null = each clip's sidecar FILE.txt.",
    )
    label_column: str = _help(
        "label",
        "Column with the label (class name, id, or float); token_classification: the tags;"
        " speech_recognition: the transcript.",
    )
    quoting: Quoting = _help(
        Quoting.auto,
        "csv/tsv: do double quotes enclose fields? auto: csv yes, tsv no (a quote is text);"
        " quoted or none to say so.",
    )
    text_documents: TextDocuments = _help(
        TextDocuments.line, "format=text: a document per line, or per blank-line paragraph."
    )
    max_length: int = _help(128, "Longest tokenized input; longer ones are truncated.", Bounds(2))
    stride: int | None = _help(
        None,
        "Tokens two consecutive windows of a long input share (question_answering's contexts,"
        " data.long_inputs=windows); less than a window's room for text; null = a quarter of"
        " data.max_length.",
        AT_LEAST_0,
    )
    long_inputs: LongInputs = _help(
        LongInputs.truncate,
        "An input longer than data.max_length: truncate it, or read all of it in overlapping"
        " windows (classification, regression, token_classification), trained on each window"
        " and scored per input.",
    )
    window_pooling: WindowPooling = _help(
        WindowPooling.mean,
        "data.long_inputs=windows: how an input's window logits combine into its own: their"
        " mean, their per-class max, or the first window's.",
    )
    choice_columns: list[str] | None = _help(
        None,
        "multiple_choice: the columns of a row's choices (one per choice), or one column"
        " holding a list of them per row.",
    )
    answer_start_column: str | None = _help(
        None,
        "question_answering: column with the answer's first character in the context, when"
        " data.label_column holds the answer's text (not SQuAD's answers dict); an empty"
        " answer: none in the context.",
    )
    group_column: str | None = _help(
        None,
        "train.folds: rows sharing this column's value stay in one fold (a speaker, a"
        " document, a patient); null = folds stratified by label.",
    )
    fold: list[int] | None = field(
        default=None,
        metadata={
            "help": "[k, K]: hold out fold k of K of the train split as this run's"
            " validation (train.folds sets it for each fold's run).",
            "bounds": Bounds(0, length=2),
        },
    )
    validation_fraction: float = _help(
        0.1, "Share of train held out for validation when there is no validation split.", FRACTION
    )
    max_train_samples: int | None = _help(None, "Use only the first N training rows.", AT_LEAST_1)
    max_eval_samples: int | None = _help(
        None, "Use only the first N validation/test rows.", AT_LEAST_1
    )
    cache: bool = _help(
        True, "Keep tokenized splits in $FT_CACHE_DIR (~/.cache/ft/tokenized): reruns skip it."
    )
    checks: DataChecks = _help(
        DataChecks.warn,
        "ft train's data check: warn (a line per finding, data_check.json in the run dir),"
        " strict (refuse to train on duplicates, leaks, conflicts or empty inputs) or off.",
    )


class TextFormat(str, Enum):
    auto = "auto"
    plain = "plain"
    prompt_response = "prompt_response"
    messages = "messages"


@dataclass
class GenerationSettings:
    """How a generating task (causal_lm, seq2seq) writes text in eval, predict and serve."""

    max_new_tokens: int = _help(32, "Most tokens generated per prompt.", AT_LEAST_1)
    sample: bool = _help(False, "Sample the next token (else greedy, or beam search).")
    temperature: float = _help(1.0, "sample: divide the logits by this.", POSITIVE)
    top_p: float = _help(1.0, "sample: keep the fewest tokens whose probability reaches p.", DECAY)
    top_k: int = _help(0, "sample: keep the k likeliest tokens; 0 = all.", AT_LEAST_0)
    num_beams: int = _help(1, "Beam search over this many beams (greedy: 1).", AT_LEAST_1)
    seed: int = _help(0, "sample: the seed; a prompt's text is the same for it whatever its batch.")
    eval_rows: int | None = _help(
        None,
        "Validation rows answered by generation at each evaluation (exact match, token F1,"
        " ROUGE); null = every row, 0 = none (loss and perplexity only).",
        AT_LEAST_0,
    )
    request_max_new_tokens: int = _help(
        256, "ft serve: the most max_new_tokens one request may ask for.", AT_LEAST_1
    )


class Packing(str, Enum):
    group_texts = "group_texts"
    line_by_line = "line_by_line"


@dataclass
class TaskSettings:
    """What one task is: its kind and the settings of that kind."""

    kind: str = _help(
        MISSING,
        "classification, regression, token_classification (a tag per word: IOB2 entities),"
        " question_answering (a span of the context), multiple_choice (the right one of N),"
        " mlm (masked-LM pretraining) or multitask (several tasks, one encoder).",
    )
    labels: list[str] | None = _help(
        None, "Class names in id order; null = the sorted labels found in train."
    )
    class_weights: Any = _help(
        None,
        "classification, token_classification: weight of each class in the loss: balanced"
        " (inverse frequency in train), a list in label order, or {label: weight}; null = 1.",
    )
    mlm_probability: float = _help(0.15, "mlm: share of (non-special) tokens to predict.", DECAY)
    mask_replace_prob: float = _help(
        0.8, "mlm: of the predicted tokens, share shown as [MASK].", SHARE
    )
    random_replace_prob: float = _help(
        0.1,
        "mlm: of the predicted tokens, share shown as a random token (the rest: unchanged).",
        SHARE,
    )
    whole_word_mask: bool = _help(False, "mlm: mask all pieces of a word together.")
    nsp: bool = _help(
        False,
        "mlm: also next-sentence prediction (BERT pretraining): segment pairs, half of them"
        " the true continuation; needs a model with an NSP head.",
    )
    packing: Packing = _help(
        Packing.group_texts,
        "mlm, causal_lm (plain text): group_texts (texts joined and cut into max_length"
        " blocks) or line_by_line (one per row).",
    )
    max_answer_length: int = _help(30, "question_answering: longest answer, in tokens.", AT_LEAST_1)
    n_best: int = _help(
        20, "question_answering: start and end positions tried per window.", AT_LEAST_1
    )
    null_threshold: float | None = _help(
        None,
        "question_answering: answer nothing when the no-answer score beats the best span's by"
        " more than this; null = tuned on the evaluated questions when some have no answer.",
    )
    label_all_subtokens: bool = _help(
        False,
        "token_classification: train on every sub-token of a word (B- becomes I- after the"
        " first), not only the first; metrics always read the first.",
    )
    ignore_index: int = _help(
        255,
        "semantic_segmentation: the mask value (unlabelled, borders) no loss or metric reads.",
        AT_LEAST_0,
    )
    overlay: bool = _help(
        False,
        "semantic_segmentation: ft predict also writes each image with its predicted mask"
        " coloured over it (NAME_overlay.png beside the mask); object_detection: each image"
        " with its boxes drawn (a folder beside the output).",
    )
    calibration: Calibration = _help(
        Calibration.none,
        "A class per row: temperature fits a temperature on the validation split after"
        " training and folds it into the model (calibrated probabilities everywhere);"
        " none keeps the model's own.",
    )
    threshold: str | None = _help(
        None,
        "Binary classification: the positive class's probability from which ft predict and"
        " ft serve predict it (0.3), or auto (the F1-best on validation; auto:mcc,"
        " auto:accuracy); null = the most probable class.",
    )
    score_threshold: float = _help(
        0.5,
        "object_detection: ft predict and ft serve keep the boxes scored at least this"
        " (the metrics read every box).",
        Bounds(0, 1),
    )
    text_format: TextFormat = _help(
        TextFormat.auto,
        "causal_lm: plain (continued pretraining on data.text_column), prompt_response"
        " (loss on the response only) or messages (a chat, loss on the assistant's turns);"
        " auto = messages, prompt_response or plain by the columns train has.",
    )
    pack_examples: bool = _help(
        False,
        "causal_lm: pack whole prompt/response examples or conversations into max_length"
        " rows for training (fewer, fuller batches: a batch then holds more examples, so"
        " fewer steps an epoch); false = one example a row.",
    )
    chat_template: str | None = _help(
        None,
        "causal_lm, messages: a Jinja chat template; null = the tokenizer's own, or ft's"
        " plain one (<|role|> lines) when it has none; saved with the model.",
    )
    prefix: str = _help("", "seq2seq: text put before every source (T5's 'summarize: ').")
    generation: GenerationSettings = field(default_factory=GenerationSettings)


@dataclass
class SubTaskConfig(TaskSettings):
    """One task of a multi-task run: its kind and settings, its own data, its loss weight."""

    data: DataConfig = field(default_factory=DataConfig)
    weight: float = _help(1.0, "multitask: weight of this task's loss.", POSITIVE)
    share: float = _help(
        1.0, "multitask, mixing=weights: this task's relative share of the batches.", POSITIVE
    )


class Mixing(str, Enum):
    proportional = "proportional"
    temperature = "temperature"
    round_robin = "round_robin"
    weights = "weights"


@dataclass
class TaskConfig(TaskSettings):
    tasks: dict[str, SubTaskConfig] = field(
        default_factory=dict,
        metadata={"help": "multitask: the tasks by name, each with kind, data, weight."},
    )
    mixing: Mixing = _help(
        Mixing.proportional,
        "multitask: which task each batch comes from: proportional (to size), temperature"
        " (size^(1/T)), round_robin, or weights (each task's share).",
    )
    temperature: float = _help(2.0, "multitask, mixing=temperature: T.", POSITIVE)


# One member per module in ft_cli/strategies (STRATEGIES names them, without importing them).
StrategyKind = Enum(  # type: ignore[misc]
    "StrategyKind", {name: name for name in STRATEGIES}, type=str, module=__name__
)


class UnfreezeUnit(str, Enum):
    epochs = "epochs"
    steps = "steps"


@dataclass
class LoraSettings:
    r: int = _help(8, "Rank of the low-rank update.", AT_LEAST_1)
    alpha: float = _help(16.0, "Scale of the update (alpha / r multiplies it).", POSITIVE)
    dropout: float = _help(0.1, "Dropout on the adapter input.", FRACTION)
    target_modules: list[str] | None = _help(
        None,
        "Names of the linear layers that get adapters; null = the model family's attention"
        " projections as peft lists them (BERT query and value, GPT-2 c_attn, Llama-style"
        " q_proj and v_proj, ...), else the first of query/value, q_proj/v_proj, c_attn,"
        " q/v the model has.",
    )
    keep_adapter: bool = _help(False, "Also save the unmerged adapter to adapter/ in the run dir.")


@dataclass
class TeacherConfig:
    name_or_path: str | None = _help(None, "distill: the teacher (hub id, folder, pkg:...).")
    from_run: str | None = _help(
        None,
        "distill: the teacher is an earlier run's model/; a sweep dir or an ensemble folder:"
        " every run in it teaches, their averaged logits are the target.",
    )
    from_runs: list[str] = field(
        default_factory=list,
        metadata={"help": "distill: several teacher runs, [RUN1,RUN2,...]; logits averaged."},
    )


@dataclass
class StrategyConfig:
    kind: StrategyKind = _help(
        StrategyKind.full,
        "full, freeze_backbone, freeze_layers, gradual_unfreeze, llrd, lora, l2sp or distill.",
    )
    frozen_layers: int = _help(0, "freeze_layers: freeze the bottom N encoder layers.", AT_LEAST_0)
    frozen_top_layers: int = _help(0, "freeze_layers: freeze the top N encoder layers.", AT_LEAST_0)
    frozen_layer_ids: list[int] | None = _help(
        None, "freeze_layers: freeze these encoder layers (0 = bottom)."
    )
    frozen_pattern: str | None = _help(
        None, "freeze_layers: freeze parameters whose name matches this regex."
    )
    freeze_embeddings: bool = _help(True, "freeze_layers: freeze the embeddings too.")
    unfreeze_every: int = _help(
        1, "gradual_unfreeze: unfreeze one more layer group every N ...", AT_LEAST_1
    )
    unfreeze_unit: UnfreezeUnit = _help(
        UnfreezeUnit.epochs, "gradual_unfreeze: ... epochs or steps."
    )
    rewarm_steps: int = _help(
        0,
        "gradual_unfreeze: after each unfreeze, ramp the lr up again over N steps (0 = off).",
        AT_LEAST_0,
    )
    lr_decay: float = _help(
        1.0,
        "Layer-wise lr decay (any strategy; llrd: 0.9): layer at depth d below the head"
        " gets lr * lr_decay^d.",
        DECAY,
    )
    lora: LoraSettings = field(default_factory=LoraSettings)
    l2sp_alpha: float = _help(
        0.01, "l2sp: alpha/2 * ||w - w0||^2 on pretrained parameters.", AT_LEAST_0
    )
    l2sp_beta: float = _help(
        0.01, "l2sp: beta/2 * ||w||^2 on new parameters (the head).", AT_LEAST_0
    )
    l1: float = _help(0.0, "Any strategy: l1 * sum |w| over trainable parameters.", AT_LEAST_0)
    l2: float = _help(0.0, "Any strategy: l2/2 * ||w||^2 over trainable parameters.", AT_LEAST_0)
    dropout: float | None = _help(
        None, "Any strategy: set the model's dropout; null = its own.", FRACTION
    )
    freeze_word_embeddings: bool = _help(
        False,
        "Any strategy: keep the input word embeddings (and an output layer tied to them) as"
        " loaded; a faster step, no vocabulary-sized gradient or optimizer update.",
    )
    label_smoothing: float = _help(
        0.0, "Any strategy: label smoothing of the classification loss.", FRACTION
    )
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill_alpha: float = _help(
        0.5, "distill: weight of the teacher term (1 = teacher only).", SHARE
    )
    temperature: float = _help(2.0, "distill: softmax temperature T of both models.", POSITIVE)
    cache_teacher: bool = _help(True, "distill: compute each example's teacher logits once.")


@dataclass
class AugmentConfig:
    """Training-batch augmentation; each value 0 is off. Options compose."""

    token_mask: float = _help(
        0.0, "Share of each training row's tokens replaced by the mask token.", FRACTION
    )
    token_delete: float = _help(0.0, "Share of each training row's tokens deleted.", FRACTION)
    token_swap: float = _help(
        0.0, "Share of each training row's tokens swapped with a neighbour.", FRACTION
    )
    span_cutoff: float = _help(
        0.0,
        "Share of each training row's tokens, one contiguous span, hidden from attention.",
        FRACTION,
    )
    embedding_noise: float = _help(
        0.0,
        "NEFTune alpha: uniform noise in +-alpha/sqrt(length*hidden) added to the input word"
        " embeddings of training rows (5 is a common choice).",
        AT_LEAST_0,
    )
    mixup: float = _help(
        0.0,
        "Mixup alpha: sentence representations and labels of a training batch mixed with a"
        " shuffled partner, weight ~ Beta(alpha, alpha) (0.4 is common).",
        AT_LEAST_0,
    )

    audio_gain_db: float = _help(
        0.0, "Audio: each training clip's volume changed by a gain drawn in +-N dB.", AT_LEAST_0
    )
    audio_noise_snr: list[float] | None = field(
        default=None,
        metadata={
            "help": "Audio: white noise added to each training clip at a signal-to-noise"
            " ratio drawn in [low, high] dB (e.g. [10, 40]); null = none.",
            "bounds": Bounds(-50, 100, length=2),
        },
    )
    audio_time_shift: float = _help(
        0.0, "Audio: each training clip moved by up to N seconds either way.", AT_LEAST_0
    )
    audio_speed: list[float] | None = field(
        default=None,
        metadata={
            "help": "Audio: each training clip played at a speed factor drawn in [low, high]"
            " (e.g. [0.9, 1.1]: pitch and tempo change together); null = none.",
            "bounds": Bounds(0.25, 4, length=2),
        },
    )
    audio_time_mask: float = _help(
        0.0,
        "Audio, SpecAugment: share of each training clip's time hidden (one span).",
        FRACTION,
    )
    audio_freq_mask: float = _help(
        0.0,
        "Audio, SpecAugment: share of each training spectrogram's frequency bins hidden (one"
        " band; models fed spectrograms only).",
        FRACTION,
    )

    def token_level(self) -> bool:
        return any((self.token_mask, self.token_delete, self.token_swap, self.span_cutoff))

    def audio_level(self) -> bool:
        return any(key.startswith("audio_") for key in self.changed())

    def model_level(self) -> bool:
        return bool(self.embedding_noise or self.mixup)

    def text_level(self) -> bool:
        return self.token_level() or self.model_level()

    def active(self) -> bool:
        return self.text_level() or self.audio_level()

    def changed(self) -> list[str]:
        """The keys of the augmentations that are on."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]


class OptimizerName(str, Enum):
    adamw = "adamw"
    adam = "adam"
    sgd = "sgd"


@dataclass
class OptimizerConfig:
    name: OptimizerName = _help(OptimizerName.adamw, "adamw, adam or sgd.")
    lr: float = _help(2e-5, "Peak learning rate.", POSITIVE)
    weight_decay: float = _help(
        0.0, "Weight decay (adamw: decoupled; never on biases and LayerNorm).", AT_LEAST_0
    )
    betas: list[float] = field(
        default_factory=lambda: [0.9, 0.999],
        metadata={"help": "Adam/AdamW betas.", "bounds": Bounds(0, 1, high_open=True, length=2)},
    )
    eps: float = _help(1e-8, "Adam epsilon.", POSITIVE)
    momentum: float = _help(0.0, "sgd momentum.", FRACTION)
    nesterov: bool = _help(False, "sgd Nesterov momentum.")


class ScheduleName(str, Enum):
    linear = "linear"
    cosine = "cosine"
    constant = "constant"
    exponential = "exponential"


@dataclass
class ScheduleConfig:
    name: ScheduleName = _help(ScheduleName.linear, "linear, cosine, constant, exponential.")
    warmup_ratio: float = _help(0.0, "Warmup as a share of the total optimizer steps.", SHARE)
    warmup_steps: int = _help(
        0, "Warmup in optimizer steps; wins over warmup_ratio when > 0.", AT_LEAST_0
    )
    gamma: float = _help(0.999, "exponential: lr multiplier per step after warmup.", DECAY)
    min_lr_ratio: float = _help(0.0, "cosine: floor as a share of the peak lr.", SHARE)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Parallel(str, Enum):
    ddp = "ddp"
    fsdp = "fsdp"


@dataclass
class HardwareConfig:
    device: Device = _help(Device.auto, "auto (CUDA if present, else CPU), cpu or cuda.")
    precision: Precision = _help(
        Precision.fp32, "fp32, bf16, fp16 (CUDA only) or auto (bf16 where native, else fp32)."
    )
    num_threads: int | None = _help(
        None, "CPU threads for torch; null = torch's default.", AT_LEAST_1
    )
    compile: bool = _help(
        False, "torch.compile the model (dynamic shapes); the first step includes compile time."
    )
    fast_paths: bool = _help(
        True,
        "CPU training: ft's dropout masks (16-bit random draws, same keep probability),"
        " matmul attention, contiguous feature-encoder activations (wav2vec2's"
        " layer-normalised convolutions), GPT-2's GELU in one kernel, BERT-style"
        " encoder layers on real tokens only for batches at least 5% padding, and their"
        " last layer on the first token alone under a classification or multiple-choice"
        " head; false = PyTorch's and transformers' own (so does hardware.compile=true).",
    )
    keep_freed_memory: bool = _help(
        False,
        "CPU training: glibc keeps the large blocks a step frees for the next step"
        " instead of unmapping them (no page faults anew each step: up to 1.3x on"
        " small steps, peak RSS up to 13% higher); false = glibc's own policy.",
    )
    distributed: Parallel = _help(
        Parallel.ddp,
        "Under torchrun: ddp (a model copy per process) or fsdp (FSDP2: weights,"
        " gradients and optimizer state sharded over the processes).",
    )


def _logger_config() -> type:
    """`LoggerConfig`: a field per logger in `ft_cli.loggers.LOGGERS`, typed by its own
    `Settings` (each logger module holds its keys)."""
    from dataclasses import make_dataclass

    from ft_cli import loggers

    settings = {name: loggers.module(name).Settings for name in loggers.LOGGERS}
    return make_dataclass(
        "LoggerConfig",
        [(name, kind, field(default_factory=kind)) for name, kind in settings.items()],
        namespace={
            "__doc__": "Where a run's scalars, config and results go; `logger=[tensorboard,"
            "mlflow]` picks several. metrics.json and the console are always written.",
            "chosen": loggers.chosen,
            "__module__": __name__,
        },
    )


LoggerConfig = _logger_config()


class Mode(str, Enum):
    min = "min"
    max = "max"


class NonFinite(str, Enum):
    stop = "stop"
    skip = "skip"


class Export(str, Enum):
    best = "best"
    last = "last"


@dataclass
class EarlyStoppingConfig:
    enabled: bool = _help(False, "Stop when the monitored metric stops improving.")
    metric: str | None = _help(
        None, "Monitored eval metric; null = the task's (accuracy / pearson / mlm: loss)."
    )
    mode: Mode | None = _help(None, "min or max; null = min for loss/mse, else max.")
    patience: int = _help(3, "Evaluations without improvement before stopping.", AT_LEAST_1)
    min_delta: float = _help(0.0, "Smallest change that counts as an improvement.", AT_LEAST_0)


@dataclass
class TrainConfig:
    epochs: int = _help(3, "Passes over the training data.", AT_LEAST_1)
    max_steps: int | None = _help(
        None, "Stop after this many optimizer steps (wins over epochs).", AT_LEAST_1
    )
    batch_size: int = _help(32, "Training examples per micro-batch.", AT_LEAST_1)
    eval_batch_size: int = _help(64, "Examples per evaluation batch.", AT_LEAST_1)
    grad_accum: int = _help(1, "Micro-batches per optimizer step.", AT_LEAST_1)
    group_by_length: bool = _help(
        True, "Batch rows of similar length together (shuffled groups): far less padding."
    )
    pad_to_multiple_of: int = _help(
        8,
        "Pad each batch's length up to a multiple of this many tokens, or of model frames"
        " for clips whose padding is masked (not past the longest row or"
        " data.max_seconds): fewer shapes, less memory for per-shape kernels; 1 = to the"
        " longest row only.",
        AT_LEAST_1,
    )
    max_grad_norm: float | None = _help(
        1.0, "Clip the gradient norm to this; null = no clipping.", POSITIVE
    )
    eval_every: int | None = _help(
        None, "Evaluate every N optimizer steps; null = each epoch end.", AT_LEAST_1
    )
    log_every: int = _help(10, "Log train loss/lr every N optimizer steps.", AT_LEAST_1)
    folds: int = _help(
        1,
        "K-fold cross-validation: K trainings, each holding out one fold of the train split"
        " (stratified by label, grouped by data.group_column, seeded), their mean and spread"
        " and out-of-fold predictions of every training row; 1 = off.",
        AT_LEAST_1,
    )
    seed: int = _help(42, "Seed for python, numpy and torch.")
    keep_checkpoints: int = _help(
        2, "Newest checkpoints kept (the best is always kept too).", AT_LEAST_1
    )
    export: Export = _help(Export.best, "Which weights model/ gets: best (by the metric) or last.")
    save_every: int | None = _help(
        None,
        "Also checkpoint every N optimizer steps; null = at evaluations (epoch ends).",
        AT_LEAST_1,
    )
    on_nonfinite: NonFinite = _help(
        NonFinite.stop, "A non-finite loss: stop (keep the last good checkpoint) or skip the step."
    )
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class RunSpec:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str | None = _help(None, "Run dir; null = the Hydra run dir.")
    resume: str | None = _help(
        None, "auto: the newest valid checkpoint of the run dir; or a checkpoint / run dir path."
    )
    resume_force: bool = _help(False, "Resume even though the model, task or data changed.")
    overwrite: bool = _help(
        False,
        "Start over in a run dir that already holds a run: the old run is moved to"
        " RUN_DIR.previous-N first, never deleted.",
    )


LOWER_IS_BETTER = ("loss", "mse", "perplexity", "wer", "cer")


def default_mode(metric: str) -> Mode:
    """min for losses and errors (a multi-task run's `NAME/loss` too), else max."""
    return Mode.min if metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER else Mode.max


def valid_metrics(task: TaskSettings) -> list[str]:
    """The metrics a run of `task` can monitor (multitask: `score` and every NAME/METRIC)."""
    names = list(task_info(task.kind).metrics)
    if task_info(task.kind).targets == "tasks":
        for name, sub in task.tasks.items():  # type: ignore[attr-defined]
            names += [f"{name}/{metric}" for metric in task_info(sub.kind).metrics]
    return names


def search_direction(task: str, metric: str | None, mode: str | None) -> str:
    """Optuna's direction for a run's monitored metric (`${ft.direction:...}` in configs)."""
    chosen = metric or task_info(task).metrics[0]
    picked = Mode(mode) if mode else default_mode(chosen)
    return "minimize" if picked == Mode.min else "maximize"


def register_configs() -> None:
    """Put the root schema into Hydra's ConfigStore (called by the CLI, not at import)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="ft_schema", node=RunSpec)


def check_bounds(node: object, prefix: str = "") -> None:
    """Every field's value against the Bounds declared beside it; raises FtError naming the key."""
    import dataclasses

    from ft_cli.errors import FtError

    for item in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, item.name)
        key = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            check_bounds(value, f"{key}.")
            continue
        if isinstance(value, dict):  # multitask: task.tasks.NAME
            for name, item_value in value.items():
                if dataclasses.is_dataclass(item_value):
                    check_bounds(item_value, f"{key}.{name}.")
            continue
        bounds: Bounds | None = item.metadata.get("bounds")
        if bounds is None or value is None:
            continue
        values = list(value) if isinstance(value, list) else [value]
        if bounds.length is not None and len(values) != bounds.length:
            shown = "[" + ", ".join(f"{v:g}" for v in values) + "]"
            raise FtError(
                f"{key}={shown} must be {bounds.length} values, each {bounds.describe()};"
                f" e.g. {key}=[0.9,0.999]"
            )
        for number in values:
            if not bounds.holds(number):
                finite = "" if math.isfinite(number) else "a finite number "
                raise FtError(f"{key}={_shown(value)} must be {finite}{bounds.describe()}")


def _shown(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def has_validation(data: DataConfig) -> bool:
    """Whether the run will have validation data (hub and GLUE data bring their own)."""
    own = data.format in (DataFormat.hub, DataFormat.glue_tsv) or data.files.validation is not None
    return own or data.validation_fraction > 0


def run_data(spec: RunSpec) -> dict[str, DataConfig]:
    """The data of each task of the run: {"": data} for one task, {name: data} for several."""
    if task_info(spec.task.kind).targets == "tasks":
        return {name: sub.data for name, sub in spec.task.tasks.items()}
    return {"": spec.data}


def window_stride(data: DataConfig) -> int:
    """The tokens consecutive windows share: data.stride, or a quarter of the window."""
    return data.stride if data.stride is not None else data.max_length // 4


def check_spec(spec: RunSpec) -> None:
    """Ranges declared in the schema, then cross-field rules; raises FtError naming the key."""
    check_bounds(spec)
    if task_info(spec.task.kind).targets == "tasks":
        _check_multitask(spec)
    else:
        _check_data(spec.data, "data.")
        _check_task(spec.task, spec.data, "task.", "data.")
    _check_class_weights(spec.task, "task.")
    _check_model(spec.model)
    _check_evaluation(spec)
    _check_augment(spec)
    _check_loggers(spec.logger)


def _check_loggers(config: Any) -> None:
    from ft_cli import loggers

    loggers.check(config)


def _check_augment(spec: RunSpec) -> None:
    """Augmentations only where they keep the targets right."""
    from ft_cli import tasks
    from ft_cli.errors import FtError

    aug, kind = spec.augment, spec.task.kind
    if not aug.active():
        return
    inputs = tasks.modality(kind)
    if inputs.augmented_by is not None:
        raise FtError(
            f"augment: changes tokens or sentence vectors; {inputs.noun} are augmented by"
            f" {inputs.augmented_by}: use augment=none"
        )
    foreign = [key for key in aug.changed() if key not in inputs.augment_keys]
    if foreign:
        audio = foreign[0].startswith("audio_")
        raise FtError(
            f"augment.{foreign[0]}: changes {'sounds' if audio else 'tokens or sentence vectors'};"
            f" task={kind} reads {inputs.noun}, augmented by"
            f" {', '.join('augment.' + key for key in inputs.augment_keys)}: set it to"
            f" {'null' if isinstance(getattr(aug, foreign[0]), list) else '0'}"
        )
    info = task_info(kind)
    if not info.augmented:
        raise FtError(
            f"augment: task={kind} is not augmented (masked-LM masks its own input); use"
            " augment=none"
        )
    tags = info.targets == "tags"
    if tags and (aug.token_delete or aug.token_swap):
        key = "token_delete" if aug.token_delete else "token_swap"
        raise FtError(
            f"augment.{key}: would move words away from their tags in token_classification; use"
            " augment.token_mask or augment.span_cutoff"
        )
    if aug.mixup and tags:
        mixed = tasks.named(
            lambda i: i.targets in ("classes", "score") and i.modality == info.modality
        )
        raise FtError(
            f"augment.mixup: mixes sentence representations; task={' or '.join(mixed)} only"
        )
    if aug.mixup and spec.strategy.kind == StrategyKind.distill:
        raise FtError(
            "augment.mixup: the teacher's targets are for unmixed rows; not with strategy=distill"
        )


def _check_data(data: DataConfig, key: str) -> None:
    from ft_cli.errors import FtError

    if data.format == DataFormat.hub and not data.hub_path:
        raise FtError(
            f"{key}hub_path is required for {key}format=hub; e.g. {key}hub_path=nyu-mll/glue"
        )
    if data.format == DataFormat.glue_tsv and data.path is None:
        raise FtError(
            f"{key}path is required for GLUE TSV data; set {key}path=FOLDER (the folder with"
            " train.tsv and dev.tsv)"
        )
    if data.format not in (DataFormat.hub, DataFormat.glue_tsv) and data.files.train is None:
        raise FtError(
            f"{key}files.train is required for {key}format={data.format.value};"
            f" set {key}files.train=FILE"
        )


def _check_multitask(spec: RunSpec) -> None:
    from ft_cli import inputs
    from ft_cli.errors import FtError

    tasks = spec.task.tasks
    if not tasks:
        raise FtError(
            "task=multitask lists no tasks: add task.tasks.NAME with kind and data for each"
            " (see docs/tasks.md, Multi-task training, or +recipe=demo_multitask)"
        )
    for name, sub in tasks.items():
        key = f"task.tasks.{name}."
        if not name.replace("_", "").replace("-", "").isalnum():
            raise FtError(f"task.tasks.{name}: a task name may hold letters, digits, _ and - only")
        info = task_info(sub.kind, f"{key}kind")
        shared = inputs.get(task_info(spec.task.kind).modality)
        if info.targets == "tasks":
            raise FtError(f"{key}kind={sub.kind}: a task of a multi-task run cannot nest tasks")
        if info.modality != shared.name:
            raise FtError(
                f"{key}kind={sub.kind}: the tasks of a multi-task run share one"
                f" {shared.name} encoder; train the {inputs.get(info.modality).noun} in a run of"
                " their own"
            )
        _check_data(sub.data, f"{key}data.")
        _check_task(sub, sub.data, key, f"{key}data.")
        _check_class_weights(sub, key)
        if sub.data.long_inputs == LongInputs.windows:
            raise FtError(
                f"{key}data.long_inputs=windows: a multi-task run reads each task's rows"
                " truncated; train long inputs in a run of their own"
            )
    if all(task_info(sub.kind).targets == "tokens" for sub in tasks.values()):
        raise FtError(
            "task=multitask: every task is mlm; add a task it helps (mlm is an auxiliary task"
            " here), or pretrain with task=mlm"
        )
    if spec.strategy.kind.value == "distill":
        raise FtError(
            "strategy=distill needs one teacher for one task; task=multitask runs without it"
        )


def _check_labels(task: TaskSettings, key: str) -> None:
    from ft_cli.errors import FtError

    labels = [str(label) for label in task.labels or []]
    for label in labels:
        if labels.count(label) > 1:
            raise FtError(
                f"{key}labels: '{label}' is listed {labels.count(label)} times; list each class"
                " once, in id order"
            )


def _check_class_weights(task: TaskSettings, key: str) -> None:
    from ft_cli.errors import FtError

    _check_labels(task, key)
    weights = task.class_weights
    if weights is None:
        return
    if not task_info(task.kind).class_weighted:
        weighted = [name for name, info in TASKS.items() if info.class_weighted]
        raise FtError(
            f"{key}class_weights is for {' and '.join(weighted)}, not"
            f" {key}kind={task.kind}; drop it"
        )
    if isinstance(weights, (str, int, float)):
        if weights != "balanced":
            raise FtError(
                f"{key}class_weights={weights}: use balanced, a list in label order"
                " ([1.0,3.0]) or {label: weight}"
            )
        return
    values = list(weights.values()) if hasattr(weights, "values") else list(weights)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FtError(f"{key}class_weights: {value!r} is not a number")
        if not math.isfinite(value) or value < 0:
            raise FtError(f"{key}class_weights: {value:g} must be a finite number, at least 0")
    if values and not any(values):
        raise FtError(f"{key}class_weights: every weight is 0; at least one must be positive")
    labels = [str(label) for label in task.labels or []]
    if labels and hasattr(weights, "keys"):
        unknown = [str(name) for name in weights if str(name) not in labels]
        if unknown:
            raise FtError(
                f"{key}class_weights: label '{unknown[0]}' is not in {key}labels"
                f" ({', '.join(labels)})"
            )
    elif labels and len(values) != len(labels):
        raise FtError(
            f"{key}class_weights lists {len(values)} weight(s) for the {len(labels)} classes of"
            f" {key}labels; give one per class in that order"
        )


def _check_evaluation(spec: RunSpec) -> None:
    from ft_cli.errors import FtError

    if any(has_validation(data) for data in run_data(spec).values()):
        return
    train = spec.train
    needs = {
        f"train.eval_every={train.eval_every}": train.eval_every is not None,
        "train.early_stopping.enabled=true": train.early_stopping.enabled,
    }
    for setting, given in needs.items():
        if given:
            raise FtError(
                f"{setting} needs validation data, and this run has none: set"
                " data.files.validation=FILE or data.validation_fraction (e.g. 0.1)"
            )


# Data formats whose rows hold one kind of target only (a task's TaskInfo.targets), and
# what to say to a task of another kind; {use}: the tasks that read it.
FORMAT_TARGETS = {
    DataFormat.text: (
        "tokens",
        "holds no labels; use {use} to pretrain on it, or a csv/json/parquet file with a label"
        " column",
    ),
    DataFormat.conll: ("tags", "holds word tags: use {use}"),
}


def _check_task(task: TaskSettings, data: DataConfig, key: str, data_key: str) -> None:
    from ft_cli.errors import FtError

    kind = "task=" if key == "task." else f"{key}kind="  # how the user picks the kind
    info = task_info(task.kind)

    def readers(targets: str) -> str:
        return " or ".join(kind + name for name, i in TASKS.items() if i.targets == targets)

    _check_inputs(task, data, kind, data_key)
    targets, why = FORMAT_TARGETS.get(data.format, (info.targets, ""))
    if info.targets != targets:
        use = readers(targets)
        raise FtError(f"{data_key}format={data.format.value} {why.format(use=use)}")
    if info.targets == "tags" and data.text_pair_column is not None:
        raise FtError(f"{kind}{task.kind} tags one text; set {data_key}text_pair_column=null")
    if data.long_inputs == LongInputs.windows and not info.windowed:
        readers_of_windows = " or ".join(kind + name for name, i in TASKS.items() if i.windowed)
        raise FtError(
            f"{data_key}long_inputs=windows: {kind}{task.kind} is not scored over windows"
            f" ({readers_of_windows} are); use {data_key}long_inputs=truncate"
        )
    if task.nsp and info.targets != "tokens":
        raise FtError(
            f"{key}nsp=true is masked-LM pretraining's: use {readers('tokens')}, or drop it"
        )
    if info.targets != "tokens":
        return
    if task.mask_replace_prob + task.random_replace_prob > 1:
        raise FtError(
            f"{key}mask_replace_prob + {key}random_replace_prob ="
            f" {task.mask_replace_prob + task.random_replace_prob:g} must be at most 1"
        )
    if task.packing == Packing.group_texts and data.max_length < 3:
        raise FtError(
            f"{data_key}max_length={data.max_length} is too short for {key}packing=group_texts"
            " (a block needs its special tokens and at least one token)"
        )


def _check_inputs(task: TaskSettings, data: DataConfig, kind: str, data_key: str) -> None:
    """The task's modality judges the data settings; a format that holds another modality's
    inputs names the tasks that read it."""
    from ft_cli import inputs, tasks
    from ft_cli.errors import FtError

    own = tasks.modality(task.kind)
    owner = next(
        (m for m in inputs.MODALITIES if data.format.value in inputs.get(m).own_formats), None
    )
    if owner is not None and owner != own.name:
        readers = [name for name, info in TASKS.items() if info.modality == owner]
        noun = inputs.get(owner).noun
        raise FtError(
            f"{data_key}format={data.format.value} holds {noun}: use {kind}{' or '.join(readers)}"
        )
    own.check_data(data, task.kind, data_key, kind)


def _check_model(model: ModelConfig) -> None:
    from ft_cli.errors import FtError

    sizes = {key: getattr(model, key) for key in SCRATCH_SIZES}
    given = [key for key, value in sizes.items() if value is not None]
    if given and model.from_run is not None:
        raise FtError(
            f"model.{given[0]} sets a size of a fresh model, but model.from_run loads trained"
            " weights; drop one of them"
        )
    if given and model.init != ModelInit.scratch:
        raise FtError(
            f"model.{given[0]} sets a size of a fresh model: add model.init=scratch, or drop it"
            " to keep the pretrained sizes"
        )
    hidden, heads = model.hidden_size, model.heads
    if hidden is not None and heads is not None and hidden % heads:
        raise FtError(
            f"model.hidden_size={model.hidden_size} must be a multiple of model.heads={model.heads}"
        )
