"""Writing text with a trained model (`task.generation`), and scoring what it wrote.

Greedy decoding and beam search run prompts in batches. Sampling runs one prompt
at a time under a seed drawn from `generation.seed` and the prompt's own tokens,
so a prompt's text never depends on which other prompts shared its batch: ft eval,
ft predict and ft serve write the same text for it.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import torch

from ft_cli.config.schema import GenerationSettings


def generate(
    net: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    settings: GenerationSettings,
    limits: list[int] | None = None,
) -> list[str]:
    """The text generated after each prompt (token ids as the model reads them), at most
    `limits[i]` new tokens for prompt i (default: settings.max_new_tokens)."""
    limits = limits or [settings.max_new_tokens] * len(prompts)
    most = max(limits, default=0)
    if not prompts:
        return []
    if settings.sample:
        ids = []
        for prompt in prompts:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_seed(settings.seed, prompt))
                ids += _new_tokens(net, tokenizer, [prompt], settings, most)
    else:
        ids = _new_tokens(net, tokenizer, prompts, settings, most)
    return [
        tokenizer.decode(row[:limit], skip_special_tokens=True).strip()
        for row, limit in zip(ids, limits, strict=True)
    ]


def _seed(seed: int, prompt: list[int]) -> int:
    words = [seed, zlib.crc32(np.asarray(prompt, dtype=np.int64).tobytes())]
    state = np.random.SeedSequence(words).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def _new_tokens(
    net: Any, tokenizer: Any, prompts: list[list[int]], settings: GenerationSettings, most: int
) -> list[list[int]]:
    """The ids generated after each prompt (a decoder's prompts padded on the left, so
    that every prompt ends where generation starts)."""
    decoder_only = not getattr(net.config, "is_encoder_decoder", False)
    if decoder_only:
        room = _positions(net.config) - most
        prompts = [p[-room:] if room > 0 else p[-1:] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        where = slice(width - len(prompt), width) if decoder_only else slice(0, len(prompt))
        ids[row, where] = torch.tensor(prompt)
        mask[row, where] = 1
    device = next(net.parameters()).device
    options: dict[str, Any] = {"num_beams": settings.num_beams, "do_sample": settings.sample}
    if settings.sample:
        options.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    out = net.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=most,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        **options,
    )
    new = out[:, width:] if decoder_only else out[:, 1:]  # a decoder's start token first
    return [_until_end(row.tolist(), tokenizer.eos_token_id, pad) for row in new]


def _until_end(ids: list[int], eos: int | None, pad: int) -> list[int]:
    """A generated row up to its end-of-text (the rest is the batch's padding)."""
    for stop in (eos, pad):
        if stop is not None and stop in ids:
            ids = ids[: ids.index(stop)]
    return ids


def _positions(config: Any) -> int:
    """The longest sequence the model has positions for (rotary ones: a large number)."""
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) else 1 << 20


def overlap_scores(
    predicted: list[str], truth: list[str], keys: tuple[str, ...] = ("rougeL",)
) -> dict[str, float]:
    """Exact match and token F1 (SQuAD's normalisation), the ROUGE F-measures of `keys`
    (torchmetrics) and, asked with "bleu", corpus BLEU (sacreBLEU's 13a tokenization)."""
    from torchmetrics.functional.text import rouge_score, sacre_bleu_score

    from ft_cli.tasks import answers

    if not truth:
        return {}
    pairs = list(zip(predicted, truth, strict=True))
    scores = {
        "exact_match": sum(answers.exact_match(p, [t]) for p, t in pairs) / len(pairs),
        "token_f1": sum(answers.token_f1(p, [t]) for p, t in pairs) / len(pairs),
    }
    rouge = [k for k in keys if k.startswith("rouge")]
    if rouge:
        found = rouge_score(predicted, truth, rouge_keys=tuple(rouge))
        for key in rouge:
            scores[_name(key)] = float(found[f"{key}_fmeasure"])
    if "bleu" in keys:
        scores["bleu"] = float(sacre_bleu_score(predicted, [[t] for t in truth]))
    return scores


def _name(key: str) -> str:
    """torchmetrics' rougeL as ft's metric rouge_l (rouge1: rouge_1)."""
    return "rouge_" + key.removeprefix("rouge").lower()


class GeneratedScores:
    """What a generating task's evaluation accumulates: the loss over the target tokens,
    and (with an `objective` to generate with: .net, .tokenizer, .settings) each row's
    answer generated from its prompt, beside the reference; at most `limit` rows
    (None: all). Processes' parts merge into the single-process result."""

    def __init__(self, objective: Any, limit: int | None) -> None:
        self.objective, self.limit = objective, limit
        self.loss_sum, self.count = 0.0, 0
        self.predicted: list[str] = []
        self.truth: list[str] = []
        self.prompts: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "objective": None}  # the model stays in its process

    def add_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        from torch.nn import functional as F

        self.loss_sum += float(F.cross_entropy(logits.detach().float(), targets, reduction="sum"))
        self.count += len(targets)

    def room(self) -> int | None:
        """How many more rows to generate (None: every row); 0 when none."""
        if self.objective is None:
            return 0
        return None if self.limit is None else max(self.limit - len(self.truth), 0)

    def answer(self, prompts: list[list[int]], references: list[list[int]]) -> None:
        """Generate after each prompt (as many as there is room for) and keep the texts."""
        room = self.room()
        prompts, references = prompts[:room], references[:room]
        objective = self.objective
        decode = objective.tokenizer.decode
        self.predicted += generate(objective.net, objective.tokenizer, prompts, objective.settings)
        self.truth += [decode(a, skip_special_tokens=True).strip() for a in references]
        self.prompts += [decode(p, skip_special_tokens=True).strip() for p in prompts]

    def merge(self, others: list[Any]) -> Any:
        for other in others:
            self.loss_sum += other.loss_sum
            self.count += other.count
            self.predicted += other.predicted
            self.truth += other.truth
            self.prompts += other.prompts
        return self

    def scores(self, keys: tuple[str, ...]) -> dict[str, float]:
        """Loss, perplexity and the overlap scores of the generated answers."""
        loss = self.loss_sum / max(self.count, 1)
        found = {"perplexity": math.exp(min(loss, 80.0)), "loss": loss}
        return {**found, **overlap_scores(self.predicted, self.truth, keys)}
