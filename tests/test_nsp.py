"""Next-sentence prediction: balanced pairs that never pair a text with itself, the
pretraining model and its export, and the refusal of models without an NSP head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_spec

from ft_cli.data import sentence_pairs
from ft_cli.errors import FtError
from ft_cli.paths import resolve_path
from ft_cli.training.engine import train

CORPUS = Path(resolve_path("pkg:ft_cli/assets/corpus/train.txt", "corpus"))
NSP = [
    "+recipe=demo_nsp",
    "model=tiny_bert",
    "hardware.precision=fp32",
    "train.epochs=1",
    "data.max_train_samples=120",
    "data.max_eval_samples=40",
    "train.log_every=1",
]


def _documents() -> list[str]:
    return [d.replace("\n", " ") for d in CORPUS.read_text().split("\n\n") if d.strip()]


def test_pairs_are_balanced_and_never_pair_a_text_with_itself() -> None:
    documents = _documents()
    firsts, seconds, labels = sentence_pairs.sentence_pairs(documents)
    assert len(firsts) == len(documents)  # every document has several sentences
    assert labels.count(sentence_pairs.NOT_NEXT) == len(labels) // 2
    own = {}
    for text in documents:
        parts = sentence_pairs.segments(text)
        for cut in range(1, len(parts)):
            own.setdefault(" ".join(parts[:cut]), set()).add(" ".join(parts[cut:]))
    for first, second, label in zip(firsts, seconds, labels, strict=True):
        assert second != first
        if label == sentence_pairs.IS_NEXT:
            assert second in own[first]  # the true continuation of its document
        else:
            assert second not in own[first]  # never its own document's text
    assert sentence_pairs.sentence_pairs(documents) == (firsts, seconds, labels)  # fixed


def test_documents_of_one_segment_give_no_pairs() -> None:
    assert sentence_pairs.sentence_pairs(["one sentence only", "another one"]) == ([], [], [])
    assert sentence_pairs.segments("First part, second part. Third!") == [
        "First part,",
        "second part.",
        "Third!",
    ]


@pytest.mark.slow
def test_nsp_trains_reports_and_exports_the_pretraining_model(tmp_path: Path) -> None:
    from transformers import AutoModelForPreTraining

    result = train(compose_spec(NSP), run_dir=tmp_path / "nsp")
    assert {"loss", "perplexity", "nsp_loss", "nsp_accuracy"} <= result.final.keys()
    net = AutoModelForPreTraining.from_pretrained(tmp_path / "nsp" / "model")
    assert type(net).__name__ == "BertForPreTraining"
    # Its encoder (pooler included) starts a fine-tune like any other model.
    tuned = train(
        compose_spec(
            [
                "+recipe=demo",
                "model=tiny_bert",
                "hardware.precision=fp32",
                f"model.from_run={tmp_path / 'nsp'}",
                "train.max_steps=2",
                "data.max_train_samples=32",
                "data.max_eval_samples=16",
            ]
        ),
        run_dir=tmp_path / "tuned",
    )
    assert tuned.steps == 2
    assert json.loads((tmp_path / "nsp" / "metrics.json").read_text())["final"]["nsp_accuracy"] >= 0


@pytest.mark.slow
def test_a_model_without_an_nsp_head_is_refused_in_one_line(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, RobertaConfig

    folder = tmp_path / "tiny_roberta"
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("pkg:ft_cli/assets/tiny_bert", "m"))
    tokenizer.save_pretrained(folder)
    RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=130,
    ).save_pretrained(folder)
    with pytest.raises(FtError) as err:
        train(
            compose_spec([*NSP, f"model.name_or_path={folder}", "model.init=scratch"]),
            run_dir=tmp_path / "run",
        )
    assert "has no next-sentence head" in str(err.value) and "\n" not in str(err.value)
    assert "RobertaForMaskedLM" in str(err.value)


def test_nsp_is_for_mlm_only() -> None:
    with pytest.raises(FtError, match=r"task\.nsp=true is masked-LM"):
        compose_spec(["+recipe=demo", "task.nsp=true"])


@pytest.mark.slow
def test_the_nsp_head_trains_well_above_chance_on_the_demo_corpus(tmp_path: Path) -> None:
    """The shipped recipe with the packaged MiniLM: a segment and its true continuation
    share a product, a random one mostly does not; the head must learn to tell."""
    # The recipe's precision (auto): bf16 where the CPU has it natively, else fp32;
    # 0.88 is measured either way, far from the bound.
    # Evaluated and saved once, at the end (the recipe does so every epoch): 13% sooner.
    once = ["train.eval_every=1000000", "train.save_every=1000000"]
    # The embeddings and 2 bottom layers frozen, 2 epochs instead of 3: 20 to 24 s alone on
    # 2 cores instead of 55, nsp_accuracy 0.87, perplexity 4.7 to 5.7 (seeds 42, 1; after
    # 1 epoch it is still 22 to 31, so the bound below needs the second one).
    short = ["strategy=freeze_layers", "train.epochs=2"]
    result = train(compose_spec(["+recipe=demo_nsp", *once, *short]), run_dir=tmp_path / "nsp")
    assert result.final["nsp_accuracy"] > 0.7, result.final
    assert result.final["perplexity"] < 8
