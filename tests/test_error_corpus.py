"""The regression corpus of bad input: every case exits 2 with one line on stderr, no
traceback, and leaves the files of the run dir it points at exactly as they were.

Each case runs the real `ft` entry point in-process against a finished tiny run
(built once for the module); a snapshot of that run dir (every file's bytes)
is compared before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY, write_csv

from ft_cli import cli
from ft_cli.errors import FtError

ROWS = [
    {"text": f"row {i} is {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"}
    for i in range(24)
]


def run_ft(args: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        cli.main(args)
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    return code, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "ft.log"  # Hydra's own log, appended to by any call
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (model/, checkpoints, metrics, Hydra's record)."""
    run = tmp_path_factory.mktemp("corpus") / "run"
    code = cli.run_train([*TINY, "train.max_steps=2", f"hydra.run.dir={run}"])
    assert code == 0
    return run


@pytest.fixture
def files(tmp_path: Path) -> Path:
    write_csv(tmp_path / "train.csv", ROWS)
    write_csv(tmp_path / "validation.csv", ROWS[:8])
    return tmp_path


def _csv(files: Path, **names: str) -> list[str]:
    train = names.get("train", "train.csv")
    return [
        "data=csv",
        f"data.files.train={files / train}",
        f"data.files.validation={files / names.get('validation', 'validation.csv')}",
    ]


def _write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


# Each case: (class, setup(files) -> extra train args, expected fragment of the message).
Case = tuple[str, Callable[[Path], list[str]], str]

TRAIN_CASES: dict[str, Case] = {
    # Loggers: an unknown one, and a password that would be saved with the run.
    "logger_misspelt": (
        "override",
        lambda f: ["logger=mlfow"],
        "unknown logger option 'mlfow' in 'logger=mlfow' (did you mean 'mlflow'?)",
    ),
    "mlflow_uri_with_password": (
        "override",
        lambda f: ["logger=mlflow", "logger.mlflow.tracking_uri=https://me:secret@mlflow.example"],
        "logger.mlflow.tracking_uri holds a password, which would be saved with the run",
    ),
    # Values torch would reject with a traceback.
    "lr_negative": (
        "range",
        lambda f: ["optimizer.lr=-1"],
        "optimizer.lr=-1 must be greater than 0",
    ),
    "eps_negative": (
        "range",
        lambda f: ["optimizer.eps=-1"],
        "optimizer.eps=-1 must be greater than 0",
    ),
    "dropout_above_1": (
        "range",
        lambda f: ["strategy.dropout=1.5"],
        "strategy.dropout=1.5 must be in [0, 1)",
    ),
    "label_smoothing_2": (
        "range",
        lambda f: ["strategy.label_smoothing=2"],
        "strategy.label_smoothing=2 must be in [0, 1)",
    ),
    "one_beta": (
        "range",
        lambda f: ["optimizer.betas=[0.9]"],
        "optimizer.betas=[0.9] must be 2 values",
    ),
    "threads_0": (
        "range",
        lambda f: ["hardware.num_threads=0"],
        "hardware.num_threads=0 must be at least 1",
    ),
    "max_length_beyond_positions": (
        "range",
        lambda f: ["data.max_length=512"],
        "data.max_length=512 is longer than",
    ),
    # Values accepted silently before, that broke training.
    "max_grad_norm_negative": (
        "range",
        lambda f: ["train.max_grad_norm=-1"],
        "train.max_grad_norm=-1 must be greater than 0",
    ),
    "gamma_negative": (
        "range",
        lambda f: ["schedule=exponential", "schedule.gamma=-1"],
        "schedule.gamma=-1 must be in (0, 1]",
    ),
    "warmup_ratio_2": (
        "range",
        lambda f: ["schedule.warmup_ratio=2"],
        "schedule.warmup_ratio=2 must be in [0, 1]",
    ),
    "patience_negative": (
        "range",
        lambda f: ["train.early_stopping.patience=-1"],
        "patience=-1 must be at least 1",
    ),
    "min_delta_negative": (
        "range",
        lambda f: ["train.early_stopping.min_delta=-0.5"],
        "min_delta=-0.5 must be at least 0",
    ),
    "eval_every_without_validation": (
        "range",
        lambda f: [
            "data=csv",
            f"data.files.train={f / 'train.csv'}",
            "data.validation_fraction=0",
            "train.eval_every=5",
        ],
        "train.eval_every=5 needs validation data",
    ),
    # Files read as written, and errors that name the cause.
    "not_utf8": ("file", lambda f: _csv(f, train=_latin1(f)), "line 2 of"),
    "extra_tab_shifts_columns": (
        "file",
        lambda f: ["data=tsv", f"data.files.train={_extra_tab(f)}"],
        "line 3 of",
    ),
    "bad_json_line": (
        "file",
        lambda f: ["data=json", f"data.files.train={_bad_json(f)}"],
        "line 2 of",
    ),
    "folder_for_a_file": (
        "file",
        lambda f: ["data=csv", f"data.files.train={f}"],
        "is a folder, not a file",
    ),
    "comma_file_as_tsv": (
        "file",
        lambda f: ["data=tsv", f"data.files.train={f / 'train.csv'}"],
        "is the file comma-separated",
    ),
    "words_as_plain_strings": (
        "file",
        lambda f: ["task=token_classification", "data=json", f"data.files.train={_plain_words(f)}"],
        "needs a list of words per row",
    ),
    "one_class_in_train": (
        "file",
        lambda f: _csv(f, train=write_csv(f / "one.csv", [{"text": "a", "label": "pos"}] * 4).name),
        "the train split has 1 distinct label(s) (pos); classification needs at least 2",
    ),
    "model_folder_without_config": (
        "file",
        lambda f: [f"model.name_or_path={f}", "model.init=pretrained"],
        "holds no model (no config.json)",
    ),
    "lr_not_a_number": (
        "range",
        lambda f: ["optimizer.lr=nan"],
        "optimizer.lr=nan must be a finite number greater than 0",
    ),
    "pickled_weights": (
        "file",
        lambda f: _pickled_model(f),
        "a pickle that would run code when loaded, refused",
    ),
    # Overrides the grammar refuses: say how to quote.
    "non_ascii_value": (
        "override",
        lambda f: ["data.text_column=wörter"],
        """quote a value with spaces, quotes or non-ASCII letters: 'data.text_column="wörter"'""",
    ),
    # Values of the newer groups.
    "labels_listed_twice": (
        "range",
        lambda f: ["task.labels=[neg,neg]"],
        "task.labels: 'neg' is listed 2 times; list each class once",
    ),
    "class_weights_longer_than_labels": (
        "range",
        lambda f: ["task.labels=[neg,pos]", "task.class_weights=[1,2,3]"],
        "task.class_weights lists 3 weight(s) for the 2 classes of task.labels",
    ),
    "class_weights_unknown_label": (
        "range",
        lambda f: ["task.labels=[neg,pos]", "+task.class_weights.maybe=2"],
        "task.class_weights: label 'maybe' is not in task.labels (neg, pos)",
    ),
    "class_weights_on_regression": (
        "range",
        lambda f: ["task=regression", "task.class_weights=[1,2]"],
        "task.class_weights is for classification and token_classification",
    ),
    "augment_probability_1": (
        "range",
        lambda f: ["augment=token_mask", "augment.token_mask=1"],
        "augment.token_mask=1 must be in [0, 1)",
    ),
    "mixup_nan": ("range", lambda f: ["augment.mixup=nan"], "augment.mixup=nan must be a finite"),
    "multitask_weight_negative": (
        "range",
        lambda f: ["+recipe=demo_multitask", "task.tasks.sentiment.weight=-1"],
        "task.tasks.sentiment.weight=-1 must be greater than 0",
    ),
    "multitask_temperature_0": (
        "range",
        lambda f: ["+recipe=demo_multitask", "task.temperature=0"],
        "task.temperature=0 must be greater than 0",
    ),
    "multitask_share_infinite": (
        "range",
        lambda f: ["+recipe=demo_multitask", "task.mixing=weights", "task.tasks.ner.share=inf"],
        "task.tasks.ner.share=inf must be a finite number greater than 0",
    ),
    "multitask_data_missing": (
        "range",
        lambda f: ["+recipe=demo_multitask", "task.tasks.sentiment.data.files.train=null"],
        "task.tasks.sentiment.data.files.train is required",
    ),
    "multitask_task_added_from_the_shell": (
        "override",
        lambda f: ["+recipe=demo_multitask", "+task.tasks.extra={kind:classification}"],
        "task.tasks.extra: a task cannot be added from the command line",
    ),
    # Tracking URIs: credentials anywhere in them would be saved with the run.
    "mlflow_uri_with_token": (
        "override",
        lambda f: [
            "logger=mlflow",
            'logger.mlflow.tracking_uri="https://mlflow.example/?token=s3cr3t"',
        ],
        "logger.mlflow.tracking_uri holds a credential (query parameter 'token')",
    ),
    "mlflow_uri_with_api_key": (
        "override",
        lambda f: [
            "logger=mlflow",
            'logger.mlflow.tracking_uri="https://m.example/x?api_key=s3cr3t"',
        ],
        "(query parameter 'api_key')",
    ),
    "duplicate_column_names": (
        "file",
        lambda f: _csv(f, train=_write(f / "dup.csv", "text,text,label\na,b,pos\nc,d,neg\n").name),
        "has two columns named 'text'; rename one",
    ),
    # Data and disks.
    "missing_data_file": (
        "disk",
        lambda f: ["data=csv", f"data.files.train={f / 'nope.csv'}"],
        "does not exist",
    ),
}


def _latin1(folder: Path) -> str:
    return _write(folder / "latin.csv", "text,label\ncaf\xe9 ok,pos\n".encode("latin-1")).name


def _extra_tab(folder: Path) -> Path:
    return _write(folder / "t.tsv", "text\tlabel\na\tpos\nb\tx\tneg\n")


def _bad_json(folder: Path) -> Path:
    return _write(folder / "d.jsonl", '{"text": "a", "label": "x"}\n{"text": oops}\n')


def _plain_words(folder: Path) -> Path:
    row = {"text": "John lives here", "label": "B-PER O O"}
    return _write(folder / "n.jsonl", json.dumps(row) + "\n")


def _pickled_model(folder: Path) -> list[str]:
    import torch
    from transformers import AutoConfig, AutoModel

    from ft_cli.paths import resolve_path

    source = Path(resolve_path("pkg:ft_cli/assets/tiny_bert", "model"))
    target = folder / "pickled"
    shutil.copytree(source, target)
    state = dict(AutoModel.from_config(AutoConfig.from_pretrained(source)).state_dict())
    state["payload"] = _Payload(folder / "pwned")
    torch.save(state, target / "pytorch_model.bin")
    return [f"model.name_or_path={target}", "model.init=pretrained"]


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", sorted(TRAIN_CASES))
def test_train_corpus(name: str, finished: Path, files: Path, capsys) -> None:
    kind, setup, expected = TRAIN_CASES[name]
    before = snapshot(finished)
    args = ["train", *TINY, *setup(files), f"hydra.run.dir={finished}", "resume=auto"]
    code, err = run_ft(args, capsys)
    assert code == 2, (kind, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ft: error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(finished) == before
    assert not (files / "pwned").exists()
    assert "s3cr3t" not in err


def test_a_finished_run_is_not_trained_over(finished: Path, capsys) -> None:
    before = snapshot(finished)
    code, err = run_ft(["train", *TINY, "train.max_steps=2", f"hydra.run.dir={finished}"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "already holds a run (completed, 2 steps); continue it with resume=auto" in err
    assert "overwrite=true" in err
    assert snapshot(finished) == before


def test_a_second_writer_is_refused(finished: Path, capsys) -> None:
    from ft_cli.rundir import ownership

    lock = finished / ownership.LOCK
    import socket

    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "now"}
    lock.write_text(json.dumps(holder))
    try:
        before = snapshot(finished)
        code, err = run_ft(["train", *TINY, f"hydra.run.dir={finished}", "resume=auto"], capsys)
        assert code == 2 and err.count("\n") == 1
        assert f"is in use by process {os.getppid()}" in err and "delete" in err
        assert snapshot(finished) == before
    finally:
        lock.unlink()


def test_a_stale_lock_is_taken_over(tmp_path: Path, capsys) -> None:
    import socket

    from ft_cli.rundir import ownership

    run = tmp_path / "run"
    run.mkdir()
    dead_pid = 2**22 + 12345  # above the kernel's largest pid: never alive
    (run / ownership.LOCK).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname()}))
    capsys.readouterr()
    try:
        cli.main(["train", *TINY, "train.max_steps=1", f"hydra.run.dir={run}"])
    except SystemExit as stop:
        assert stop.code == 0
    out = capsys.readouterr()
    assert f"its process {dead_pid} is gone; taking it over" in out.out + out.err
    assert not (run / ownership.LOCK).exists()  # released at the end
    assert (run / "model" / "config.json").is_file()


def test_unusable_checkpoints_are_moved_aside_not_deleted(
    finished: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for manifest in (run / "checkpoints").glob("step-*/manifest.json"):
        manifest.unlink()  # every checkpoint lacks its manifest; weights intact
    weights = {
        p.parent.name: p.read_bytes()
        for p in (run / "checkpoints").glob("step-*/model.safetensors")
    }
    assert weights
    before = snapshot(run)
    # model/ is there: starting fresh would replace it, so resume=auto refuses ...
    code, err = run_ft(["train", *TINY, f"hydra.run.dir={run}", "resume=auto"], capsys)
    assert code == 2 and "no usable checkpoint" in err and "overwrite=true" in err
    assert snapshot(run) == before
    # ... and without model/, it starts fresh with the old checkpoints kept aside.
    shutil.rmtree(run / "model")
    code, err = run_ft(
        ["train", *TINY, "train.max_steps=1", f"hydra.run.dir={run}", "resume=auto"], capsys
    )
    assert code == 0, err
    for name, data in weights.items():
        assert (run / "checkpoints" / "unusable" / name / "model.safetensors").read_bytes() == data


def test_overwrite_moves_the_old_run_aside(finished: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = snapshot(run)
    code, err = run_ft(
        ["train", *TINY, "train.max_steps=1", f"hydra.run.dir={run}", "overwrite=true"], capsys
    )
    assert code == 0, err
    aside = tmp_path / "run.previous-1"
    assert snapshot(aside) == before
    assert json.loads((run / "metrics.json").read_text())["steps"] == 1
    code, err = run_ft(
        ["train", *TINY, f"hydra.run.dir={run}", "overwrite=true", "resume=auto"], capsys
    )
    assert code == 2 and "give one" in err


def test_a_run_dir_that_cannot_be_written(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    code, err = run_ft(["train", *TINY, f"hydra.run.dir={blocker / 'run'}"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write {blocker / 'run'}: Not a directory" in err


def _received_run(finished: Path, tmp_path: Path) -> Path:
    """A run someone sent: its record asks for remote code, and model/ ships some."""
    run = tmp_path / "received"
    shutil.copytree(finished, run)
    overrides = run / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "- model.trust_remote_code=true\n")
    config = json.loads((run / "model" / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForSequenceClassification": "evil.EvilModel",
    }
    (run / "model" / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "pwned"
    (run / "model" / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return run


@pytest.mark.parametrize("command", ["eval", "predict", "train", "teacher"])
def test_a_received_run_runs_no_code(command: str, finished: Path, tmp_path: Path, capsys) -> None:
    run = _received_run(finished, tmp_path)
    rows = write_csv(tmp_path / "rows.csv", ROWS[:4])
    args = {
        "eval": ["eval", str(run)],
        "predict": [
            "predict",
            str(run),
            "--input",
            str(rows),
            "--output",
            str(tmp_path / "out.csv"),
        ],
        "train": [
            "train",
            *TINY,
            "model.init=pretrained",
            f"model.from_run={run}",
            f"hydra.run.dir={tmp_path / 'new'}",
        ],
        "teacher": [
            "train",
            *TINY,
            "strategy=distill",
            f"strategy.teacher.from_run={run}",
            f"hydra.run.dir={tmp_path / 'new'}",
        ],
    }[command]
    before = snapshot(run)
    code, err = run_ft(args, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "ships its own model code (evil.py)" in err
    # A student may be trusted from the command line; a teacher never runs shipped code.
    expected = "never runs shipped code" if command == "teacher" else "model.trust_remote_code=true"
    assert expected in err
    assert not (tmp_path / "pwned").exists()
    assert snapshot(run) == before


def test_predict_errors_name_the_cause(finished: Path, tmp_path: Path, capsys) -> None:
    rows = write_csv(tmp_path / "rows.csv", ROWS[:4])
    cases = {
        "missing output folder": (
            ["--input", str(rows), "--output", str(tmp_path / "no" / "out.csv")],
            "folder",
        ),
        "content not matching the extension": (
            ["--input", str(_write(tmp_path / "rows.jsonl", rows.read_text()))],
            "line 1 of",
        ),
        "parquet that is not": (
            ["--input", str(_write(tmp_path / "rows.parquet", "text\nx\n"))],
            "is not a parquet file",
        ),
    }
    before = snapshot(finished)
    for name, (extra, expected) in cases.items():
        code, err = run_ft(["predict", str(finished), *extra], capsys)
        assert code == 2 and err.count("\n") == 1, (name, err)
        assert expected in err and "Traceback" not in err, (name, err)
    assert snapshot(finished) == before


def test_predict_works_on_an_interrupted_run(finished: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "model")  # stopped before its export: checkpoints only
    rows = write_csv(tmp_path / "rows.csv", ROWS[:4])
    out = tmp_path / "out.csv"
    code, err = run_ft(["predict", str(run), "--input", str(rows), "--output", str(out)], capsys)
    assert code == 0, err
    assert out.read_text().splitlines()[0].startswith("text,label,predicted_label")


def test_runs_lists_a_damaged_metrics_file(finished: Path, tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    for name, text in {"ok": None, "broken": "{not json", "list": "[1, 2]"}.items():
        shutil.copytree(finished, sweep / name)
        if text is not None:
            (sweep / name / "metrics.json").write_text(text)
    code, err = run_ft(["runs", str(sweep)], capsys)
    assert code == 0, err
    summary = json.loads((sweep / "summary.json").read_text())["runs"]
    errors = {row["job"]: row["error"] for row in summary}
    assert errors["broken"] == "metrics.json is not valid JSON"
    assert errors["list"].startswith("metrics.json holds no record")
    assert errors["ok"] is None


def test_tsv_text_with_double_quotes_reads_as_written(tmp_path: Path) -> None:
    from ft_cli.config.schema import DataConfig, DataFiles, DataFormat, Quoting
    from ft_cli.data import dataset as data

    tab = "\t"
    path = _write(
        tmp_path / "q.tsv", f'text{tab}label\nhe said "stop{tab}pos\n"quoted" speech{tab}neg\n'
    )
    cfg = DataConfig(format=DataFormat.tsv, files=DataFiles(train=str(path)))
    rows = data.load_raw(cfg).splits["train"]
    assert rows["text"] == ['he said "stop', '"quoted" speech']
    quoted = _write(tmp_path / "q2.csv", 'text,label\n"a, b",pos\n')
    cfg = DataConfig(format=DataFormat.csv, files=DataFiles(train=str(quoted)))
    assert data.load_raw(cfg).splits["train"]["text"] == ["a, b"]
    cfg.quoting = Quoting.none
    with pytest.raises(FtError, match=r"line 2 of .* has 3 fields, the header has 2"):
        data.load_raw(cfg)


def test_a_damaged_lock_file_is_named(finished: Path, capsys) -> None:
    from ft_cli.rundir import ownership

    lock = finished / ownership.LOCK
    for damaged in ("garbage{", "[1, 2]", '{"pid": "abc", "host": "h"}'):
        lock.write_text(damaged)
        before = snapshot(finished)
        try:
            code, err = run_ft(["train", *TINY, f"hydra.run.dir={finished}", "resume=auto"], capsys)
        finally:
            lock.unlink()
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert f"its lock file {lock} is damaged" in err and "delete the lock file" in err
        lock.write_text(damaged)
        assert snapshot(finished) == before
        lock.unlink()


def test_a_broken_recipe_names_itself_and_leaves_the_others_usable(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from ft_cli.config import compose

    own = tmp_path / "recipes"
    own.mkdir()
    (own / "broken.yaml").write_text("# Purpose: broken\ntrain:\n  epochs: [1\n  lr: 2\n")
    (own / "mine.yaml").write_text("# @package _global_\n# Purpose: mine\ntrain:\n  epochs: 1\n")
    monkeypatch.setenv("FT_RECIPES_DIR", str(own))
    code, err = run_ft(["train", "+recipe=broken", "--cfg", "job"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"recipe {own / 'broken.yaml'}, line 4: not valid YAML" in err
    code, err = run_ft(["train", "+recipe=mine", *TINY, "--cfg", "job"], capsys)
    assert code == 0, err
    assert compose.compose_spec(["+recipe=mine"]).train.epochs == 1
    code, _ = run_ft(["recipes"], capsys)
    assert code == 0


def test_folders_named_like_overrides_and_explain_on_a_run(
    finished: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "lr=3e-3"
    shutil.copytree(finished, run)
    code, err = run_ft(["eval", str(run)], capsys)
    assert code == 0, err
    assert (run / "eval_metrics.json").is_file()
    code, err = run_ft(["explain", str(finished)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "ft explain takes the overrides of ft train" in err and "not a run dir" in err


def test_a_damaged_model_config_is_named(finished: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    config = run / "model" / "config.json"
    config.write_text(config.read_text()[:40])
    rows = write_csv(tmp_path / "rows.csv", ROWS[:4])
    before = snapshot(run)
    for args in (
        ["eval", str(run)],
        ["predict", str(run), "--input", str(rows)],
        ["export", str(run)],
    ):
        code, err = run_ft(args, capsys)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (args, err)
        assert f"{config} is damaged or unreadable" in err
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_tracking_server_that_is_down_fails_fast_hides_its_secrets_and_frees_the_run_dir(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import socket
    import time

    pytest.importorskip("mlflow")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://me:hunter2@127.0.0.1:{port}/?token=s3cr3t")
    run = tmp_path / "run"
    started = time.monotonic()
    args = ["train", *TINY, "train.max_steps=1", "logger=[tensorboard,mlflow]"]
    code, err = run_ft([*args, f"hydra.run.dir={run}"], capsys)
    assert time.monotonic() - started < 60  # MLflow alone retries for minutes
    assert code == 2 and err.count("\n") == 1
    assert f"cannot reach the tracking server http://me:***@127.0.0.1:{port}/?token=***" in err
    assert "hunter2" not in err and "s3cr3t" not in err
    for path in run.rglob("*"):
        if path.is_file():
            assert b"hunter2" not in path.read_bytes() and b"s3cr3t" not in path.read_bytes()
    # The run never started: its dir is free for the same command without the logger.
    assert not (run / "config.yaml").exists() and not (run / "tensorboard").exists()
    code, err = run_ft([*args[:-1], f"hydra.run.dir={run}"], capsys)
    assert code == 0, err


def test_secrets_in_tracking_uris_are_found_and_hidden() -> None:
    from ft_cli.loggers import secrets

    uri = "https://user:pw@host:5000/path?api_key=K1&experiment=x&sessionToken=T2&sig=S3"
    assert secrets.secrets_in(uri) == [
        "a password in its user info",
        "query parameter 'api_key'",
        "query parameter 'sessionToken'",
        "query parameter 'sig'",
    ]
    shown = secrets.redacted(uri)
    assert (
        shown == "https://user:***@host:5000/path?api_key=***&experiment=x&sessionToken=***&sig=***"
    )
    assert secrets.scrubbed(f"failed at {uri}: K1 T2", uri).count("***") == 6
    assert secrets.secrets_in("http://host:5000/?experiment=keys") == []
    assert secrets.redacted("file:///tmp/mlruns") == "file:///tmp/mlruns"


def test_image_trees_skip_linked_folders_and_names_that_are_not_utf8(
    tmp_path: Path, capsys
) -> None:
    from PIL import Image

    from ft_cli.inputs import pictures as images

    root = tmp_path / "train"
    elsewhere = tmp_path / "elsewhere"
    for folder in (root / "cat", root / "dog", elsewhere):
        folder.mkdir(parents=True)
        for index in range(2):
            Image.new("RGB", (8, 8)).save(folder / f"{index}.png")
    (root / "bird").symlink_to(elsewhere)  # would be a class of its own
    (root / "cat" / "more").symlink_to(elsewhere)  # would add birds to the cats
    os.symlink(root / "dog" / "0.png", root / "dog" / "linked.png")  # a linked file is read
    odd = os.fsencode(root / "cat") + b"/caf\xe9.png"
    with open(odd, "wb") as handle:
        handle.write((root / "cat" / "0.png").read_bytes())
    _, labels = images.list_class_folders(root, "data.files.train")
    assert sorted(set(labels)) == ["cat", "dog"]
    assert labels.count("cat") == 2 and labels.count("dog") == 3
    warning = capsys.readouterr().err
    assert "skipped 3 linked folder(s) or name(s) that are not UTF-8" in warning
    assert len(images.list_images(root)) == 5


def _mounted(folder: Path, options: str) -> bool:
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


def _unmount(folder: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small read-only or full disk")
def test_read_only_and_full_disks_end_in_one_line(finished: Path, tmp_path: Path, capsys) -> None:
    import subprocess

    read_only, full = tmp_path / "ro", tmp_path / "full"
    if not _mounted(read_only, "size=16m"):
        pytest.skip("mount is not permitted here")
    try:
        shutil.copytree(finished, read_only / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(read_only)], check=True)
        run = read_only / "run"
        rows = write_csv(tmp_path / "rows.csv", ROWS * 20)
        cases = {
            "resume": (["train", *TINY, f"hydra.run.dir={run}", "resume=auto"], "Read-only"),
            "eval": (["eval", str(run)], "the metrics above could not be saved"),
            "predict": (
                ["predict", str(run), "--input", str(rows), "--output", str(run / "out.csv")],
                "Read-only",
            ),
            "report": (["report", str(run)], "Read-only"),
        }
        for name, (args, expected) in cases.items():
            capsys.readouterr()
            code, err = run_ft(args, capsys)
            lines = err.strip().splitlines()
            assert code == 2 and "Traceback" not in err, (name, err)
            assert expected in lines[-1] and lines[-1].startswith("ft: error: "), (name, err)
        assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in finished.iterdir())
        if not _mounted(full, "size=160k"):
            pytest.skip("mount is not permitted here")
        big = write_csv(tmp_path / "big.csv", [{"text": "a long row of words " * 8}] * 3000)
        code, err = run_ft(
            ["predict", str(finished), "--input", str(big), "--output", str(full / "out.csv")],
            capsys,
        )
        assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
        code, err = run_ft(
            ["train", *TINY, "train.max_steps=2", f"hydra.run.dir={full / 'run'}"], capsys
        )
        assert code == 2 and "Traceback" not in err, err
        leftovers = [p.name for p in full.rglob("*") if p.name.startswith((".tmp-", ".ft.lock"))]
        assert not leftovers and not [p for p in full.rglob("step-*") if p.is_dir()]
    finally:
        _unmount(read_only)
        _unmount(full)


def test_what_fails_after_a_dropped_start_up_ctrl_c_is_reported_as_the_interrupt(
    monkeypatch, capsys
) -> None:
    """A Ctrl-C that Python dropped inside a library (recorded by StartupInterrupts) can
    leave an object half built; the error that follows is the interrupt, not a bug."""
    from ft_cli import cli
    from ft_cli.training.guards import StartupInterrupts

    def half_built(overrides: list[str]) -> None:
        raise AttributeError("'DictConfig' object has no attribute '_invalidate_flags_cache'")

    monkeypatch.setattr(cli, "_launch", half_built)
    monkeypatch.setattr(StartupInterrupts, "received", [])
    with pytest.raises(AttributeError):  # without a Ctrl-C it is a real failure
        cli.run_train([])
    monkeypatch.setattr(StartupInterrupts, "received", [2])
    assert cli.run_train([]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "ft: error: interrupted", err


@pytest.mark.slow
def test_ctrl_c_at_start_up_exits_130_in_one_line(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    for delay in (0.3, 1.5, 3.0):
        run = tmp_path / f"run-{delay}"
        process = subprocess.Popen(
            [sys.executable, "-m", "ft_cli", "train", *TINY, f"hydra.run.dir={run}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
        assert process.returncode in (130, -signal.SIGINT), (delay, output)
        assert "Traceback" not in output, (delay, output)
        assert (
            output.strip().splitlines()[-1].startswith(("ft: error: interrupted", "interrupted"))
        ), output
