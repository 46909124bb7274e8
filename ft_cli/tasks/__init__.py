"""Tasks: what each task reads, predicts, optimises and reports, one module per task.

`TASKS` maps a task name (`task=NAME`, `task.kind`) to its module and metric
names, as plain data: the config schema reads it without importing torch, and
`get` imports a task's module only when a run needs it. A new task is a module
here with a `TASK` object (see `base.Task`), one line in `TASKS`, and its
`configs/task/NAME.yaml`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskInfo:
    """What a task is, as data the rest of the code reads (its behaviour: its module)."""

    module: str  # ft_cli.tasks.<module> (or a full dotted path), which defines TASK
    metrics: tuple[str, ...]  # its evaluation metrics; the first is monitored by default
    modality: str = "text"  # what a row's input is: a name in ft_cli.inputs.MODALITIES
    # What a row's label is: "classes", a "score", "tags" (one per word), "spans" (of its
    # text), "choices" (which of its own), "tokens" (the text itself: self-supervised),
    # a "transcript" (of its sound), a "text" to write (seq2seq), "masks" (a class per
    # pixel), "boxes" (objects found in an image) or "tasks" (several, each its own).
    targets: str = "classes"
    augmented: bool = True  # augment=... may change its training inputs
    class_weighted: bool = False  # task.class_weights weighs its loss
    distilled: bool = False  # strategy=distill matches a teacher's logits per row
    # The methods ft ensemble may combine its runs with (none: not ensembled).
    ensembles: tuple[str, ...] = ()
    windowed: bool = False  # data.long_inputs=windows: a long row read in windows, scored whole
    # ft serve: request fields named the task's way, read as the modality's ({alias: field}).
    request_aliases: tuple[tuple[str, str], ...] = ()
    # ft serve: whole numbers a request may add (each row gets them, its task checks them).
    request_numbers: tuple[str, ...] = ()


# ft ensemble's methods (ensembles.combine.METHODS), for tasks with one output per row.
EVERY_METHOD = ("mean", "vote", "weighted", "greedy", "stack")

TASKS: dict[str, TaskInfo] = {
    "classification": TaskInfo(
        "classification",
        ("accuracy", "f1", "mcc", "loss"),
        class_weighted=True,
        distilled=True,
        ensembles=EVERY_METHOD,
        windowed=True,
    ),
    "regression": TaskInfo(
        "regression",
        ("pearson", "spearman", "mse", "loss"),
        targets="score",
        distilled=True,
        ensembles=EVERY_METHOD,
        windowed=True,
    ),
    # Entity-level (IOB2 chunks, as seqeval counts them); accuracy is per word.
    "token_classification": TaskInfo(
        "token_classification",
        ("f1", "precision", "recall", "accuracy", "loss"),
        targets="tags",
        class_weighted=True,
        windowed=True,
    ),
    # Extractive: a span of the context per question, over windows of a long context.
    "question_answering": TaskInfo(
        "question_answering",
        ("f1", "exact_match", "loss"),
        targets="spans",
        augmented=False,
        distilled=True,
        # Averages of the members' start and end logits (a vote or a meta-model over
        # every token position would mean nothing).
        ensembles=("mean", "weighted", "greedy"),
        request_aliases=(("question", "text"), ("context", "text_pair")),
    ),
    # Which of a row's N choices is right (SWAG-style): a score per choice.
    "multiple_choice": TaskInfo(
        "multiple_choice", ("accuracy", "loss"), targets="choices", augmented=False
    ),
    # Images from folders or files, through transformers' image classifiers.
    "image_classification": TaskInfo(
        "image_classification", ("accuracy", "f1", "mcc", "loss"), "image", distilled=True
    ),
    # A class per pixel: images with masks of class ids.
    "semantic_segmentation": TaskInfo(
        "semantic_segmentation",
        ("mean_iou", "pixel_accuracy", "loss"),
        "image",
        targets="masks",
        # The members' class probabilities per pixel, averaged (weighted or not).
        ensembles=("mean", "weighted"),
    ),
    # Boxes and their classes: COCO JSON or tables of boxes beside images.
    "object_detection": TaskInfo(
        "object_detection", ("map", "map_50", "map_75", "loss"), "image", targets="boxes"
    ),
    # Clips from folders or files, through transformers' audio classifiers.
    "audio_classification": TaskInfo(
        "audio_classification",
        ("accuracy", "f1", "mcc", "loss"),
        "audio",
        distilled=True,
        ensembles=EVERY_METHOD,
    ),
    # Transcripts of clips: CTC over characters, greedy decoding.
    "speech_recognition": TaskInfo(
        "speech_recognition", ("wer", "cer", "loss"), "audio", targets="transcript"
    ),
    # GPT-style: plain text, prompt/response pairs or conversations; text generated.
    "causal_lm": TaskInfo(
        "causal_lm",
        ("perplexity", "loss", "exact_match", "token_f1", "rouge_l"),
        targets="tokens",
        augmented=False,
        request_aliases=(("prompt", "text"), ("prompts", "texts")),
        request_numbers=("max_new_tokens",),
    ),
    # T5 / BART style: a source text in, a target text out.
    "seq2seq": TaskInfo(
        "seq2seq",
        ("rouge_l", "rouge_1", "rouge_2", "bleu", "exact_match", "token_f1", "loss", "perplexity"),
        targets="text",
        augmented=False,
        request_aliases=(("prompt", "text"), ("prompts", "texts")),
        request_numbers=("max_new_tokens",),
    ),
    "mlm": TaskInfo(
        "masked_lm", ("loss", "perplexity", "accuracy"), targets="tokens", augmented=False
    ),
    # Several tasks on one encoder: `score` is the mean of each task's first metric
    # (mlm tasks aside); each task's own metrics come as NAME/METRIC.
    "multitask": TaskInfo("multitask", ("score",), targets="tasks", augmented=False),
}


def named(test: Callable[[TaskInfo], bool]) -> list[str]:
    """The names of the tasks whose info passes `test` (for messages that list them)."""
    return [name for name, info in TASKS.items() if test(info)]


def info(kind: str, key: str = "task.kind") -> TaskInfo:
    """The `TaskInfo` of a task name; an unknown name is the user's mistake at `key`."""
    found = TASKS.get(kind)
    if found is None:
        from ft_cli.errors import FtError, closest

        raise FtError(
            f"{key}: '{kind}' is not a task{closest(str(kind), TASKS)}; choose one of"
            f" {', '.join(TASKS)}"
        )
    return found


def get(kind: str) -> Any:
    """The task object (`base.Task`) for a task name."""
    module = info(kind).module
    return importlib.import_module(module if "." in module else f"ft_cli.tasks.{module}").TASK


def modality(kind: str) -> Any:
    """The input modality (`inputs.base.Modality`) a task name reads."""
    from ft_cli import inputs

    return inputs.get(info(kind).modality)
