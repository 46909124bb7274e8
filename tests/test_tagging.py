"""Token classification: alignment, entity counting on hand-checked cases, the whole loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MRPC, TINY  # noqa: F401  (TINY: the tiny model's settings)

from ft_cli import cli
from ft_cli.commands import evaluation, predict
from ft_cli.errors import FtError
from ft_cli.tasks import tagging

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
        (["I-PER", "I-PER", "O"], {("PER", 0, 2)}),  # I- after O opens an entity (conlleval)
        (["B-PER", "I-LOC", "O"], {("PER", 0, 1), ("LOC", 1, 2)}),  # a type change splits
        (["B-PER", "B-PER"], {("PER", 0, 1), ("PER", 1, 2)}),
        (["O", "I-ORG", "B-ORG", "I-ORG"], {("ORG", 1, 2), ("ORG", 2, 4)}),
        (["O", "O"], set()),
    ],
)
def test_entities_are_counted_as_seqeval_does(tags: list[str], expected: set) -> None:
    assert tagging.entities(tags) == expected


def test_entity_scores_match_seqeval_on_its_own_example() -> None:
    # seqeval's README example: precision, recall and F1 all 0.5.
    truth = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    guess = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    scores = tagging.entity_scores(truth, guess)
    assert scores["precision"] == scores["recall"] == scores["f1"] == 0.5
    assert scores["accuracy"] == pytest.approx(8 / 10)  # words 3 and 4 differ
    partial = tagging.entity_scores(
        [["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]]
    )
    assert (partial["precision"], partial["recall"], partial["f1"]) == (0.5, 0.5, 0.5)


def test_word_tags_align_to_the_first_subtoken() -> None:
    word_ids = [None, 0, 0, 0, 1, None]  # [CLS] Ki ##ra ##z lives [SEP]
    tags = [LABELS.index("B-PER"), LABELS.index("O")]
    assert tagging.align(word_ids, tags, LABELS, all_subtokens=False) == [
        -100,
        3,
        -100,
        -100,
        0,
        -100,
    ]
    assert tagging.align(word_ids, tags, LABELS, all_subtokens=True) == [-100, 3, 4, 4, 0, -100]
    assert tagging.first_subtokens(word_ids) == [False, True, False, False, True, False]


def test_a_real_tokenizer_splits_words_and_keeps_one_tag_each() -> None:
    from transformers import AutoTokenizer

    from ft_cli.paths import resolve_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_path("pkg:ft_cli/assets/tiny_bert", "m"))
    split = tagging.encode_tagged(
        tokenizer,
        [["Zoe", "visited", "Oslo"]],
        [["B-PER", "O", "B-LOC"]],
        LABELS,
        32,
        all_subtokens=False,
        split="train",
    )
    labelled = [label for label in split.labels[0] if label != -100]
    assert labelled == [LABELS.index("B-PER"), 0, LABELS.index("B-LOC")]
    assert sum(split.word_starts[0]) == 3
    assert len(split.input_ids[0]) > 5  # the tiny vocabulary spells names out in pieces


def test_conll_files_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- -X- O\n\nAnna NNP B-PER\nruns VBZ O\n\nOslo NNP B-LOC\n")
    assert tagging.read_conll(str(path)) == {
        "tokens": [["Anna", "runs"], ["Oslo"]],
        "tags": [["B-PER", "O"], ["B-LOC"]],
    }
    path.write_text("Anna B-PER\nlonely\n")
    with pytest.raises(FtError, match="line 2: 'lonely' has no tag"):
        tagging.read_conll(str(path))


def test_token_classification_trains_evaluates_and_predicts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = [
        "model=tiny_bert",
        "data=demo_ner",
        "task=token_classification",
        "data.max_train_samples=160",
        "data.max_eval_samples=40",
        "train.epochs=2",
        "optimizer.lr=3e-3",
        "train.batch_size=16",
        f"hydra.run.dir={run}",
    ]
    assert cli.run_train(overrides) == 0
    record = json.loads((run / "metrics.json").read_text())
    assert record["monitor"]["metric"] == "f1"
    assert set(record["final"]) == {"f1", "precision", "recall", "accuracy", "loss"}
    assert record["labels"][0] == "O" and "B-PER" in record["labels"]
    evaluated = evaluation.evaluate_trained(str(run), [])
    best = {k: v for k, v in record["best"].items() if k != "step"}
    assert evaluated["metrics"] == pytest.approx(best, rel=1e-6, abs=1e-6)

    rows = [
        {"tokens": ["Zoe", "flew", "to", "New", "York", "."]},
        {"tokens": "Acme Corp hired Ben"},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert predict.predict_file(str(run), source, out, []) == 2
    predicted = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(p["predicted_tags"]) for p in predicted] == [6, 4]
    assert all(tag in record["labels"] for p in predicted for tag in p["predicted_tags"])


@pytest.mark.slow
def test_the_ner_demo_ends_well_above_chance(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Evaluated and saved once, at the end, with the embeddings and 2 bottom layers frozen:
    # entity F1 0.954 / 0.958 (seeds 42, 1) against 1.0 for the recipe, in 10 s instead of 16.
    once = ["train.eval_every=1000000", "train.save_every=1000000", "strategy=freeze_layers"]
    assert cli.run_train(["+recipe=demo_ner", *once, f"hydra.run.dir={run}"]) == 0
    best = json.loads((run / "metrics.json").read_text())["monitor"]["best"]
    assert best > 0.8  # entity F1; tagging every word O scores 0
