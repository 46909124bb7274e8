"""The shipped demo data and tiny vocabulary are exactly what the generator makes."""

from __future__ import annotations

import shutil
from pathlib import Path

from ft_cli.assets import make_assets


def test_shipped_assets_match_the_generator(tmp_path: Path, monkeypatch) -> None:
    shipped = make_assets.ASSETS
    for sub in ("demo", "ner", "corpus", "qa", "tiny_bert"):
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
        "qa/train.json",
        "qa/validation.json",
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


def test_every_demo_answer_is_where_its_start_says() -> None:
    import json

    for name in ("train.json", "validation.json"):
        record = json.loads((make_assets.ASSETS / "qa" / name).read_text())
        questions = 0
        for paragraph in record["data"][0]["paragraphs"]:
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]
                start = answer["answer_start"]
                assert paragraph["context"][start : start + len(answer["text"])] == answer["text"]
                questions += 1
        assert questions > (500 if name == "train.json" else 120)
