"""The shipped demo data and tiny vocabulary are exactly what the generator makes."""

from __future__ import annotations

import shutil
from pathlib import Path

from ft_cli.assets import make_assets


def test_shipped_assets_match_the_generator(tmp_path: Path, monkeypatch) -> None:
    shipped = make_assets.ASSETS
    for sub in ("demo", "ner", "corpus", "tiny_bert"):
        shutil.copytree(shipped / sub, tmp_path / sub)
    monkeypatch.setattr(make_assets, "ASSETS", tmp_path)
    make_assets.main()
    names = (
        "demo/train.csv",
        "demo/validation.csv",
        "ner/train.conll",
        "ner/validation.conll",
        "corpus/train.txt",
        "corpus/validation.txt",
        "tiny_bert/vocab.txt",
    )
    for name in names:
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes(), name


def test_demo_data_is_balanced_and_labelled() -> None:
    import csv

    with open(make_assets.ASSETS / "demo" / "train.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 800
    positives = sum(r["label"] == "positive" for r in rows)
    assert 0.4 < positives / len(rows) < 0.6
    assert {r["label"] for r in rows} == {"positive", "negative"}
