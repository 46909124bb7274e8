"""The `logger` group: TensorBoard, CSV, MLflow and W&B, read back from what they wrote."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest
from conftest import TINY, compose_spec

from ft_cli.errors import FtError

# Found, not imported: the libraries cost seconds to import, and only some tests use them.
pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("mlflow", "wandb")),
    reason="the mlflow and wandb extras are not installed",
)


def _wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (`run-ID.wandb`): a 7-byte header, then
    32 KiB blocks of chunks, each with a 7-byte header (checksum, length, kind)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, position, pending, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # too little room left in the block for a header
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full/first, middle/last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _values(items) -> dict:
    """W&B items name their key in `key` or, for names with a slash, in `nested_key`."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def _wandb_run(folder: Path) -> dict:
    """History rows, config, summary, artifact files and exit code of one offline run."""
    (path,) = folder.glob("run-*.wandb")
    found: dict = {"history": [], "config": {}, "summary": {}, "files": [], "exit": None}
    for record in _wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found["id"], found["group"] = record.run.run_id, record.run.run_group
            found["config"] |= _values(record.run.config.update)
        elif kind == "history":
            found["history"].append(_values(record.history.item))
        elif kind == "summary":
            found["summary"] |= _values(record.summary.update)
        elif kind == "artifact":
            found["files"] += [entry.path for entry in record.artifact.manifest.contents]
        elif kind == "exit":
            found["exit"] = record.exit.exit_code
    return found


@pytest.mark.slow
def test_every_logger_records_the_run_and_a_resume_appends_to_the_same_run(
    tmp_path: Path, monkeypatch
) -> None:
    from mlflow.tracking import MlflowClient

    from ft_cli import cli

    monkeypatch.chdir(tmp_path)  # MLflow's default store: SQLite in ./mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    secret = "f00d" * 10  # a W&B API key must not land in any file of the run
    monkeypatch.setenv("WANDB_API_KEY", secret)
    run = tmp_path / "run"
    common = [
        *TINY,
        "logger=[tensorboard,csv,mlflow,wandb]",
        "logger.wandb.mode=offline",
        f"output_dir={run}",
        "train.log_every=2",
        "optimizer.lr=3e-4",
    ]
    assert cli.run_train([*common, "train.epochs=1"]) == 0
    first = json.loads((run / "loggers.json").read_text())
    assert cli.run_train([*common, "train.epochs=2", "resume=auto"]) == 0
    assert json.loads((run / "loggers.json").read_text()) == first  # the same tracked runs
    steps_per_epoch = 96 // 16

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ft")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == first["mlflow"]["run_id"] and found.info.status == "FINISHED"
    assert found.data.params["optimizer.lr"] == "0.0003"
    assert found.data.params["model.name_or_path"].endswith("tiny_bert")
    losses = client.get_metric_history(found.info.run_id, "train/loss")
    assert sorted(m.step for m in losses) == list(range(2, 2 * steps_per_epoch + 1, 2))
    evals = client.get_metric_history(found.info.run_id, "eval/accuracy")
    assert sorted(m.step for m in evals) == [steps_per_epoch, 2 * steps_per_epoch]
    record = json.loads((run / "metrics.json").read_text())
    assert found.data.metrics["best/accuracy"] == pytest.approx(record["best"]["accuracy"])
    assert found.data.metrics["final/loss"] == pytest.approx(record["final"]["loss"])
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.yaml", "metrics.json", "model"} <= artifacts
    assert [a.path for a in client.list_artifacts(found.info.run_id, "model")] == [
        "model/README.md"
    ]

    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2  # W&B keeps a resumed offline run as a second part, same id
    parts = [_wandb_run(folder) for folder in folders]
    assert {part["id"] for part in parts} == {first["wandb"]["id"]}
    assert parts[0]["config"]["optimizer.lr"] == 3e-4
    logged = [row["step"] for part in parts for row in part["history"] if "train/loss" in row]
    assert logged == list(range(2, 2 * steps_per_epoch + 1, 2))
    assert parts[1]["summary"]["best/accuracy"] == pytest.approx(record["best"]["accuracy"])
    assert {"config.yaml", "metrics.json", "model/README.md"} <= set(parts[1]["files"])
    assert [part["exit"] for part in parts] == [0, 0]

    import csv

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows if r["train/loss"]] == logged
    assert [int(r["step"]) for r in rows if r["eval/accuracy"]] == [6, 12]
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert not [path for path in written if secret.encode() in path.read_bytes()]


@pytest.mark.slow
def test_a_sweeps_jobs_share_one_experiment_and_one_group(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from ft_cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    store = (tmp_path / "store").as_uri()
    sweep = tmp_path / "sweeps" / "lr"
    code = cli.run_train(
        [
            "-m",
            *TINY,
            "train.max_steps=2",
            "optimizer.lr=1e-5,5e-5",
            "logger=[mlflow,wandb]",
            f"logger.mlflow.tracking_uri={store}",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert code == 0
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("sweeps/lr")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == ["1e-05", "5e-05"]
    assert sorted(r.info.run_name for r in runs) == [
        "0: optimizer.lr=1e-05",
        "1: optimizer.lr=5e-05",
    ]
    groups = {_wandb_run(f)["group"] for f in sweep.glob("*/wandb/offline-run-*")}
    assert groups == {"sweeps/lr"}
    assert not (tmp_path / "mlruns").exists()  # the configured store, not the default


def test_a_logger_that_fails_mid_run_is_dropped_and_the_others_go_on(tmp_path: Path) -> None:
    from ft_cli.loggers import Loggers
    from ft_cli.loggers.base import RunLogger

    class Broken(RunLogger):
        name = "broken"

        def scalars(self, prefix, values, step):
            raise ConnectionError("tracking server unreachable\nsecond line")

    seen: list = []

    class Kept(RunLogger):
        name = "kept"

        def scalars(self, prefix, values, step):
            seen.append((prefix, step))

    warnings: list[str] = []
    loggers = Loggers([Broken(), Kept()], warnings.append)
    loggers.scalars("train", {"loss": 1.0}, 1)
    loggers.scalars("train", {"loss": 0.5}, 2)
    assert seen == [("train", 1), ("train", 2)]
    assert warnings == [
        "logger broken: tracking server unreachable; no more logging to it in this run"
    ]


def test_an_interrupted_or_failed_run_is_marked_so(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from ft_cli import loggers
    from ft_cli.loggers import RunInfo

    store = (tmp_path / "mlruns").as_uri()
    spec = compose_spec([*TINY, "logger=[mlflow,csv]", f"logger.mlflow.tracking_uri={store}"])
    ids = []
    for error, status in ((KeyboardInterrupt, "KILLED"), (ValueError, "FAILED")):
        run_dir = tmp_path / status
        run_dir.mkdir()
        info = RunInfo(run_dir, status, {"optimizer.lr": 1e-3}, None, None, {})
        with pytest.raises(error), loggers.opened(spec.logger, info, print) as opened:
            opened.scalars("train", {"loss": 0.7}, 1)
            raise error()
        ids.append((json.loads((run_dir / "loggers.json").read_text())["mlflow"]["run_id"], status))
        assert (run_dir / "metrics.csv").read_text().splitlines()[0] == "step,time,train/loss"
    client = MlflowClient(tracking_uri=store)
    assert [client.get_run(run_id).info.status for run_id, _ in ids] == ["KILLED", "FAILED"]


def test_a_chosen_logger_that_is_not_installed_names_its_install_command(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(FtError) as caught:
        compose_spec([*TINY, "logger=[tensorboard,wandb]"])
    assert str(caught.value) == (
        "logger=wandb needs the wandb package: pip install 'ft-cli[wandb]'"
        " (from a checkout: pip install -e '.[wandb]')"
    )


def test_wandb_goes_online_only_for_a_logged_in_user(tmp_path: Path, monkeypatch) -> None:
    from ft_cli.loggers.wandb_logger import chosen_mode

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert chosen_mode("auto") == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert chosen_mode("auto") == "online"
    assert chosen_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert chosen_mode("auto") == "disabled"


def test_logger_settings_do_not_count_as_a_changed_config_on_resume() -> None:
    from ft_cli.training import resume

    assert any("logger.".startswith(prefix) for prefix in resume.IGNORED)


def test_a_password_in_the_tracking_uri_stays_out_of_the_run_dir(
    tmp_path: Path, monkeypatch
) -> None:
    from ft_cli.loggers import mlflow_logger

    logger = object.__new__(mlflow_logger.MlflowLogger)
    logger.uri, logger.run_id = "https://me:s3cret@mlflow.example.com", "abc"
    assert logger.state() == {"tracking_uri": None, "run_id": "abc"}
    assert "s3cret" not in logger.where()
    logger.uri = "https://mlflow.example.com"
    assert logger.state()["tracking_uri"] == "https://mlflow.example.com"


def test_the_default_mlflow_store_is_sqlite_unless_mlruns_holds_runs(
    tmp_path: Path, monkeypatch
) -> None:
    from ft_cli.loggers import mlflow_logger

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_logger.tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "mlruns" / "0").mkdir(parents=True)  # an older default's store, with runs
    (tmp_path / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    assert mlflow_logger.tracking_uri(None) == (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example")
    assert mlflow_logger.tracking_uri(None) == "http://tracking.example"
    assert mlflow_logger.tracking_uri("sqlite:///elsewhere.db") == "sqlite:///elsewhere.db"
