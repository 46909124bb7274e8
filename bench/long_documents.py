"""Long documents: reading them whole in windows against truncating them, per document.

Documents are built from GLUE SST-2 sentences (../shared/data/glue/SST-2): each holds
five sentences, three of one sentiment and two of the other, shuffled; its label is the
majority's. A document is several times longer than the window (`--max-length`), so
truncation judges it on its first sentences only, where the minority is as likely to
stand. Both arms train the same model with the same settings for the same epochs; only
`data.long_inputs` differs (windows train on every window with its document's label and
are scored per document, `data.window_pooling` combining them). Each arm runs in a
fresh `ft train` process; the table gives dev accuracy per document (medians over the
seeds), the windows the data made and the train time.

    python bench/long_documents.py                      # MiniLM, 800 train documents
    python bench/long_documents.py --seeds 1 2 3 --pooling max
    python bench/long_documents.py --tiny --quick       # smoke run (tiny model)
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import processes  # noqa: E402
from compare_hf import cpu_name  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "glue" / "SST-2"
SENTENCES, MAJORITY = 5, 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SST-2 TSV folder")
    parser.add_argument("--train-docs", type=int, default=800)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--pooling", choices=["mean", "max", "first"], default="mean")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--tiny", action="store_true", help="the tiny random BERT")
    parser.add_argument("--quick", action="store_true", help="a few steps (smoke run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def sentences(path: Path, min_words: int) -> dict[int, list[str]]:
    """SST-2's sentences by label, those of at least `min_words` words."""
    by_label: dict[int, list[str]] = {0: [], 1: []}
    with open(path, encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            text = row["sentence"].strip()
            if len(text.split()) >= min_words:
                by_label[int(row["label"])].append(text)
    return by_label


def documents(by_label: dict[int, list[str]], count: int, seed: int) -> list[dict]:
    """`count` documents of five sentences each, the label that of three of them."""
    draw = random.Random(seed)
    pools = {label: draw.sample(texts, len(texts)) for label, texts in by_label.items()}
    made = []
    for index in range(count):
        label = index % 2
        if len(pools[label]) < MAJORITY or len(pools[1 - label]) < SENTENCES - MAJORITY:
            break
        parts = [pools[label].pop() for _ in range(MAJORITY)]
        parts += [pools[1 - label].pop() for _ in range(SENTENCES - MAJORITY)]
        draw.shuffle(parts)
        made.append({"text": " ".join(parts), "label": "positive" if label else "negative"})
    return made


def write(rows: list[dict], path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_arm(args: argparse.Namespace, files: dict[str, Path], arm: str, seed: int, root: Path):
    run_dir = root / f"{arm}-{seed}"
    overrides = [
        "model=tiny_bert" if args.tiny else "model=minilm_l6",
        "task=classification",
        "data=csv",
        f"data.files.train={files['train']}",
        f"data.files.validation={files['validation']}",
        f"data.max_length={args.max_length}",
        f"data.stride={args.stride}",
        f"data.long_inputs={arm}",
        f"data.window_pooling={args.pooling}",
        "optimizer.lr=1e-4",
        "train.batch_size=16",
        f"train.epochs={args.epochs}",
        f"train.seed={seed}",
        "train.eval_every=1000000",  # once, at the end
        "train.save_every=1000000",
        f"hydra.run.dir={run_dir}",
    ]
    if args.quick:
        overrides.append("train.max_steps=3")
    code, stderr, _ = processes.run_ft(["train", *overrides])
    if code != 0:
        sys.exit(f"the {arm} arm failed:\n{stderr[-3000:]}")
    return json.loads((run_dir / "metrics.json").read_text())


def main() -> None:
    args = parse_args()
    if not (args.data / "train.tsv").is_file():
        sys.exit(f"no SST-2 TSVs in {args.data}: pass --data FOLDER (train.tsv, dev.tsv)")
    train_docs = documents(sentences(args.data / "train.tsv", 8), args.train_docs, 0)
    dev_docs = documents(sentences(args.data / "dev.tsv", 1), 10_000, 0)
    if args.quick:
        train_docs, dev_docs = train_docs[:64], dev_docs[:32]
    results: dict[str, list[dict]] = {"truncate": [], "windows": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {
            "train": write(train_docs, root / "train.csv"),
            "validation": write(dev_docs, root / "dev.csv"),
        }
        for seed in args.seeds:
            for arm in results:  # interleaved: truncate, windows, truncate, ...
                print(f"running {arm} (seed {seed}) ...", flush=True)
                results[arm].append(run_arm(args, files, arm, seed, root))
    table = {}
    for arm, runs in results.items():
        windows = runs[0].get("windows", {})
        table[arm] = {
            "dev accuracy (documents)": statistics.median(r["final"]["accuracy"] for r in runs),
            "dev F1": statistics.median(r["final"]["f1"] for r in runs),
            "train rows": windows.get("train", {}).get("windows", len(train_docs)),
            "train seconds": statistics.median(r["train_seconds"] for r in runs),
        }
    model = "tiny BERT" if args.tiny else "MiniLM"
    print(
        f"\nLong documents from SST-2 ({model}; {len(train_docs)} train, {len(dev_docs)} dev"
        f" documents of {SENTENCES} sentences; max_length {args.max_length}, stride"
        f" {args.stride}, pooling {args.pooling}, {args.epochs} epoch(s); medians over seeds"
        f" {' '.join(map(str, args.seeds))}; {cpu_name()})\n"
    )
    print("| arm | dev accuracy (documents) | dev F1 | train rows | train s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for arm, row in table.items():
        print(
            f"| {arm} | {row['dev accuracy (documents)']:.4f} | {row['dev F1']:.4f} |"
            f" {row['train rows']:,} | {row['train seconds']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "table": table}, default=str))


if __name__ == "__main__":
    main()
