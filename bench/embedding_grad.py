"""The word-embedding gradient in last step's memory against a fresh one, side by side.

The packaged MiniLM (30,522 x 384 word embeddings, a 47 MB gradient) with ft's fast
paths, trained on random token ids: one forward, backward and `zero_grad` a step, the
two models alternating step by step (same weights, same batch), medians over the
repeats. `fresh` is the same model with its embeddings left as they were, so the rest of
ft's step is the same on both sides. Two cases: the NER demo's batches (a tagging head,
16 short rows, packed) and ft's length-grouped MRPC batches (a classification head, 32
rows of 44-48 tokens). Prints a Markdown table: ms per step each way, the ratio, and
whether the two models' gradients were equal.

    python bench/embedding_grad.py                      # fp32, 20 steps a case
    python bench/embedding_grad.py --precision bf16 --steps 30
"""

from __future__ import annotations

import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unpadded import _batch, _step, arguments, minilm, setting

# (head, rows, shortest, longest) per case.
CASES = [("token", 16, 8, 24), ("sequence", 32, 44, 48)]


def main() -> None:
    args = arguments(__doc__, batch_size=0)
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from ft_cli.hardware import embedding_grad, kernels

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    print(setting(args).replace("batch 0; ", ""))
    print("| batch | reused ms | fresh ms | fresh / reused | gradients equal |")
    print("|---|---:|---:|---:|---|")
    for head, rows, low, high in CASES:
        token = head == "token"
        auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
        reused = minilm(auto, args.model, labels=2)
        fresh = copy.deepcopy(reused)
        assert kernels.speed_up(reused)["embedding_grad"] == 1
        takes_over = embedding_grad.takes_over
        embedding_grad.takes_over = lambda module: False  # left as it was, all else alike
        assert kernels.speed_up(fresh)["embedding_grad"] == 0
        embedding_grad.takes_over = takes_over
        batch = _batch(rows, low, high, seed=low)
        batch["labels"] = batch["labels"].clamp(max=1)
        if head == "sequence":
            batch["labels"] = batch["labels"][:, 0].clamp(min=0)
        times: dict[str, list[float]] = {"reused": [], "fresh": []}
        for _ in range(args.steps + 2):  # two warm-ups a side
            for side, net in (("reused", reused), ("fresh", fresh)):
                times[side].append(_step(net.train(), batch, dtype))
        ms = {side: statistics.median(t[2:]) * 1000 for side, t in times.items()}
        print(
            f"| {head} classification, {rows} rows of {low}-{high} tokens | {ms['reused']:.1f} | "
            f"{ms['fresh']:.1f} | **{ms['fresh'] / ms['reused']:.2f}x** | "
            f"{_same_gradients(reused, fresh, batch, dtype)} |"
        )


def _same_gradients(a: torch.nn.Module, b: torch.nn.Module, batch: dict, dtype) -> bool:
    """Whether one step with dropout off gives both models the same embedding gradient
    (the second step of each: the first has no last gradient to reuse)."""
    grads = []
    for net in (a, b):
        for _ in range(2):
            net.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                net.eval()(**batch).loss.backward()
        grads.append(net.get_input_embeddings().weight.grad)
    return bool(torch.equal(*grads))


if __name__ == "__main__":
    main()
