"""Fine-tuning strategies, checked parameter by parameter."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import run_train
from safetensors.torch import load_file

from ft_cli.config.schema import (
    LoraSettings,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    StrategyConfig,
    StrategyKind,
    UnfreezeUnit,
)
from ft_cli.errors import FtError
from ft_cli.models.model import load_model
from ft_cli.strategies import layers as strategy
from ft_cli.strategies import lora, regularize
from ft_cli.strategies.distill import DistillObjective
from ft_cli.tasks.objective import Objective
from ft_cli.training import optim


def pretrained(tiny_pretrained: Path) -> list[str]:
    return [f"model.name_or_path={tiny_pretrained}", "model.init=pretrained"]


def classifier(path: Path | str, dropout: float | None = None):
    cfg = ModelConfig(name_or_path=str(path))
    return load_model(cfg, "classification", ["a", "b"], 176, dropout)


def trainable_groups(model) -> set[str]:
    return {strategy.group_of(n) for n, p in model.named_parameters() if p.requires_grad}


def test_gradual_unfreeze_opens_one_group_per_stage(tiny_pretrained: Path) -> None:
    model, _ = classifier(tiny_pretrained)
    cfg = StrategyConfig(
        kind=StrategyKind.gradual_unfreeze, unfreeze_every=3, unfreeze_unit=UnfreezeUnit.steps
    )
    applied = strategy.apply_strategy(model, cfg)
    expected = [
        {"head"},
        {"head", "layer.1"},
        {"head", "layer.1", "layer.0"},
        {"head", "layer.1", "layer.0", "embeddings"},
    ]
    for step in range(14):
        applied.update(model, step, epoch=0)
        assert trainable_groups(model) == expected[min(step // 3, 3)], step
        frozen_layers = [i for i in (0, 1) if f"layer.{i}" in applied.frozen_groups]
        layers = strategy.encoder_layers(model)
        applied.train_mode(model)
        assert all(not layers[i].training for i in frozen_layers)
    assert strategy.unfreeze_steps(applied, steps_per_epoch=5, total_steps=20) == [3, 6, 9]


def test_gradual_unfreeze_in_training_keeps_closed_groups_unchanged(
    tmp_path: Path, tiny_pretrained: Path
) -> None:
    result = run_train(
        tmp_path,
        [
            *pretrained(tiny_pretrained),
            "strategy=gradual_unfreeze",
            "strategy.unfreeze_every=2",
            "strategy.unfreeze_unit=steps",
            "train.max_steps=7",
            "train.save_every=1",
            "train.keep_checkpoints=100",
            "optimizer.lr=1e-2",
        ],
    )
    start = {f"bert.{k}": v for k, v in load_file(tiny_pretrained / "model.safetensors").items()}
    opens = {"layer.1": 2, "layer.0": 4, "embeddings": 6}  # optimizer steps before it trains
    for step in range(1, 8):
        weights = load_file(
            result.run_dir / "checkpoints" / f"step-{step:08d}" / "model.safetensors"
        )
        for group, opened in opens.items():
            names = [n for n in start if strategy.group_of(n) == group and n.endswith("weight")]
            changed = any(not torch.equal(weights[n], start[n]) for n in names)
            assert changed == (step > opened), (group, step)
    record = json.loads((result.run_dir / "strategy.json").read_text())
    assert record["unfreeze_steps"] == [2, 4, 6]


def test_llrd_group_rates_are_lr_times_decay_to_the_depth(tiny_pretrained: Path) -> None:
    model, _ = classifier(tiny_pretrained)
    optimizer = optim.build_optimizer(model, OptimizerConfig(lr=1e-3), lr_decay=0.5)
    scheduler = optim.build_scheduler(optimizer, ScheduleConfig(warmup_steps=2), total_steps=10)
    depth = {"head": 0, "layer.1": 1, "layer.0": 2, "embeddings": 3}
    names = {id(p): n for n, p in model.named_parameters()}
    for _ in range(6):
        head_lr = next(g["lr"] for g in optimizer.param_groups if g["name"].startswith("head"))
        for group in optimizer.param_groups:
            groups = {strategy.group_of(names[id(p)]) for p in group["params"]}
            assert len(groups) == 1
            (layer,) = groups
            assert group["lr"] == pytest.approx(head_lr * 0.5 ** depth[layer], rel=1e-12)
        optimizer.step()
        scheduler.step()
    assert {g["name"].split("/")[0] for g in optimizer.param_groups} == set(depth)


def test_lora_trains_the_analytic_parameter_count_and_merges_exactly(
    tmp_path: Path, tiny_pretrained: Path
) -> None:
    from peft import PeftModel

    model, _ = classifier(tiny_pretrained)
    settings = LoraSettings(r=4, target_modules=["query", "value"])
    wrapped = lora.apply_lora(copy.deepcopy(model), settings)
    adapted = [m for n, m in model.named_modules() if n.endswith(("query", "value"))]
    head = list(model.classifier.parameters()) + list(model.bert.pooler.parameters())
    expected = sum(4 * (m.in_features + m.out_features) for m in adapted)
    expected += sum(p.numel() for p in head)
    assert strategy.parameter_counts(wrapped)[0] == expected

    result = run_train(
        tmp_path,
        [
            *pretrained(tiny_pretrained),
            "strategy=lora",
            "strategy.lora.r=4",
            "strategy.lora.keep_adapter=true",
            "optimizer.lr=5e-2",
            "train.epochs=2",
        ],
    )
    from transformers import AutoModelForSequenceClassification

    merged = AutoModelForSequenceClassification.from_pretrained(result.run_dir / "model").eval()
    base, _ = classifier(tiny_pretrained)
    adapter = PeftModel.from_pretrained(base, result.run_dir / "adapter").eval()
    lora_b = [p for n, p in adapter.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # the adapters did train
    ids = torch.tensor([[2, 10, 20, 30, 40, 3]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapter(input_ids=ids).logits)
    assert not any("lora" in k for k in load_file(result.run_dir / "model" / "model.safetensors"))


def test_l2sp_penalty_is_zero_at_start_and_its_gradient_is_alpha_drift(
    tiny_pretrained: Path,
) -> None:
    model, new = classifier(tiny_pretrained)
    assert new == {"classifier.weight", "classifier.bias"}
    cfg = StrategyConfig(kind=StrategyKind.l2sp, l2sp_alpha=0.3, l2sp_beta=0.0)
    penalty = regularize.Penalty(model, cfg, new)
    assert float(penalty().detach()) == 0.0
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.zero_grad()
    penalty().backward()
    for name, param in model.named_parameters():
        if name in new:
            assert param.grad is None or not param.grad.any()  # beta = 0
        else:
            torch.testing.assert_close(param.grad, 0.3 * (param.detach() - start[name]))
    beta = regularize.Penalty(model, StrategyConfig(kind=StrategyKind.l2sp, l2sp_beta=0.2), new)
    model.zero_grad()
    beta().backward()
    expected = 0.2 * model.classifier.weight.detach()
    torch.testing.assert_close(model.classifier.weight.grad, expected)


def test_distill_from_an_identical_teacher_has_zero_loss(tiny_pretrained: Path) -> None:
    student, _ = classifier(tiny_pretrained, dropout=0.0)
    teacher = copy.deepcopy(student).eval()
    cfg = StrategyConfig(kind=StrategyKind.distill, distill_alpha=1.0, temperature=3.0)
    objective = DistillObjective(Objective(student, "classification", 2, 0, False), teacher, cfg)
    student.train()
    batch = {
        "input_ids": torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "labels": torch.tensor([0, 1]),
        "row_index": torch.tensor([0, 1]),
    }
    logits, labels = objective.outputs(dict(batch))
    assert float(objective.loss(logits, labels).detach()) == pytest.approx(0.0, abs=1e-6)
    assert set(objective.cache) == {0, 1}  # teacher logits kept per example


@pytest.mark.slow
def test_distill_moves_the_student_toward_the_teacher(
    tmp_path: Path, tiny_pretrained: Path
) -> None:
    teacher_run = run_train(tmp_path / "teacher", ["optimizer.lr=1e-2", "train.epochs=3"])
    student = run_train(
        tmp_path / "student",
        [
            *pretrained(tiny_pretrained),
            "strategy=distill",
            f"strategy.teacher.from_run={teacher_run.run_dir}",
            "strategy.distill_alpha=1.0",
            "optimizer.lr=1e-2",
            "train.epochs=3",
            "train.export=last",
        ],
    )
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_run.run_dir / "model")
    torch.manual_seed(42)  # the student's head as the run initialised it
    before, _ = classifier(tiny_pretrained)
    ids = torch.randint(5, 176, (64, 12))

    def gap(model) -> float:
        with torch.no_grad():
            t = torch.log_softmax(teacher.eval()(input_ids=ids).logits, -1)
            s = torch.log_softmax(model.eval()(input_ids=ids).logits, -1)
        return float(torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean"))

    assert gap(student.model.cpu()) < 0.5 * gap(before)


def test_strategy_json_and_table_show_what_trains(
    tmp_path: Path, tiny_pretrained: Path, capsys
) -> None:
    result = run_train(
        tmp_path,
        [
            *pretrained(tiny_pretrained),
            "strategy=llrd",
            "strategy.lr_decay=0.5",
            "optimizer.lr=1e-3",
            "train.max_steps=1",
        ],
    )
    record = json.loads((result.run_dir / "strategy.json").read_text())
    rows = {row["group"]: row for row in record["groups"]}
    assert rows["layer.0"]["lr"] == pytest.approx(1e-3 * 0.25)
    assert rows["embeddings"]["lr"] == pytest.approx(1e-3 * 0.125)
    total = sum(p.numel() for p in result.model.parameters())
    assert sum(r["trainable"] + r["frozen"] for r in rows.values()) == total
    out = capsys.readouterr().out
    assert "strategy llrd" in out and "layer group" in out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["strategy=distill"], "strategy=distill needs a teacher"),
        (
            ["strategy=distill", "strategy.teacher.from_run=/nope"],
            "strategy.teacher.from_run: '/nope'",
        ),
        (
            ["strategy=freeze_layers", "strategy.frozen_layer_ids=[5]"],
            "strategy.frozen_layer_ids: layer 5 does not exist",
        ),
        (
            ["strategy=freeze_layers", "strategy.frozen_pattern=zzz"],
            "strategy.frozen_pattern: 'zzz' matches no parameter",
        ),
        (
            ["strategy=lora", "strategy.lora.target_modules=[nope]"],
            "matches no layer that can take an adapter",
        ),
        (["strategy=l2sp"], "strategy=l2sp regularises toward pretrained weights"),
        (
            ["strategy=gradual_unfreeze", "strategy.unfreeze_every=0"],
            "strategy.unfreeze_every=0 must be at least 1",
        ),
    ],
)
def test_bad_strategy_settings_fail_with_the_key(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(FtError) as err:
        run_train(tmp_path, overrides)
    assert message in str(err.value)


def test_label_smoothing_and_dropout_knobs(tiny_pretrained: Path) -> None:
    from ft_cli.tasks.metrics import task_loss

    logits, labels = torch.tensor([[4.0, -4.0]]), torch.tensor([0])
    plain = task_loss("classification", logits, labels)
    smoothed = task_loss("classification", logits, labels, label_smoothing=0.2)
    assert float(smoothed) > float(plain)
    model, _ = classifier(tiny_pretrained, dropout=0.25)
    assert model.config.hidden_dropout_prob == 0.25
    assert model.config.attention_probs_dropout_prob == 0.25


def test_rewarm_restarts_the_warmup_after_each_unfreeze() -> None:
    cfg = ScheduleConfig(name="constant", warmup_steps=0)
    factor = optim.lr_factor(cfg, total_steps=20, restarts=[5, 10], rewarm_steps=3)
    values = [factor(step) for step in range(14)]
    assert values[:5] == [1.0] * 5
    assert values[5:9] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[10:14] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert optim.lr_factor(cfg, 20, restarts=[5], rewarm_steps=0)(5) == 1.0


def test_gradual_unfreeze_composes_with_layer_wise_decay(
    tmp_path: Path, tiny_pretrained: Path
) -> None:
    result = run_train(
        tmp_path,
        [
            *pretrained(tiny_pretrained),
            "strategy=gradual_unfreeze",
            "strategy.lr_decay=0.5",
            "optimizer.lr=1e-3",
            "train.max_steps=2",
        ],
    )
    record = json.loads((result.run_dir / "strategy.json").read_text())
    rows = {row["group"]: row for row in record["groups"]}
    assert rows["layer.1"]["frozen"] > 0 and rows["layer.1"]["trainable"] == 0
    assert rows["layer.1"]["lr"] == pytest.approx(5e-4)  # in the optimizer, waiting to open
    assert rows["embeddings"]["lr"] == pytest.approx(1.25e-4)


def test_plain_penalties_and_regression_distillation(tiny_pretrained: Path) -> None:
    model, new = classifier(tiny_pretrained)
    penalty = regularize.Penalty(model, StrategyConfig(l1=0.1, l2=0.2), new)
    model.zero_grad()
    penalty().backward()
    weight = model.classifier.weight
    torch.testing.assert_close(weight.grad, 0.1 * weight.detach().sign() + 0.2 * weight.detach())

    student = torch.nn.Linear(3, 1)
    cfg = StrategyConfig(kind=StrategyKind.distill, distill_alpha=1.0)
    objective = DistillObjective(Objective(student, "regression", 1, 0, False), student, cfg)
    objective.teacher_logits = torch.tensor([[1.0], [3.0]])
    loss = objective.loss(torch.tensor([[2.0], [2.0]]), torch.tensor([0.0, 0.0]))
    assert float(loss) == pytest.approx(1.0)  # MSE to the teacher's outputs only


def test_strategies_that_need_no_layers_work_on_any_model() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    applied = strategy.apply_strategy(model, StrategyConfig(kind=StrategyKind.llrd))
    assert not applied.frozen_groups and all(p.requires_grad for p in model.parameters())
    with pytest.raises(FtError, match="cannot find the 0 encoder layers of Sequential"):
        strategy.apply_strategy(model, StrategyConfig(kind=StrategyKind.freeze_layers))


@pytest.mark.parametrize("kind", ["full", "gradual_unfreeze"])
def test_frozen_word_embeddings_stay_as_loaded_and_the_rest_trains(
    tmp_path: Path, tiny_pretrained: Path, kind: str
) -> None:
    result = run_train(
        tmp_path,
        [
            *pretrained(tiny_pretrained),
            f"strategy={kind}",
            "strategy.freeze_word_embeddings=true",
            "strategy.unfreeze_every=1",
            "strategy.unfreeze_unit=steps",
            "train.max_steps=6",
            "optimizer.lr=1e-2",
            "train.export=last",
        ],
    )
    start = {f"bert.{k}": v for k, v in load_file(tiny_pretrained / "model.safetensors").items()}
    end = load_file(result.run_dir / "model" / "model.safetensors")
    word = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(end[word], start[word])
    moved = [n for n in start if n != word and n in end and not torch.equal(end[n], start[n])]
    assert "bert.embeddings.position_embeddings.weight" in moved  # the group itself trained
    assert "bert.encoder.layer.0.attention.self.query.weight" in moved
    if kind == "full":  # (gradual unfreezing records its start: all embeddings closed)
        record = json.loads((result.run_dir / "strategy.json").read_text())
        embeddings = next(g for g in record["groups"] if g["group"] == "embeddings")
        assert embeddings["frozen"] == start[word].numel()
