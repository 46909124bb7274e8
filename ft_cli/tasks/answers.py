"""Scoring extracted answers as SQuAD does: exact match and token F1 of the normalised
answer, the best over a question's reference answers; unanswerable questions (SQuAD v2)
are right only when the prediction is empty.

Normalisation: lower case, punctuation removed, the articles a/an/the removed, runs of
white space made one space. Scores are shares in [0, 1], as ft's other metrics are
(SQuAD's own scripts print percentages).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize(text: str) -> str:
    """The answer as SQuAD compares it."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: list[str]) -> float:
    """1.0 if the normalised prediction equals a normalised reference (or both are empty
    for an unanswerable question), else 0.0."""
    truths = references or [""]
    return float(any(normalize(prediction) == normalize(truth) for truth in truths))


def token_f1(prediction: str, references: list[str]) -> float:
    """The best harmonic mean of token precision and recall over the references."""
    return max(_f1(prediction, truth) for truth in references or [""])


def _f1(prediction: str, truth: str) -> float:
    guessed, expected = normalize(prediction).split(), normalize(truth).split()
    if not guessed or not expected:  # an empty answer is right only against an empty one
        return float(guessed == expected)
    common = sum((Counter(guessed) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(guessed), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@dataclass
class AnswerScores:
    """Per-question scores, summed as questions come; `compute` gives the shares, and for
    data with unanswerable questions the answerable (has_ans) and unanswerable (no_ans)
    parts too."""

    rows: list[tuple[bool, float, float]] = field(default_factory=list)

    def add(self, prediction: str, references: list[str]) -> None:
        answerable = any(truth.strip() for truth in references)
        self.rows.append(
            (answerable, exact_match(prediction, references), token_f1(prediction, references))
        )

    def compute(self) -> dict[str, float]:
        if not self.rows:
            return {}
        out = _shares(self.rows, "")
        answerable = [row for row in self.rows if row[0]]
        if len(answerable) < len(self.rows):  # SQuAD v2 data: the two parts as well
            out.update(_shares(answerable, "has_ans_"))
            out.update(_shares([row for row in self.rows if not row[0]], "no_ans_"))
        return out


def _shares(rows: list[tuple[bool, float, float]], prefix: str) -> dict[str, float]:
    if not rows:
        return {}
    return {
        f"{prefix}exact_match": sum(row[1] for row in rows) / len(rows),
        f"{prefix}f1": sum(row[2] for row in rows) / len(rows),
    }


def best_threshold(diffs: list[float], texts: list[str], references: list[list[str]]) -> float:
    """The no-answer threshold with the best total F1 on these questions, as SQuAD v2's
    evaluation tunes it: a question is left empty when its no-answer score beats its best
    span's by more than the threshold (`diffs`: no-answer score less best span score)."""
    if not diffs:
        return 0.0
    answered = [token_f1(text, truth) for text, truth in zip(texts, references, strict=True)]
    empty = [token_f1("", truth) for truth in references]
    order = sorted(range(len(diffs)), key=diffs.__getitem__, reverse=True)
    total = best_total = sum(answered)
    best = diffs[order[0]]  # nothing left empty: no diff is above the largest
    for rank, question in enumerate(order):
        total += empty[question] - answered[question]
        below = diffs[order[rank + 1]] if rank + 1 < len(order) else diffs[question] - 1.0
        if total > best_total and below < diffs[question]:
            best_total, best = total, below
    return best


def score_answers(
    texts: list[str], diffs: list[float], references: list[list[str]], threshold: float | None
) -> dict[str, float]:
    """Exact match and F1 of each question's best span, or of no answer where its diff (no-
    answer score less the span's) is above `threshold`; None: tuned on these questions when
    some have no answer (reported as null_threshold), else every question is answered."""
    tuned = threshold is None and any(not any(t.strip() for t in r) for r in references)
    if tuned:
        threshold = best_threshold(diffs, texts, references)
    scores = AnswerScores()
    for text, diff, truth in zip(texts, diffs, references, strict=True):
        scores.add("" if threshold is not None and diff > threshold else text, truth)
    out = scores.compute()
    if tuned:
        out["null_threshold"] = float(threshold)  # type: ignore[arg-type]
    return out
