"""Regenerate the data and vocabulary ft ships (deterministic; run from anywhere).

    python -m ft_cli.assets.make_assets

- demo/{train,validation}.csv: short product reviews written from templates,
  labelled positive/negative. Negations and "but" clauses make the label depend
  on more than one word, so a model has something to learn.
- tiny_bert/vocab.txt: special tokens, every word of the demo data, and single
  characters with their ## continuations, so any English text tokenizes.
"""

from __future__ import annotations

import csv
import random
import string
from pathlib import Path

ASSETS = Path(__file__).resolve().parent
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

PRODUCTS = [
    "phone", "laptop", "blender", "kettle", "jacket", "backpack", "lamp", "chair",
    "headset", "camera", "toaster", "watch", "printer", "tent", "bicycle", "keyboard",
]  # fmt: skip
GOOD = [
    "great", "excellent", "reliable", "sturdy", "comfortable", "fast", "quiet",
    "beautiful", "useful", "solid", "wonderful", "impressive",
]  # fmt: skip
BAD = [
    "terrible", "flimsy", "slow", "noisy", "broken", "useless", "awful",
    "disappointing", "cheap", "fragile", "ugly", "unreliable",
]  # fmt: skip
ADVERBS = ["really", "very", "quite", "truly", "rather", "surprisingly"]
OPENERS = ["honestly", "overall", "after a month", "so far", "in short", "to be fair"]


def _clause(rng: random.Random, positive: bool) -> str:
    """A clause whose meaning is `positive`, sometimes said through a negation."""
    negate = rng.random() < 0.35
    pool = GOOD if positive != negate else BAD
    adjective = rng.choice(pool)
    product = rng.choice(PRODUCTS)
    adverb = rng.choice(ADVERBS)
    if negate:
        forms = [
            f"the {product} is not {adjective}",
            f"this {product} was never {adjective}",
            f"i would not call the {product} {adjective}",
        ]
    else:
        forms = [
            f"the {product} is {adverb} {adjective}",
            f"this {product} was {adjective}",
            f"i found the {product} {adverb} {adjective}",
        ]
    return rng.choice(forms)


def review(rng: random.Random) -> tuple[str, str]:
    positive = rng.random() < 0.5
    if rng.random() < 0.3:
        # "X but Y": the clause after "but" carries the verdict.
        text = f"{_clause(rng, not positive)}, but {_clause(rng, positive)}"
    else:
        text = _clause(rng, positive)
    if rng.random() < 0.4:
        text = f"{rng.choice(OPENERS)}, {text}"
    return text[0].upper() + text[1:] + ".", "positive" if positive else "negative"


def write_demo(rows: int, name: str, seed: int) -> None:
    rng = random.Random(seed)
    with open(ASSETS / "demo" / name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(rows):
            writer.writerow(review(rng))


def write_vocab() -> None:
    words = set()
    for name in ("train.csv", "validation.csv"):
        with open(ASSETS / "demo" / name) as handle:
            for row in csv.DictReader(handle):
                words.update(row["text"].lower().replace(",", " ").replace(".", " ").split())
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in string.ascii_lowercase + string.digits)]
    vocab += sorted(words - set(vocab))
    (ASSETS / "tiny_bert" / "vocab.txt").write_text("\n".join(vocab) + "\n")


def main() -> None:
    write_demo(800, "train.csv", seed=1)
    write_demo(200, "validation.csv", seed=2)
    write_vocab()


if __name__ == "__main__":
    main()
