"""ft explain: its numbers are the ones training then uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY
from test_train import scalars

from ft_cli import cli
from ft_cli.commands import explain

SETTINGS = [
    *TINY,
    "+recipe=demo",
    "strategy=llrd",
    "strategy.lr_decay=0.5",
    "train.grad_accum=2",
    "train.batch_size=8",
    "optimizer.lr=2e-3",
    "schedule=cosine",
]


@pytest.mark.slow
def test_explain_predicts_what_training_does(tmp_path: Path) -> None:
    plan = explain.plan(SETTINGS)
    run = tmp_path / "run"
    assert cli.run_train([*SETTINGS, f"hydra.run.dir={run}"]) == 0

    record = json.loads((run / "strategy.json").read_text())
    assert plan.strategy["groups"] == record["groups"]
    assert plan.strategy["optimizer_groups"] == record["optimizer_groups"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert plan.total_steps == metrics["steps"] == 2 * plan.steps_per_epoch
    assert plan.train_rows == 96 and plan.effective_batch == 16
    logged = dict(scalars(run, "train/lr"))
    assert len(plan.lr_at) >= 3
    for step, lr in plan.lr_at.items():
        assert logged[step] == pytest.approx(lr, rel=1e-6), step


def test_explain_names_where_each_value_came_from() -> None:
    origins = {key: (value, where) for key, value, where in explain.value_origins(SETTINGS)}
    assert origins["optimizer.lr"] == ("0.002", "command line")
    assert origins["train.epochs"] == ("2", "recipe demo")  # the recipe's, not overridden
    assert origins["data.format"] == ("csv", "configs/data/demo.yaml")
    assert origins["strategy.lr_decay"] == ("0.5", "command line")
    assert origins["schedule.name"][1] == "configs/schedule/cosine.yaml"
    assert "train.seed" not in origins  # the schema default: not listed
    ner = {key: where for key, _, where in explain.value_origins(["+recipe=demo_ner"])}
    assert ner["task.kind"] == "configs/task/token_classification.yaml (chosen by recipe demo_ner)"
    assert ner["train.batch_size"] == "recipe demo_ner"


def test_explain_prints_its_tables(capsys) -> None:
    assert cli._run_tool("explain", SETTINGS) == 0
    out = capsys.readouterr().out
    for heading in (
        "values that differ",
        "strategy llrd",
        "optimizer groups",
        "total steps",
        "learning rate over the steps",
        "memory per step",
    ):
        assert heading in out
    assert cli._run_tool("explain", ["optimizer.lrr=1"]) == 2
    assert "unknown key 'optimizer.lrr'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_repeated_explain_is_remembered_until_its_inputs_change(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from conftest import write_csv

    monkeypatch.setenv("FT_CACHE_DIR", str(tmp_path / "cache"))
    rows = [{"text": f"row {i} {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(40)]
    data = tmp_path / "train.csv"
    write_csv(data, rows)
    settings = [
        *TINY,
        "+recipe=demo",
        f"data.path={tmp_path}",
        "data.files.train=train.csv",
        "data.files.validation=null",
        "data.files.test=null",
    ]
    built = []
    real_plan = explain.plan
    monkeypatch.setattr(explain, "plan", lambda o: built.append(o) or real_plan(o))

    first = explain.remembered_plan(settings)
    again = explain.remembered_plan(settings)
    assert len(built) == 1 and again == first  # read back, every field equal
    assert explain.remembered_plan(settings, fresh=True) == first and len(built) == 2
    write_csv(data, rows + rows[:8])  # the data changed: built again, and it shows
    changed = explain.remembered_plan(settings)
    assert len(built) == 3 and changed.train_rows > first.train_rows
    explain.remembered_plan([*settings, "train.batch_size=4"])  # another config
    assert len(built) == 4
    for entry in (tmp_path / "cache" / "plans").iterdir():
        entry.write_text("{damaged")
    assert explain.remembered_plan(settings) == changed and len(built) == 5
    with pytest.raises(SystemExit) as stop:
        cli.main(["explain", *settings])
    assert stop.value.code == 0
    assert "steps per epoch" in capsys.readouterr().out and len(built) == 5


def test_options_chosen_as_a_list_are_credited_to_their_own_files() -> None:
    from ft_cli.commands.explain import value_origins

    origins = {
        key: source
        for key, _, source in value_origins(
            ["model=tiny_bert", "logger=[tensorboard,mlflow]", "augment=[token_mask,mixup]"]
        )
    }
    assert origins["logger.tensorboard.enabled"] == "configs/logger/tensorboard.yaml"
    assert origins["logger.mlflow.enabled"] == "configs/logger/mlflow.yaml"
    assert origins["augment.token_mask"] == "configs/augment/token_mask.yaml"
    assert origins["augment.mixup"] == "configs/augment/mixup.yaml"
