"""Question-context windows for extractive question answering, and the best answer
over them.

A context longer than the window (`data.max_length` tokens with its question) is cut
into windows that overlap by `data.stride` tokens. Each window knows its question, the
character span of each of its context tokens (from the fast tokenizer's offsets), and,
when the question's answer lies wholly inside it, the answer's first and last token; a
window without the answer points both at position 0, the [CLS] token ("no answer here").
Decoding takes the best start and end over every window of a question and maps them back
to the exact characters of the context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ft_cli.errors import FtError

Span = tuple[int, int]  # [start, end) characters of the context


@dataclass
class Windows:
    """The windows of a split: model inputs, what each window is, its targets."""

    input_ids: list[list[int]] = field(default_factory=list)
    token_type_ids: list[list[int]] | None = None
    question: list[int] = field(default_factory=list)  # the row each window comes from
    # Per token: its characters in the context, or None (question, special tokens).
    offsets: list[list[Span | None]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # the answer's first token, or 0
    ends: list[int] = field(default_factory=list)  # its last token, or 0


def make_windows(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    max_length: int,
    stride: int,
    answers: Sequence[Span | None] | None = None,
) -> Windows:
    """Every question's windows; `answers`: each row's answer characters (None: none)."""
    _check_room(tokenizer, questions, max_length, stride)
    encoded = tokenizer(
        list(questions),
        list(contexts),
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    out = Windows(token_type_ids=[] if "token_type_ids" in encoded else None)
    for index, ids in enumerate(encoded["input_ids"]):
        row = encoded["overflow_to_sample_mapping"][index]
        kinds = encoded.sequence_ids(index)
        spans = [
            tuple(span) if kind == 1 else None
            for span, kind in zip(encoded["offset_mapping"][index], kinds, strict=True)
        ]
        start, end = answer_tokens(spans, answers[row] if answers is not None else None)
        out.input_ids.append(ids)
        if out.token_type_ids is not None:
            out.token_type_ids.append(encoded["token_type_ids"][index])
        out.question.append(row)
        out.offsets.append(spans)  # type: ignore[arg-type]
        out.starts.append(start)
        out.ends.append(end)
    return out


def _check_room(tokenizer: Any, questions: Sequence[str], max_length: int, stride: int) -> None:
    """The tokenizer panics (not an exception) when a window has no room left for the
    context beyond the overlap: refuse such settings in one line first."""
    check_room(tokenizer, questions, max_length, stride, "question", "context")


def check_room(
    tokenizer: Any,
    firsts: Sequence[str] | None,
    max_length: int,
    stride: int,
    first: str = "first text",
    second: str = "text",
) -> None:
    """Refuse windows with no room for `second` beyond the overlap: each window holds the
    whole of the `firsts` (when there are any) and a slice of `second`."""
    special = tokenizer.num_special_tokens_to_add(pair=firsts is not None)
    lengths = []
    if firsts is not None:
        encoded = tokenizer(list(firsts), add_special_tokens=False)["input_ids"]
        lengths = [len(ids) for ids in encoded]
    longest = max(lengths, default=0)
    room = max_length - special - longest
    if room < 1:
        row = lengths.index(longest)
        raise FtError(
            f"data.max_length={max_length}: {first} {row} is {longest} tokens, longer than"
            f" the window; raise data.max_length or shorten the {first}"
        )
    if stride >= room:
        beside = f" less the longest {first}, {longest} tokens," if firsts is not None else ""
        raise FtError(
            f"data.stride={stride} must be smaller than the {second}'s room in a window"
            f" ({room} tokens: data.max_length={max_length}{beside} and {special} special"
            " tokens); lower data.stride"
        )


def answer_tokens(spans: list[Span | None], answer: Span | None) -> tuple[int, int]:
    """(first, last) token of `answer` in a window, or (0, 0) if it is not wholly inside."""
    inside = [i for i, span in enumerate(spans) if span is not None]
    if answer is None or not inside:
        return 0, 0
    first, last = inside[0], inside[-1]
    begin, end = answer
    if spans[first][0] > begin or spans[last][1] < end:  # type: ignore[index]
        return 0, 0
    start = next(i for i in inside if spans[i][1] > begin)  # type: ignore[index]
    stop = next(i for i in reversed(inside) if spans[i][0] < end)  # type: ignore[index]
    return start, stop


@dataclass(frozen=True)
class Answer:
    """A question's decoded answer: the context's characters [start, end)."""

    text: str
    score: float  # start logit + end logit of the best span
    start: int
    end: int


def best_answer(
    context: str,
    windows: Sequence[tuple[Sequence[float], Sequence[float], list[Span | None]]],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> Answer:
    """The best span over all of one question's windows ((start logits, end logits,
    offsets) each): the `n_best` starts and ends of each window, spans of at most
    `max_answer_length` tokens inside the context; an empty answer if there is none."""
    best: Answer | None = None
    for start_logits, end_logits, spans in windows:
        starts = _top(start_logits, spans, n_best)
        ends = _top(end_logits, spans, n_best)
        for first in starts:
            for last in ends:
                if last < first or last - first + 1 > max_answer_length:
                    continue
                score = float(start_logits[first]) + float(end_logits[last])
                if best is None or score > best.score:
                    begin, end = spans[first][0], spans[last][1]  # type: ignore[index]
                    best = Answer(context[begin:end], score, begin, end)
    return best if best is not None else Answer("", float("-inf"), 0, 0)


def null_score(windows: Sequence[tuple[Sequence[float], Sequence[float], Any]]) -> float:
    """The score of "no answer" (both ends at [CLS]), its lowest over the windows."""
    return min(float(start[0]) + float(end[0]) for start, end, _ in windows)


def _top(logits: Sequence[float], spans: list[Span | None], count: int) -> list[int]:
    """The positions of the `count` highest logits among the context's tokens."""
    inside = [i for i, span in enumerate(spans) if span is not None]
    return sorted(inside, key=lambda i: float(logits[i]), reverse=True)[:count]
