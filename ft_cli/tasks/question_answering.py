"""Extractive question answering: the answer is a span of the context, found from a start
and an end logit per token (`AutoModelForQuestionAnswering`).

Columns: the question (data.text_column), the context (data.text_pair_column) and the
answers (data.label_column): SQuAD's {"text": [...], "answer_start": [...]} per row, or,
with data.answer_start_column set, the answer's text in data.label_column and its first
character there (an empty answer: the question has none in its context). A long context
is read in overlapping windows (`tasks.windows`); answers are scored as SQuAD scores them
(`tasks.answers`) over questions, never windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ft_cli.config.schema import DataConfig, TaskConfig, window_stride
from ft_cli.data.batching import Collate, Collator
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.models import outputs
from ft_cli.tasks import answers, windows
from ft_cli.tasks.base import Task
from ft_cli.tasks.objective import Batch, Objective

Span = windows.Span
REPORTED_WORST = 20  # ft report's table of the worst-answered questions


@dataclass
class QuestionSplit(EncodedSplit):
    """A split's windows (the rows batches are made of; labels: [start, end, window]) and
    its questions (contexts and reference answers, by question)."""

    windows: windows.Windows = field(default_factory=windows.Windows)
    contexts: list[str] = field(default_factory=list)
    references: list[list[str]] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)


class QuestionAnswering(Task):
    name = "question_answering"
    named_labels = False
    pipeline_tag = "question-answering"
    report_tables = True  # the worst-answered questions

    def input_columns(self, cfg: DataConfig) -> dict[str, str]:
        if cfg.text_pair_column is None:
            raise FtError(
                "data.text_pair_column: task=question_answering reads each question's context"
                " from it; set it to the context column (e.g. data.text_pair_column=context)"
            )
        columns = {
            "data.text_column": cfg.text_column,
            "data.text_pair_column": cfg.text_pair_column,
        }
        if cfg.answer_start_column is not None:
            columns["data.answer_start_column"] = cfg.answer_start_column
        return columns

    def check_column(self, first: Any, key: str, column: str, split: str, source: str) -> None:
        if key != "data.label_column":
            super().check_column(first, key, column, split, source)
        elif not isinstance(first, (dict, str)) and first is not None:
            raise FtError(
                f"data.label_column: column '{column}' of the {split} data ({source}) holds a"
                f" {type(first).__name__} per row; task=question_answering needs SQuAD's"
                ' {"text": [...], "answer_start": [...]}, or the answer text with'
                " data.answer_start_column naming its first character's column"
            )

    def encode(
        self,
        cfg: DataConfig,
        task: TaskConfig,
        tokenizer: Any,
        dataset: Any,
        labels: list[str] | None,
        split: str,
    ) -> QuestionSplit:
        questions = [str(q or "") for q in dataset[cfg.text_column]]
        contexts = [str(c or "") for c in dataset[cfg.text_pair_column]]
        spans: list[Span | None] | None = None
        references: list[list[str]] = [[] for _ in questions]
        if cfg.label_column in dataset.column_names:
            spans, references = gold_answers(cfg, dataset, contexts, split)
        return question_split(tokenizer, questions, contexts, cfg, spans, references)

    def head(self, labels: list[str] | None) -> tuple[dict[str, Any], str]:
        return {}, "AutoModelForQuestionAnswering"

    def report_table(self, ready: Any) -> tuple[str, list[str], list[list[Any]]] | None:
        scores = AnswerMetrics(ready.loader.dataset, ready.spec.task)
        ready.forward.eval()
        with torch.no_grad(), ready.hw.autocast():
            for batch in ready.loader:
                scores.update(*ready.forward({k: v.to(ready.hw.device) for k, v in batch.items()}))
        header = ["question", "answer given", "reference answers", "F1", "exact match"]
        return "worst-answered questions, validation", header, scores.worst(REPORTED_WORST)

    def objective(
        self,
        net: nn.Module,
        task: TaskConfig,
        tokenizer: Any,
        labels: list[str] | None,
        compile_model: bool,
        label_smoothing: float,
    ) -> Objective:
        return SpanObjective(net, task, tokenizer.pad_token_id or 0, compile_model)

    def predict_inputs(
        self,
        read: Any,
        tokenizer: Any,
        cfg: DataConfig,
        labels: list[str] | None,
        task: TaskConfig | None = None,
    ) -> tuple[EncodedSplit, Any, Any]:
        questions = read("data.text_column", cfg.text_column)
        contexts = read("data.text_pair_column", cfg.text_pair_column or "context")
        split = question_split(tokenizer, questions, contexts, cfg, None, [[]] * len(questions))
        offsets = split.windows.offsets
        decoding = Decoding.of(task)
        extra = [(contexts[q], offsets[w], decoding) for w, q in enumerate(split.windows.question)]
        return split, Collator(split, tokenizer.pad_token_id or 0, regression=False), extra

    def prediction(
        self, logits: Any, labels: list[str] | None, extra: Any, lists: bool
    ) -> dict[str, Any]:
        """The best span over a question's windows (`logits`: [tokens, 2] a window; `extra`:
        (None, (context, offsets, decoding)) a window), or no answer where the no-answer
        score beats it by more than task.null_threshold (when set)."""
        parts = [
            (row[:, 0].tolist(), row[:, 1].tolist(), spans)
            for row, (_, (_, spans, _)) in zip(logits, extra, strict=True)
        ]
        context, _, decoding = extra[0][1]
        found = windows.best_answer(context, parts, decoding.n_best, decoding.max_answer_length)
        margin = windows.null_score(parts) - found.score
        if decoding.null_threshold is not None and margin > decoding.null_threshold:
            found = windows.Answer("", found.score, -1, -1)
        return {
            "answer": found.text,
            "answer_score": found.score,
            "answer_start": found.start,
            "answer_end": found.end,
            "no_answer_margin": margin,
        }

    def teacher_width(self, labels: list[str] | None) -> int:
        return 2  # a start and an end logit per token

    def soft_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """The KL of the teacher's softened start distribution over a window's positions
        from the student's, and the same of the end, averaged (times T squared). A batch's
        padding is the student's PADDED_LOGIT positions: the teacher's are set alike."""
        padding = student <= PADDED_LOGIT
        teacher = teacher.masked_fill(padding, PADDED_LOGIT)
        t = temperature
        soft = [
            F.kl_div(
                F.log_softmax(student[..., end] / t, dim=-1),
                F.log_softmax(teacher[..., end] / t, dim=-1),
                log_target=True,
                reduction="batchmean",
            )
            for end in (0, 1)
        ]
        return (soft[0] + soft[1]) / 2 * t * t

    def ensemble_values(self, logits: torch.Tensor, length: int, width: int) -> torch.Tensor:
        """A window's start and end logits, its own tokens only, padded to `width`: [2 x
        width]. The padding is never decoded, and far below any logit it adds nothing to
        the loss's softmax either."""
        own = logits[:length].float()
        return F.pad(own, (0, 0, 0, width - length), value=PADDED_LOGIT).flatten()

    def ensemble_logits(self, values: torch.Tensor) -> torch.Tensor:
        return values.reshape(len(values), -1, 2)


@dataclass(frozen=True)
class Decoding:
    """How ft predict decodes a question's answer (the run's task settings)."""

    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float | None = None

    @classmethod
    def of(cls, task: TaskConfig | None) -> Decoding:
        if task is None:
            return cls()
        return cls(task.n_best, task.max_answer_length, task.null_threshold)


def question_split(
    tokenizer: Any,
    questions: list[str],
    contexts: list[str],
    cfg: DataConfig,
    spans: list[Span | None] | None,
    references: list[list[str]],
) -> QuestionSplit:
    stride = window_stride(cfg)
    made = windows.make_windows(tokenizer, questions, contexts, cfg.max_length, stride, spans)
    labels = [[s, e, w] for w, (s, e) in enumerate(zip(made.starts, made.ends, strict=True))]
    return QuestionSplit(
        made.input_ids,
        made.token_type_ids,
        labels,  # type: ignore[arg-type]
        windows=made,
        contexts=contexts,
        references=references,
        rows=made.question,
        questions=questions,
    )


def gold_answers(
    cfg: DataConfig, dataset: Any, contexts: list[str], split: str
) -> tuple[list[Span | None], list[list[str]]]:
    """(each row's first answer as context characters or None, every answer's text)."""
    values = dataset[cfg.label_column]
    starts = dataset[cfg.answer_start_column] if cfg.answer_start_column else None
    spans: list[Span | None] = []
    references: list[list[str]] = []
    for row, value in enumerate(values):
        if starts is not None:
            text = "" if value is None else str(value)
            texts, firsts = ([text], [starts[row]]) if text else ([], [])
        elif isinstance(value, dict):
            texts = [str(t) for t in value.get("text") or []]
            firsts = list(value.get("answer_start") or [])
        else:
            raise FtError(
                f"data.label_column: row {row} of the {split} data holds {str(value)[:40]!r},"
                ' not {"text": [...], "answer_start": [...]}; for an answer-text column set'
                " data.answer_start_column"
            )
        references.append(texts)
        if not texts:
            spans.append(None)
            continue
        key = "data.answer_start_column" if starts is not None else "data.label_column"
        first = firsts[0] if firsts else None
        spans.append(
            _located(texts[0], first, contexts[row], f"row {row} of the {split} data", key)
        )
    return spans, references


def _located(text: str, first: Any, context: str, where: str, key: str) -> Span:
    """The answer's characters; one line when the context does not hold it there (`key`:
    the setting that names where its first character comes from)."""
    try:
        begin = int(first)
    except (TypeError, ValueError):
        begin = -1
    if begin >= 0 and context[begin : begin + len(text)] == text:
        return begin, begin + len(text)
    found = context.find(text)
    if found < 0:
        raise FtError(
            f"data.label_column: {where}: its context does not contain its answer"
            f" {text[:60]!r}; fix the answer or the context"
        )
    raise FtError(
        f"{key}: {where}: the answer {text[:60]!r} is not at its answer_start {first}"
        f" (the context has it at {found}); fix answer_start"
    )


PADDED_LOGIT = -1e4  # a position past a window's end, as ensembles line windows up


class SpanObjective(Objective):
    """A start and an end position per window; metrics over the questions."""

    smaller_inputs = "lower data.max_length (longer contexts then take more windows)"

    def __init__(self, net: nn.Module, task: TaskConfig, pad_id: int, compile_model: bool) -> None:
        super().__init__(net, task.kind, 0, pad_id, compile_model)
        self.settings = task

    def _collator(self, split: EncodedSplit, windows: bool) -> Collate:
        # A window's index travels in its labels ([start, end, window]) already.
        return Collator(split, self.pad_id, regression=False, multiple=self.pad_multiple)

    def outputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [rows, tokens, 2], targets [rows, 3]: start, end, window index).

        Positions past a window's end (a batch's padding) get PADDED_LOGIT: no answer
        lies there, and the loss is then the same whatever a window is batched with."""
        labels = batch.pop("labels")
        logits = outputs.logits_of(self.forward(**batch))
        padding = batch["attention_mask"] == 0
        return logits.masked_fill(padding[..., None], PADDED_LOGIT), labels

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return span_loss(logits, targets)

    def new_metrics(self, split: EncodedSplit | None = None) -> AnswerMetrics:
        assert isinstance(split, QuestionSplit), "question answering scores a QuestionSplit"
        return AnswerMetrics(split, self.settings)


def span_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean of the start and the end position's cross-entropy (in fp32)."""
    logits = logits.float()
    return (
        F.cross_entropy(logits[..., 0], targets[:, 0])
        + F.cross_entropy(logits[..., 1], targets[:, 1])
    ) / 2


class AnswerMetrics:
    """Each window's logits as evaluation goes; `compute` decodes each question's answer
    over its windows and scores it. Windows evaluated by several processes merge."""

    def __init__(self, split: QuestionSplit, task: TaskConfig) -> None:
        self.split, self.task = split, task
        self.logits: dict[int, torch.Tensor] = {}  # window index -> [its tokens, 2]
        self.loss_sum, self.count = 0.0, 0

    def __getstate__(self) -> dict[str, Any]:
        # Gathered from other processes: every one holds the same split already.
        return {**self.__dict__, "split": None}

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits, targets = logits.detach().float().cpu(), targets.cpu()
        self.loss_sum += float(span_loss(logits, targets)) * len(targets)
        self.count += len(targets)
        for row, window in zip(logits, targets[:, 2].tolist(), strict=True):
            self.logits[window] = row[: len(self.split.input_ids[window])]

    def merge(self, others: list[AnswerMetrics]) -> AnswerMetrics:
        for other in others:
            self.logits.update(other.logits)
            self.loss_sum += other.loss_sum
            self.count += other.count
        return self

    def answered(self) -> list[tuple[int, windows.Answer, float]]:
        """(question, its best answer, no-answer score less the answer's) per question."""
        split = self.split
        by_question: dict[int, list[tuple[list[float], list[float], list[Span | None]]]] = {}
        for window, row in sorted(self.logits.items()):
            question = split.windows.question[window]
            entry = (row[:, 0].tolist(), row[:, 1].tolist(), split.windows.offsets[window])
            by_question.setdefault(question, []).append(entry)
        found = []
        for question, parts in sorted(by_question.items()):
            answer = windows.best_answer(
                split.contexts[question], parts, self.task.n_best, self.task.max_answer_length
            )
            found.append((question, answer, windows.null_score(parts) - answer.score))
        return found

    def compute(self) -> dict[str, float]:
        found = self.answered()
        references = [self.split.references[question] for question, _, _ in found]
        diffs = [diff for _, _, diff in found]
        texts = [answer.text for _, answer, _ in found]
        values = answers.score_answers(texts, diffs, references, self.task.null_threshold)
        values["loss"] = self.loss_sum / max(1, self.count)
        return values

    def worst(self, count: int) -> list[list[Any]]:
        """The `count` worst-answered questions (lowest F1, the most confident first):
        question, answer given, reference answers, F1, exact match."""
        rows = []
        for question, answer, _ in self.answered():
            truth = self.split.references[question]
            f1 = answers.token_f1(answer.text, truth)
            rows.append((f1, -answer.score, question, answer.text, truth))
        rows.sort(key=lambda row: (row[0], row[1]))
        return [
            [
                self.split.questions[question],
                text,
                " | ".join(truth) or "(no answer)",
                f1,
                answers.exact_match(text, truth),
            ]
            for f1, _, question, text, truth in rows[:count]
        ]


TASK = QuestionAnswering()
