"""How an ensemble turns its members' outputs into one: the methods and their fitting.

Outputs are tensors [members, rows, K]: class probabilities (K classes) or a
regression score (K = 1). Every method gives [rows, K] of the same kind:

- `mean`: the members' average;
- `vote`: classification: the majority class, ties broken by the mean
  probability, as probabilities (votes + mean probability) / (members + 1);
  regression: the median score;
- `weighted`: a weighted average, weights from each member's validation
  metric (or given);
- `greedy`: forward selection with replacement (Caruana et al., 2004) on the
  validation split: start from the best member, add whichever member most
  improves the averaged ensemble's metric, keep the best prefix;
- `stack`: a logistic-regression (classification, on the members' log
  probabilities) or linear (regression) meta-model fit on the validation
  split; its validation score comes from k-fold cross-validation, so it is
  never scored on rows it was fit on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

METHODS = ("mean", "vote", "weighted", "greedy", "stack")
FOLDS = 5
GREEDY_ROUNDS = 25
RIDGE = 1e-2  # L2 strength of the meta-model (per row): members' outputs are collinear

Score = Callable[[torch.Tensor], float]  # combined outputs [rows, K] -> metric, higher is better


@dataclass
class Combiner:
    """A fitted combination: what `ensemble.json` stores and `ft predict` applies."""

    method: str
    regression: bool
    weights: list[float] | None = None  # mean, weighted, greedy: one per member
    coef: list[list[float]] | None = None  # stack: [K, members * K]
    bias: list[float] | None = None  # stack: [K]

    def __call__(self, outputs: torch.Tensor) -> torch.Tensor:
        outputs = outputs.double()
        if self.method == "vote":
            return vote(outputs, self.regression)
        if self.method == "stack":
            assert self.coef is not None and self.bias is not None
            meta = torch.tensor(self.coef, dtype=torch.double), torch.tensor(self.bias).double()
            return stacked(outputs, meta, self.regression)
        weights = self.weights or [1.0] * len(outputs)
        return average(outputs, torch.tensor(weights, dtype=torch.double))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "weights": self.weights,
            "coef": self.coef,
            "bias": self.bias,
        }


def average(outputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    weights = weights / weights.sum()
    return torch.einsum("m,m...->...", weights, outputs)  # any shape of output per row


def vote(outputs: torch.Tensor, regression: bool) -> torch.Tensor:
    if regression:
        # The median of an even count is the mean of the two middle scores.
        ordered = outputs.sort(dim=0).values
        count = len(outputs)
        return (ordered[(count - 1) // 2] + ordered[count // 2]) / 2
    votes = F.one_hot(outputs.argmax(-1), outputs.shape[-1]).sum(0).double()
    # A mean probability is below 1, one vote: it decides ties and nothing else.
    return (votes + outputs.mean(0)) / (len(outputs) + 1)


def features(outputs: torch.Tensor, regression: bool) -> torch.Tensor:
    """The meta-model's inputs: each member's outputs side by side, [rows, members * K]."""
    values = outputs if regression else outputs.clamp_min(1e-12).log()
    return values.permute(1, 0, 2).reshape(outputs.shape[1], -1)


def stacked(
    outputs: torch.Tensor, meta: tuple[torch.Tensor, torch.Tensor], regression: bool
) -> torch.Tensor:
    coef, bias = meta
    scores = features(outputs, regression) @ coef.T + bias
    return scores if regression else scores.softmax(-1)


def fit_meta(
    outputs: torch.Tensor, targets: torch.Tensor, regression: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(coef [K, F], bias [K]): ridge regression, or L2-regularised multinomial logistic."""
    x = features(outputs.double(), regression)
    rows, width = x.shape
    if regression:
        design = torch.cat([x, torch.ones(rows, 1, dtype=x.dtype)], dim=1)
        penalty = torch.eye(width + 1, dtype=x.dtype) * RIDGE * rows
        penalty[-1, -1] = 0  # the intercept is not shrunk
        solution = torch.linalg.solve(design.T @ design + penalty, design.T @ targets.double())
        return solution[:-1].unsqueeze(0), solution[-1:]
    classes = outputs.shape[-1]
    coef = torch.zeros(classes, width, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(classes, dtype=x.dtype, requires_grad=True)
    solver = torch.optim.LBFGS([coef, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        solver.zero_grad()
        loss = F.cross_entropy(x @ coef.T + bias, targets) + RIDGE / 2 * coef.pow(2).sum()
        loss.backward()
        return loss

    solver.step(closure)
    return coef.detach(), bias.detach()


def cross_validated(
    outputs: torch.Tensor, targets: torch.Tensor, regression: bool, seed: int
) -> torch.Tensor:
    """Out-of-fold meta-model outputs: each row predicted by a model fit without it."""
    rows = outputs.shape[1]
    folds = min(FOLDS, rows)
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    result = torch.zeros(rows, outputs.shape[-1], dtype=torch.double)
    for fold in range(folds):
        held = order[fold::folds]
        kept = torch.ones(rows, dtype=torch.bool)
        kept[held] = False
        meta = fit_meta(outputs[:, kept], targets[kept], regression)
        result[held] = stacked(outputs[:, held].double(), meta, regression)
    return result


def greedy_weights(outputs: torch.Tensor, score: Score, rounds: int = GREEDY_ROUNDS) -> list[float]:
    """Selection counts of the best prefix of forward selection with replacement."""
    members = len(outputs)
    singles = [score(outputs[m].double()) for m in range(members)]
    first = max(range(members), key=lambda m: (singles[m], -m))
    counts = [0] * members
    counts[first] = 1
    total = outputs[first].double().clone()
    best_score, best_counts = singles[first], list(counts)
    for size in range(2, rounds + 1):
        trials = [score((total + outputs[m]) / size) for m in range(members)]
        pick = max(range(members), key=lambda m: (trials[m], -m))
        total += outputs[pick]
        counts[pick] += 1
        if trials[pick] > best_score:  # strictly better: a tie keeps the smaller ensemble
            best_score, best_counts = trials[pick], list(counts)
    return [float(c) for c in best_counts]


def fit(
    method: str,
    validation: tuple[torch.Tensor, torch.Tensor] | None,
    score: Score,
    regression: bool,
    weights: list[float] | None = None,
) -> Combiner:
    """The combination `method` fit on validation (outputs [members, rows, K], targets).

    `score`: the metric of combined validation outputs, higher is better;
    `weights`: weighted's, one per member.
    """
    if method in ("mean", "vote"):
        return Combiner(method, regression)
    if method == "weighted":
        assert weights is not None
        return Combiner(method, regression, weights=[float(w) for w in weights])
    assert validation is not None
    outputs, targets = validation
    if method == "greedy":
        return Combiner(method, regression, weights=greedy_weights(outputs, score))
    coef, bias = fit_meta(outputs, targets, regression)
    return Combiner(method, regression, coef=coef.tolist(), bias=bias.tolist())


def outputs_of(combiner: Combiner, task: Any, members: list[list[torch.Tensor]]) -> list:
    """Each row's combined logits, from every member's logits per row (or per window:
    the members' windows are the same), as its task combines them."""
    lengths = [len(row) for row in members[0]]
    width = max(lengths)
    values = torch.stack(
        [
            torch.stack(
                [task.ensemble_values(row, n, width) for row, n in zip(rows, lengths, strict=True)]
            )
            for rows in members
        ]
    )
    merged = task.ensemble_logits(combiner(values).float())
    # A window's logits per token stop at its length again (a row's one output: as is).
    return [row[:n] if row.dim() > 1 else row for row, n in zip(merged, lengths, strict=True)]
