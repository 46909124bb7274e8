"""Class weights: the weighted loss, `balanced` on imbalanced data, records and refusals."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_spec, write_csv
from torch.nn import functional as F

from ft_cli.errors import FtError
from ft_cli.tasks import class_weights, tagging
from ft_cli.tasks.objective import Objective
from ft_cli.training.engine import train

WORDS = ["the", "a", "this", "very", "quite", "rather", "really", "kettle", "lamp", "tent"]


def _rows(positives: int, negatives: int, seed: int) -> list[dict]:
    rng = random.Random(seed)

    def row(label: str) -> dict:
        # "comfortable" says positive, but not for sure: 80% of positives, 10% of negatives. With
        # 9 negatives per positive, a row with it is still more likely negative.
        words = rng.choices(WORDS, k=6)
        if rng.random() < (0.8 if label == "positive" else 0.1):
            words.insert(rng.randrange(7), "comfortable")
        return {"text": " ".join(words), "label": label}

    rows = [row("positive") for _ in range(positives)] + [row("negative") for _ in range(negatives)]
    rng.shuffle(rows)
    return rows


def test_the_loss_is_the_hand_computed_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 3), torch.tensor([0, 1, 2, 2, 1, 0, 2])
    weights = [0.5, 2.0, 3.0]
    objective = Objective(torch.nn.Identity(), "classification", 3, 0, False, 0.0, weights)
    log_p = logits.log_softmax(-1)
    w = torch.tensor(weights)[labels]
    expected = -(w * log_p[torch.arange(7), labels]).sum() / w.sum()
    assert float(objective.loss(logits, labels)) == pytest.approx(float(expected), rel=1e-6)
    # Token classification: ignored sub-tokens count for nothing, weights for the others.
    tags = torch.tensor([[[0, 1], [-100, 0], [2, 1]], [[1, 1], [2, 1], [-100, 0]]])
    token_logits = torch.randn(2, 3, 3)
    kept = tags[..., 0].reshape(-1) != -100
    flat = token_logits.reshape(-1, 3)[kept].log_softmax(-1)
    ids = tags[..., 0].reshape(-1)[kept]
    tw = torch.tensor(weights)[ids]
    by_hand = -(tw * flat[torch.arange(len(ids)), ids]).sum() / tw.sum()
    got = tagging.tagging_loss(token_logits, tags, 0.0, torch.tensor(weights))
    assert float(got) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(got) != pytest.approx(float(tagging.tagging_loss(token_logits, tags)), rel=1e-3)


def test_balanced_weights_are_inverse_frequency() -> None:
    spec = compose_spec([*TINY, "task.class_weights=balanced"])
    weights = class_weights.resolve(spec.task, ["a", "b"], [0] * 9 + [1])
    assert weights == pytest.approx([10 / (2 * 9), 10 / (2 * 1)])
    tokens = class_weights.resolve(spec.task, ["O", "B-X"], [[0, 0, -100, 1], [0, -100]])
    assert tokens == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])


def _recall_of_positive(model_dir: Path, rows: list[dict]) -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    net = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    positives = [r["text"] for r in rows if r["label"] == "positive"]
    with torch.no_grad():
        logits = net(**tokenizer(positives, padding=True, return_tensors="pt")).logits
    predicted = [net.config.id2label[i] for i in logits.argmax(-1).tolist()]
    return predicted.count("positive") / len(positives)


@pytest.mark.slow
def test_balanced_raises_minority_recall_on_a_9_to_1_split(tmp_path: Path) -> None:
    train_file = write_csv(tmp_path / "train.csv", _rows(60, 540, seed=5))
    held = _rows(40, 40, seed=2)
    validation = write_csv(tmp_path / "validation.csv", held)
    data = [
        "data=csv",
        f"data.files.train={train_file}",
        f"data.files.validation={validation}",
        "data.max_train_samples=600",
        "optimizer.lr=1e-3",
        "train.epochs=10",
        "train.export=last",
    ]
    recalls = {}
    for name, extra in {"plain": [], "balanced": ["task.class_weights=balanced"]}.items():
        train(compose_spec([*TINY, *data, *extra]), run_dir=tmp_path / name)
        recalls[name] = _recall_of_positive(tmp_path / name / "model", held)
    assert recalls["balanced"] > recalls["plain"] + 0.3, recalls
    record = json.loads((tmp_path / "balanced" / "metrics.json").read_text())
    assert record["class_weights"] == pytest.approx({"negative": 600 / 1080, "positive": 5.0})
    assert "class weights" in (tmp_path / "balanced" / "model" / "README.md").read_text()
    assert "class_weights" not in json.loads((tmp_path / "plain" / "metrics.json").read_text())


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("task.class_weights=[1.0,2.0,3.0]", "lists 3 weight(s) for 2 classes"),
        ("task.class_weights=[1.0,-2.0]", "-2 must be a finite number, at least 0"),
        ("task.class_weights={positive:2,neutral:1}", "label 'neutral' is not a class"),
        ("task.class_weights=inverse", "use balanced, a list"),
        ("task.class_weights=0", "use balanced, a list"),
        ("task.class_weights=[0,0]", "every weight is 0"),
    ],
)
def test_bad_class_weights_fail_in_one_line(tmp_path: Path, setting: str, message: str) -> None:
    with pytest.raises(FtError) as err:
        train(compose_spec([*TINY, setting]), run_dir=tmp_path / "run")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written


def test_class_weights_only_for_tasks_with_classes() -> None:
    with pytest.raises(FtError, match=r"task\.class_weights is for classification"):
        compose_spec([*TINY, "task=regression", "task.class_weights=balanced"])


def test_balanced_needs_every_class_in_train(tmp_path: Path) -> None:
    listed = ["task.labels=[negative,positive,neutral]", "task.class_weights=balanced"]
    with pytest.raises(FtError, match="class 'neutral' has no rows in the train split"):
        train(compose_spec([*TINY, *listed]), run_dir=tmp_path / "run")


def test_weighted_loss_differs_from_plain_on_the_same_batch() -> None:
    logits, labels = torch.randn(8, 2), torch.tensor([0] * 7 + [1])
    plain = F.cross_entropy(logits, labels)
    weighted = Objective(torch.nn.Identity(), "classification", 2, 0, False, 0.0, [1.0, 9.0])
    assert float(weighted.loss(logits, labels)) != pytest.approx(float(plain), rel=1e-3)
