"""Bad input: one clear line naming the key, file or column, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_train, write_csv

from ft_cli.errors import FtError

ROWS = [
    {"text": f"row {i} is {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"}
    for i in range(20)
]


def csv_overrides(tmp_path: Path, train_rows=ROWS, validation_rows=ROWS) -> list[str]:
    train = write_csv(tmp_path / "train.csv", train_rows)
    validation = write_csv(tmp_path / "validation.csv", validation_rows)
    return [
        "data=csv",
        f"data.files.train={train}",
        f"data.files.validation={validation}",
        "train.max_steps=1",
    ]


def expect_error(tmp_path: Path, overrides: list[str], pattern: str) -> str:
    with pytest.raises(FtError, match=pattern) as caught:
        run_train(tmp_path, overrides)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_missing_data_file(tmp_path: Path) -> None:
    expect_error(
        tmp_path,
        ["data=csv", f"data.files.train={tmp_path / 'nope.csv'}"],
        r"^data.files.train: file '.*nope.csv' does not exist; set data.files.train to an existing file$",
    )


def test_missing_glue_file_names_data_path(tmp_path: Path) -> None:
    expect_error(
        tmp_path,
        ["data=glue_mrpc_local", f"data.path={tmp_path}"],
        r"^data.files.train: file '.*train.tsv' does not exist; set data.files.train or data.path",
    )


def test_column_not_in_data_lists_the_columns(tmp_path: Path) -> None:
    message = expect_error(
        tmp_path,
        [*csv_overrides(tmp_path), "data.text_column=txt"],
        r"^data.text_column: column 'txt' is not in the train data",
    )
    assert "(did you mean 'text'?); its columns are: text, label" in message


def test_label_outside_the_label_set(tmp_path: Path) -> None:
    bad = [*ROWS[:5], {"text": "odd one", "label": "maybe"}]
    expect_error(
        tmp_path,
        csv_overrides(tmp_path, validation_rows=bad),
        r"^data.label_column: label 'maybe' in column 'label' of the validation split \(row 5\)"
        r" is not in the label set \[neg, pos\]",
    )


def test_explicit_label_set_is_enforced_and_ordered(tmp_path: Path) -> None:
    expect_error(
        tmp_path,
        [*csv_overrides(tmp_path), "task.labels=[pos,neutral]"],
        r"label 'neg' in column 'label' of the train split \(row 0\) is not in the label set \[pos, neutral\]",
    )
    result = run_train(tmp_path, [*csv_overrides(tmp_path), "task.labels=[pos,neg]"])
    assert result.model.config.id2label == {0: "pos", 1: "neg"}


def test_single_class_is_refused(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": "x"}] * 4
    expect_error(tmp_path, csv_overrides(tmp_path, rows, rows), r"classification needs at least 2")


def test_regression_needs_numbers(tmp_path: Path) -> None:
    expect_error(
        tmp_path,
        [*csv_overrides(tmp_path), "task=regression"],
        r"^data.label_column: value 'neg' in column 'label' of the train split \(row 0\) is not a number",
    )


def test_empty_split(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("text,label\n")
    train = write_csv(tmp_path / "train.csv", ROWS)
    expect_error(
        tmp_path,
        [
            "data=csv",
            f"data.files.train={train}",
            f"data.files.validation={tmp_path / 'empty.csv'}",
        ],
        r"^data: the validation split is empty",
    )


def test_hub_model_unreachable_offline(tmp_path: Path) -> None:
    expect_error(
        tmp_path,
        [*csv_overrides(tmp_path), "model=bert_base_uncased"],
        r"^model.name_or_path: 'bert-base-uncased' is not a local path, not in the Hugging Face cache,"
        r" and the hub cannot be reached \(offline\?\); use a local folder .* or the packaged model=minilm_l6$",
    )


def test_hub_dataset_unreachable_offline(tmp_path: Path) -> None:
    expect_error(
        tmp_path,
        ["data=glue_mrpc"],
        r"^data.hub_path: 'nyu-mll/glue/mrpc' is not a local path, .* use local files instead \(data=glue_mrpc_local",
    )


def test_missing_local_model_folder(tmp_path: Path) -> None:
    expect_error(
        tmp_path,
        [
            *csv_overrides(tmp_path),
            f"model.name_or_path={tmp_path / 'no_model'}",
            "model.init=pretrained",
        ],
        r"^model.name_or_path: folder '.*no_model' does not exist",
    )


def test_fp16_needs_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    expect_error(
        tmp_path,
        [*csv_overrides(tmp_path), "hardware.precision=fp16"],
        r"^hardware.precision=fp16 needs a CUDA GPU \(none in use\); use hardware.precision=bf16 or fp32 on CPU$",
    )


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.batch_size=0", r"^train.batch_size=0 must be at least 1$"),
        (
            "strategy=freeze_layers strategy.frozen_layers=7",
            r"^strategy.frozen_layers=7 is out of range",
        ),
        (
            "train.early_stopping.metric=pearson",
            r"'pearson' is not a classification metric; valid metrics: accuracy",
        ),
        ("data.validation_fraction=1.5", r"^data.validation_fraction=1.5 must be in \[0, 1\)$"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, override: str, pattern: str) -> None:
    expect_error(tmp_path, [*csv_overrides(tmp_path), *override.split()], pattern)


def test_bad_run_writes_no_model(tmp_path: Path) -> None:
    with pytest.raises(FtError):
        run_train(tmp_path, [*csv_overrides(tmp_path), "data.text_column=txt"])
    assert not (tmp_path / "run" / "model").exists()
    assert (
        not (tmp_path / "run" / "metrics.json").exists()
        or json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] != "completed"
    )
