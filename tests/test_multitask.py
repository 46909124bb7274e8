"""Multi-task runs: batch mixing, shared encoder and separate heads, exports per task, resume."""

from __future__ import annotations

import copy
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import compose_spec
from safetensors.torch import load_file

from ft_cli.config.schema import Mixing, SubTaskConfig, check_spec
from ft_cli.data import batching, mixing
from ft_cli.errors import FtError
from ft_cli.training.engine import train

SMALL = [
    "model=tiny_bert",
    "hardware.precision=fp32",
    "train.batch_size=16",
    "train.eval_batch_size=32",
    "train.log_every=1",
]
TASK_DATA = [
    f"task.tasks.{name}.data.{key}"
    for name in ("sentiment", "ner")
    for key in ("max_length=32", "max_train_samples=64", "max_eval_samples=32")
]
MULTI = [*SMALL, "+recipe=demo_multitask", *TASK_DATA, "train.epochs=2"]


def run_multi(folder: Path, overrides: list[str], edit=None):
    spec = compose_spec([*MULTI, *overrides])
    if edit is not None:
        edit(spec)
        check_spec(spec)
    return train(spec, run_dir=folder, overrides=[*MULTI, *overrides])


# --- mixing -----------------------------------------------------------------------------


def _sampler(sizes: list[int], scheme: Mixing, batch: int = 4, weights=None, seed: int = 3):
    from ft_cli.data.encoded import EncodedSplit

    parts = [EncodedSplit([[1, 2]] * n, None, [0] * n) for n in sizes]
    split = mixing.TaskSplits([f"t{i}" for i in range(len(sizes))], parts)
    collate = mixing.TaskCollator([lambda rows: {"rows": rows}] * len(sizes))
    return mixing.train_loader(
        split, collate, batch, seed, False, scheme, 2.0, weights or [1.0] * len(sizes)
    )[1]


@pytest.mark.parametrize("scheme", list(Mixing))
def test_each_epoch_gives_each_task_its_share_within_one_batch(scheme: Mixing) -> None:
    sizes, weights = [40, 160, 8], [1.0, 1.0, 2.0]
    sampler = _sampler(sizes, scheme, weights=weights)
    batches = [-(-n // 4) for n in sizes]  # 10, 40, 2
    total = sum(batches)
    expected = {
        Mixing.proportional: batches,
        Mixing.temperature: [total * n**0.5 / sum(m**0.5 for m in sizes) for n in sizes],
        Mixing.round_robin: [total / 3] * 3,
        Mixing.weights: [total * w / sum(weights) for w in weights],
    }[scheme]
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == total == len(sampler)
        counts = Counter(batch[0][0] for batch in drawn)
        for task, share in enumerate(expected):
            assert abs(counts[task] - share) <= 1, (scheme, epoch, task, counts[task], share)
        assert all(len({task for task, _ in batch}) == 1 for batch in drawn)  # one task a batch


def test_proportional_sees_every_row_once_per_epoch_and_round_robin_alternates() -> None:
    sampler = _sampler([10, 30], Mixing.proportional)
    sampler.set_epoch(1)
    rows = Counter(item for batch in sampler for item in batch)
    assert set(rows.values()) == {1} and len(rows) == 40
    robin = _sampler([40, 40], Mixing.round_robin)
    robin.set_epoch(0)
    assert [batch[0][0] for batch in robin][:6] == [0, 1, 0, 1, 0, 1]


def test_tasks_seen_less_than_their_size_continue_where_they_stopped() -> None:
    """Temperature sampling gives the big task fewer batches than it has; the next epoch
    continues its stream, so every row comes before any comes twice."""
    sampler = _sampler([8, 200], Mixing.temperature)
    seen: Counter = Counter()
    epochs = 0
    while len([k for k in seen if k[0] == 1]) < 200:
        sampler.set_epoch(epochs)
        seen.update(item for batch in sampler for item in batch if item[0] == 1)
        epochs += 1
        assert max(seen.values()) == 1 or len([k for k in seen if k[0] == 1]) == 200
    assert epochs > 1


def test_the_schedule_is_a_function_of_seed_epoch_and_position() -> None:
    first, again = (
        _sampler([40, 160, 8], Mixing.temperature),
        _sampler([40, 160, 8], Mixing.temperature),
    )
    first.set_epoch(2)
    again.set_epoch(2, start=7)  # a run resumed at the 8th batch of epoch 2
    assert list(again) == list(first)[7:]
    other = _sampler([40, 160, 8], Mixing.temperature, seed=4)
    other.set_epoch(2)
    assert list(other) != list(first)


def test_task_zero_draws_its_rows_as_a_single_task_run_does() -> None:
    sampler = _sampler([40], Mixing.proportional, seed=5)
    single = batching.ShuffledBatches(40, 4, 5)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        single.set_epoch(epoch)
        assert [[row for _, row in batch] for batch in sampler] == list(single)


# --- the model: one encoder, separate heads ---------------------------------------------


def test_a_batch_of_one_task_leaves_the_other_heads_untouched(tmp_path: Path) -> None:
    from ft_cli.hardware import parallel
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.training import setup

    spec = compose_spec(MULTI)
    hw = setup_hardware(spec.hardware)
    ready = setup.build(spec, setup.Purpose.train, parallel.Backend(), hw)
    net = ready.net
    assert net.tasks["sentiment"].bert.encoder is net.tasks["ner"].bert.encoder
    ready.sampler.set_epoch(0)
    batch = next(b for b in ready.loader if int(b["task"]) == 1)  # a ner batch
    predictions, targets = ready.forward(batch)
    ready.objective.loss(predictions, targets).backward()
    sentiment_head = [p for n, p in net.named_parameters() if "sentiment.classifier" in n]
    ner_head = [p for n, p in net.named_parameters() if "ner.classifier" in n]
    encoder = [p for n, p in net.named_parameters() if ".encoder.layer." in n]
    assert sentiment_head and all(p.grad is None or not p.grad.any() for p in sentiment_head)
    assert all(p.grad is not None and p.grad.any() for p in ner_head)
    assert all(p.grad is not None for p in encoder)


@pytest.mark.slow
def test_exports_load_in_plain_transformers_and_reproduce_the_runs_metrics(tmp_path: Path) -> None:
    from transformers import AutoModel, AutoModelForSequenceClassification

    from ft_cli.commands import evaluation

    result = run_multi(tmp_path / "run", ["train.export=last"])
    model = tmp_path / "run" / "model"
    assert json.loads((model / "multitask.json").read_text())["tasks"].keys() == {
        "sentiment",
        "ner",
    }
    for name in ("sentiment", "ner"):
        scores = evaluation.evaluate_trained(str(tmp_path / "run"), [], task=name)["metrics"]
        for metric, value in scores.items():
            assert value == pytest.approx(result.final[f"{name}/{metric}"], abs=1e-6), metric
    classifier = AutoModelForSequenceClassification.from_pretrained(model / "sentiment")
    encoder = AutoModel.from_pretrained(model / "encoder")
    ner = load_file(model / "ner" / "model.safetensors")
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, classifier.bert.state_dict()[key])
        if not key.startswith("pooler"):
            assert torch.equal(value, ner[f"bert.{key}"])  # one encoder in every export


def test_a_run_of_one_task_equals_the_single_task_run(tmp_path: Path) -> None:
    data = ["data.max_length=32", "data.max_train_samples=64", "data.max_eval_samples=32"]
    single = train(
        compose_spec([*SMALL, "+recipe=demo", *data, "train.epochs=2", "train.export=last"]),
        run_dir=tmp_path / "single",
    )
    run_multi(tmp_path / "multi", ["~task.tasks.ner", "train.export=last"])
    alone = load_file(tmp_path / "single" / "model" / "model.safetensors")
    within = load_file(tmp_path / "multi" / "model" / "sentiment" / "model.safetensors")
    assert alone.keys() == within.keys()
    assert all(torch.equal(alone[k], within[k]) for k in alone)
    assert single.steps > 0


@pytest.mark.parametrize("cut", [3, pytest.param(8, marks=pytest.mark.slow)])
def test_a_cut_and_resumed_run_ends_bit_identical(tmp_path: Path, cut: int) -> None:
    extra = [
        "train.save_every=1",
        "train.keep_checkpoints=100",
        "train.export=last",
        "train.eval_every=4",
        "task.mixing=temperature",
    ]
    run_multi(tmp_path / "reference", extra)
    # Training is deterministic: a copy is the run dir a second run that crashed would leave.
    shutil.copytree(tmp_path / "reference", tmp_path / "cut")
    for ckpt in (tmp_path / "cut" / "checkpoints").glob("step-*"):
        if int(ckpt.name.split("-")[1]) > cut:
            shutil.rmtree(ckpt)
    shutil.rmtree(tmp_path / "cut" / "model")
    (tmp_path / "cut" / "metrics.json").unlink()
    resumed = run_multi(tmp_path / "cut", [*extra, "resume=auto"])
    for name in ("sentiment", "ner"):
        a = load_file(tmp_path / "reference" / "model" / name / "model.safetensors")
        b = load_file(tmp_path / "cut" / "model" / name / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed.steps > cut


def test_an_mlm_task_helps_alongside_and_is_left_out_of_the_score(tmp_path: Path) -> None:
    def add_mlm(spec) -> None:
        data = copy.deepcopy(spec.task.tasks["sentiment"].data)
        spec.task.tasks["lm"] = SubTaskConfig(kind="mlm", data=data, weight=0.5)

    result = run_multi(tmp_path / "run", ["~task.tasks.ner"], edit=add_mlm)
    assert {"lm/loss", "lm/perplexity", "sentiment/accuracy"} <= result.final.keys()
    assert result.final["score"] == result.final["sentiment/accuracy"]


@pytest.mark.parametrize(
    ("strategy", "check"),
    [
        ("freeze_backbone", "encoder_unchanged"),
        ("llrd", "trains"),
        ("l2sp", "trains"),
        ("lora", "trains"),
    ],
)
def test_strategies_work_as_for_one_task(
    tmp_path: Path, tiny_pretrained: Path, strategy: str, check: str
) -> None:
    from transformers import AutoModel

    pretrained = [f"model.name_or_path={tiny_pretrained}", "model.init=pretrained"]
    extra = [f"strategy={strategy}", "train.epochs=1", *pretrained]
    if strategy == "lora":
        extra.append("optimizer.lr=1e-2")
    result = run_multi(tmp_path / "run", extra)
    start = _initial_encoder(pretrained)
    after = AutoModel.from_pretrained(tmp_path / "run" / "model" / "encoder").state_dict()
    layer = "encoder.layer.0.attention.self.query.weight"
    if check == "encoder_unchanged":
        assert torch.equal(start[layer], after[layer])
    else:
        assert not torch.equal(start[layer], after[layer])
    assert result.final["score"] == result.final["score"]  # evaluated: not NaN


def _initial_encoder(overrides: list[str]) -> dict[str, torch.Tensor]:
    from ft_cli.hardware import parallel
    from ft_cli.hardware.device import setup_hardware
    from ft_cli.training import setup

    spec = compose_spec([*MULTI, *overrides])
    ready = setup.build(
        spec, setup.Purpose.train, parallel.Backend(), setup_hardware(spec.hardware)
    )
    return {k: v.clone() for k, v in ready.net.encoder.state_dict().items()}


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=multitask"], "lists no tasks"),
        (["+recipe=demo_multitask", "data.max_length=16"], "each task's own data"),
        (["+recipe=demo_multitask", "strategy=distill"], "strategy=distill"),
        (["+recipe=demo_multitask", "task.tasks.ner.weight=0"], "task.tasks.ner.weight=0"),
        (
            ["+recipe=demo_multitask", "task.tasks.ner.data.format=text"],
            "task.tasks.ner.data.format=text",
        ),
        (["+recipe=demo_multitask", "train.early_stopping.metric=ner/nope"], "ner/f1"),
    ],
)
def test_bad_multitask_specs_fail_in_one_line(overrides: list[str], message: str) -> None:
    from ft_cli.config import compose
    from ft_cli.tasks import metrics

    with pytest.raises(FtError) as err:
        spec = compose.compose_spec(overrides)
        metrics.monitored(spec.task, spec.train.early_stopping)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_named_task_metric_can_pick_the_best_checkpoint(tmp_path: Path) -> None:
    result = run_multi(tmp_path / "run", ["train.early_stopping.metric=ner/loss"])
    assert result.metric_name == "ner/loss"
    assert result.metric == min(result.best["ner/loss"], result.final["ner/loss"])


def test_the_docs_example_composes_as_a_user_recipe(tmp_path: Path, monkeypatch) -> None:
    from conftest import REPO

    from ft_cli.config import compose

    page = (REPO / "docs" / "tasks.md").read_text()
    section = page[page.index("## Multi-task training") :]
    example = section[
        section.index("```yaml\n") + 8 : section.index("```", section.index("```yaml") + 7)
    ]
    (tmp_path / "three_tasks.yaml").write_text(example)
    monkeypatch.setenv("FT_RECIPES_DIR", str(tmp_path))
    assert "three_tasks" in compose.group_options("recipe")
    spec = compose.compose_spec(["+recipe=three_tasks", "task.tasks.tickets.weight=2"])
    assert list(spec.task.tasks) == ["mrpc", "sst2", "tickets"]
    assert spec.task.tasks["mrpc"].data.text_pair_column == "#2 String"  # from glue_mrpc_local
    assert spec.task.tasks["sst2"].data.max_length == 64
    assert spec.task.tasks["tickets"].weight == 2 and spec.task.mixing == Mixing.temperature


@pytest.mark.slow
def test_explain_shows_each_tasks_data_and_share_of_batches() -> None:
    from ft_cli.commands import explain

    plan = explain.plan([*MULTI, "task.mixing=round_robin"])
    rows = {row[0]: row for row in plan.tasks}
    assert set(rows) == {"sentiment", "ner"}
    assert rows["sentiment"][1:4] == ["classification", "64", "32"]
    assert rows["ner"][4].endswith("(50.0%)") and rows["sentiment"][4].endswith("(50.0%)")
    assert plan.steps_per_epoch == 8  # (64 + 64 rows) / batch 16


def test_a_regression_task_trains_beside_classification(tmp_path: Path) -> None:
    from conftest import write_csv

    from ft_cli.config.schema import DataConfig, DataFormat

    rows = [{"text": f"score of {i % 5} stars", "score": float(i % 5)} for i in range(48)]
    train_file = write_csv(tmp_path / "scores.csv", rows)

    def add_regression(spec) -> None:
        data = DataConfig(format=DataFormat.csv, label_column="score", max_length=32)
        data.files.train = str(train_file)
        spec.task.tasks["stars"] = SubTaskConfig(kind="regression", data=data)

    result = run_multi(tmp_path / "run", ["~task.tasks.ner"], edit=add_regression)
    assert {"stars/pearson", "stars/mse", "sentiment/accuracy"} <= result.final.keys()
    expected = (result.final["sentiment/accuracy"] + result.final["stars/pearson"]) / 2
    assert result.final["score"] == pytest.approx(expected)
    manifest = json.loads((tmp_path / "run" / "model" / "multitask.json").read_text())
    assert manifest["tasks"]["stars"] == {"kind": "regression", "labels": None, "weight": 1.0}
