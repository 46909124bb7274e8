"""Learning-rate schedules and optimizer parameter groups."""

from __future__ import annotations

import itertools

import pytest
import torch

from ft_cli.config.schema import OptimizerConfig, OptimizerName, ScheduleConfig, ScheduleName
from ft_cli.training.optim import build_optimizer, build_scheduler, lr_factor, parameter_groups


def factors(cfg: ScheduleConfig, total: int) -> list[float]:
    f = lr_factor(cfg, total)
    return [f(step) for step in range(total)]


def test_linear_warms_up_then_decays_to_zero() -> None:
    values = factors(ScheduleConfig(name=ScheduleName.linear, warmup_ratio=0.1), 100)
    assert values[:10] == sorted(values[:10]) and values[9] < 1.0
    assert values[10] == 1.0
    assert values[-1] == pytest.approx(1 / 90)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


def test_warmup_steps_win_over_ratio() -> None:
    values = factors(
        ScheduleConfig(name=ScheduleName.constant, warmup_ratio=0.5, warmup_steps=3), 10
    )
    assert values[3:] == [1.0] * 7
    assert values[2] < 1.0


def test_cosine_reaches_its_floor() -> None:
    cfg = ScheduleConfig(name=ScheduleName.cosine, warmup_ratio=0.0, min_lr_ratio=0.1)
    f = lr_factor(cfg, 100)
    assert f(0) == 1.0
    assert f(50) == pytest.approx(0.55)
    assert f(100) == pytest.approx(0.1)


def test_exponential_multiplies_by_gamma() -> None:
    cfg = ScheduleConfig(name=ScheduleName.exponential, gamma=0.5)
    assert factors(cfg, 4) == [1.0, 0.5, 0.25, 0.125]


def test_scheduler_drives_the_optimizer_lr() -> None:
    layer = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(layer, OptimizerConfig(lr=1.0))
    scheduler = build_scheduler(optimizer, ScheduleConfig(name=ScheduleName.linear), 4)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_no_weight_decay_on_biases_and_layernorm() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    groups = {g["name"]: g for g in parameter_groups(model, 0.01, lr=1.0)}
    assert [p.shape for p in groups["all/decay"]["params"]] == [torch.Size([4, 4])]
    assert groups["all/decay"]["weight_decay"] == 0.01
    assert groups["all/no_decay"]["weight_decay"] == 0.0
    assert len(groups["all/no_decay"]["params"]) == 4  # two biases, LayerNorm weight and bias


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)],
)
def test_optimizer_choice(name: str, cls: type) -> None:
    optimizer = build_optimizer(
        torch.nn.Linear(2, 2), OptimizerConfig(name=OptimizerName(name), lr=0.1, momentum=0.9)
    )
    assert type(optimizer) is cls
