"""The last encoder layer on the first token only against the whole layer, side by side.

The packaged MiniLM with a sequence-classification head (as `task=classification`
builds it) and ft's fast paths, trained on random token ids in batches whose rows have
the lengths each case names: one forward and backward a step, the two models alternating
step by step (same weights, same batch), medians over the repeats. `whole` is the same
model with the last layer left whole, so the rest of ft's step (packing, dropout
masks, attention) is the same on both sides. Prints a Markdown table: padding share, ms
per step each way, the ratio, and the largest loss difference with dropout off (the two
compute the same thing).

    python bench/first_token.py                      # fp32, batch 32, 20 steps a case
    python bench/first_token.py --precision bf16 --steps 30
"""

from __future__ import annotations

import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unpadded import _batch, _loss_difference, _step, arguments, minilm, setting

# Row lengths drawn uniformly from low..high: ft's length-grouped MRPC batches (rows of
# nearly one length, the padded path), random MRPC-like batches (packed), long rows.
CASES = [(44, 48), (20, 100), (120, 128)]


def main() -> None:
    args = arguments(__doc__, batch_size=32)
    from transformers import AutoModelForSequenceClassification

    from ft_cli.hardware import first_token, kernels

    narrowed = minilm(AutoModelForSequenceClassification, args.model, labels=2)
    whole = copy.deepcopy(narrowed)
    assert kernels.speed_up(narrowed)["first_token"] == 1
    reads = first_token.reads_first_token_only
    first_token.reads_first_token_only = lambda model: False  # the whole layer, all else alike
    assert kernels.speed_up(whole)["first_token"] == 0
    first_token.reads_first_token_only = reads
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    print(setting(args))
    print("| batch | padding | first token ms | whole layer ms | ratio | loss diff, no dropout |")
    print("|---|---:|---:|---:|---:|---:|")
    for low, high in CASES:
        batch = _batch(args.batch_size, low, high, seed=low)
        batch["labels"] = batch["labels"][:, 0].clamp(min=0) % 2
        share = 1 - batch["attention_mask"].float().mean().item()
        times: dict[str, list[float]] = {"first": [], "whole": []}
        for _ in range(args.steps + 2):  # two warm-ups a side
            for side, net in (("first", narrowed), ("whole", whole)):
                times[side].append(_step(net.train(), batch, dtype))
        ms = {side: statistics.median(t[2:]) * 1000 for side, t in times.items()}
        diff = _loss_difference(narrowed, whole, batch, dtype)
        print(
            f"| rows of {low}-{high} tokens | {share:.1%} | {ms['first']:.1f} | "
            f"{ms['whole']:.1f} | **{ms['whole'] / ms['first']:.2f}x** | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
