"""Multiple choice (SWAG-style): a score per choice, the right one by position or text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, compose_spec

from ft_cli.errors import FtError

COLORS = ["red", "blue", "green", "black"]


def _rows(count: int, labels_as_text: bool = False) -> list[dict]:
    """The right ending repeats the colour the context names; the others do not."""
    rows = []
    for i in range(count):
        endings = COLORS[i % 4 :] + COLORS[: i % 4]
        right = COLORS[(i + i // 4) % 4]  # at position (i // 4) % 4 of the endings
        rows.append(
            {
                "context": f"the ball is {right} .",
                "stem": "so it looks",
                **{f"ending{k}": e for k, e in enumerate(endings)},
                "label": right if labels_as_text else endings.index(right),
            }
        )
    return rows


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _overrides(tmp_path: Path, rows: list[dict], *extra: str) -> list[str]:
    return [
        "task=multiple_choice",
        "data=json",
        *TINY,
        f"data.files.train={_write(tmp_path / 'train.jsonl', rows)}",
        f"data.files.validation={_write(tmp_path / 'dev.jsonl', rows[:16])}",
        "data.text_column=context",
        "data.text_pair_column=stem",
        "data.choice_columns=[ending0,ending1,ending2,ending3]",
        *extra,
    ]


@pytest.mark.slow
def test_a_multiple_choice_run_trains_evaluates_and_predicts(tmp_path: Path) -> None:
    from ft_cli import cli

    run = tmp_path / "run"
    overrides = _overrides(tmp_path, _rows(48), "train.max_steps=4", f"hydra.run.dir={run}")
    assert cli.run_train(overrides) == 0
    record = json.loads((run / "metrics.json").read_text())
    assert set(record["best"]) == {"accuracy", "ece", "loss", "step"}
    assert 0 <= record["best"]["accuracy"] <= 1
    assert cli._run_tool("eval", [str(run)]) == 0
    again = json.loads((run / "eval_metrics.json").read_text())["metrics"]
    assert again["accuracy"] == pytest.approx(record["best"]["accuracy"])
    # Each choice is scored on its own: reversing a row's choices reverses its
    # probabilities, and the predicted text follows its choice.
    row = _rows(1)[0]
    flipped = {**row, **{f"ending{k}": row[f"ending{3 - k}"] for k in range(4)}}
    source = tmp_path / "rows.jsonl"
    _write(source, [row, flipped])
    target = tmp_path / "out.jsonl"
    assert (
        cli._run_tool("predict", [str(run), "--input", str(source), "--output", str(target)]) == 0
    )
    first, second = (json.loads(line) for line in target.read_text().splitlines())
    assert first["predicted_text"] == second["predicted_text"]
    assert second["predicted_choice"] == 3 - first["predicted_choice"]
    assert first["predicted_probability"] == pytest.approx(second["predicted_probability"])
    assert first["predicted_text"] == row[f"ending{first['predicted_choice']}"]


def test_the_right_choice_may_be_given_as_its_text(tmp_path: Path) -> None:
    from ft_cli.config.schema import DataConfig
    from ft_cli.tasks import multiple_choice

    rows = _rows(6, labels_as_text=True)
    choices = [[row[f"ending{k}"] for k in range(4)] for row in rows]
    given = multiple_choice.right_choices([r["label"] for r in rows], choices, "train", "label")
    by_position = [r["label"] for r in _rows(6)]
    assert given == by_position
    with pytest.raises(FtError, match=r"^data.label_column: row 0 of the train data \('label'"):
        multiple_choice.right_choices(["purple"], choices[:1], "train", "label")
    with pytest.raises(FtError, match=r"neither a choice's position \(0 to 3\)"):
        multiple_choice.right_choices([4], choices[:1], "train", "label")
    # One column of lists works as well as N columns; unequal counts are refused.
    cfg = DataConfig(choice_columns=["options"])
    listed = multiple_choice.choices_of(cfg, {"options": [["a", "b"], ["c", "d"]]}, "train")
    assert listed == [["a", "b"], ["c", "d"]]
    with pytest.raises(FtError, match=r"^data.choice_columns: the rows of the train data"):
        multiple_choice.choices_of(cfg, {"options": [["a", "b"], ["c"]]}, "train")


def test_missing_choice_settings_or_columns_are_one_line(tmp_path: Path) -> None:
    from ft_cli.training.engine import train

    rows = _rows(8)
    spec = compose_spec(
        [o for o in _overrides(tmp_path, rows) if not o.startswith("data.choice_columns")]
    )
    with pytest.raises(FtError, match=r"^data.choice_columns: task=multiple_choice reads"):
        train(spec, run_dir=tmp_path / "a")
    spec = compose_spec(_overrides(tmp_path, rows, "data.choice_columns=[ending0,ending4]"))
    with pytest.raises(
        FtError, match=r"^data.choice_columns\[1\]: column 'ending4' is not in the train data"
    ):
        train(spec, run_dir=tmp_path / "b")
