"""Prediction speed and accuracy of a trained run: torch fp32 and bf16 next to its ONNX
export (fp32, int8) run by onnxruntime, on the run's validation split.

    python bench/deploy.py RUN [--repeats 3] [--batch 32] [--threads N]

RUN must hold an export (`ft export RUN --quantize int8`). Single requests
(batch 1, each row alone) give p50/p99 latency; batched ones rows per second.
The variants are interleaved within each repeat and the medians printed, so a
core that vanishes for a second hurts them all alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from ft_cli.commands import evaluation
from ft_cli.deploy import onnx_export


def variants(ready, run: Path) -> dict:
    net = ready.objective.forward.eval()
    folder = onnx_export.default_folder(ready.found)
    found = {
        "torch fp32": (net, False),
        "onnx fp32": (onnx_export.SessionNet(folder / onnx_export.MODEL), False),
    }
    if torch.cpu._is_avx512_bf16_supported():
        found["torch bf16"] = (net, True)
    if (folder / onnx_export.INT8).is_file():
        found["onnx int8"] = (onnx_export.SessionNet(folder / onnx_export.INT8), False)
    return found


def run_batches(model, bf16: bool, batches: list[dict]) -> tuple[float, list[torch.Tensor]]:
    outputs = []
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k not in ("labels", "word_starts")}
            outputs.append(model(**inputs).logits.float())
    return time.perf_counter() - start, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--singles", type=int, default=100, help="rows sent one at a time")
    args = parser.parse_args()
    ready = evaluation.setup(args.run, ["hardware.device=cpu", "hardware.precision=fp32"])
    collate = ready.objective.collator(ready.rows, 0)
    rows = list(range(len(ready.rows)))
    batched = [collate(rows[i : i + args.batch]) for i in range(0, len(rows), args.batch)]
    singles = [collate([i]) for i in rows[: args.singles]]
    labels = torch.cat([b["labels"] for b in batched])
    found = variants(ready, Path(args.run))
    speed = {name: [] for name in found}
    latency = {name: [] for name in found}
    accuracy = {}
    for _ in range(args.repeats):
        for name, (model, bf16) in found.items():
            seconds, outputs = run_batches(model, bf16, batched)
            speed[name].append(len(rows) / seconds)
            accuracy[name] = float((torch.cat(outputs).argmax(-1) == labels).float().mean())
            for batch in singles:
                seconds, _ = run_batches(model, bf16, [batch])
                latency[name].append(seconds * 1000)
    folder = onnx_export.default_folder(ready.found)
    sizes = {"onnx fp32": folder / onnx_export.MODEL, "onnx int8": folder / onnx_export.INT8}
    print(
        f"{len(rows)} validation rows of {args.run}; batch {args.batch}; {args.singles} single"
        f" requests; {args.repeats} repeats, medians; torch threads {torch.get_num_threads()}"
    )
    print("| variant | rows/s (batched) | p50 ms (single) | p99 ms (single) | accuracy | size |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in found:
        ordered = sorted(latency[name])
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        size = sizes.get(name)
        shown = f"{size.stat().st_size / 2**20:.1f} MiB" if size else "-"
        print(
            f"| {name} | {statistics.median(speed[name]):.1f} | {statistics.median(ordered):.2f}"
            f" | {p99:.2f} | {accuracy[name]:.4f} | {shown} |"
        )


if __name__ == "__main__":
    main()
