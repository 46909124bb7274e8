"""MLflow: the flattened config as params, scalars per step, results and run files.

Talks to the store through `MlflowClient` with the run id in hand, never through
mlflow's process-wide "active run", so runs in one process stay apart.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ft_cli.errors import FtError
from ft_cli.loggers import secrets
from ft_cli.loggers.base import COMPLETED, FAILED, RunInfo, RunLogger, setting

NEEDS = ("mlflow", "mlflow")  # the package it imports, the extra that installs it


@dataclass
class Settings:
    enabled: bool = setting(False, "Log to MLflow (pip install 'ft-cli[mlflow]').")
    tracking_uri: str | None = setting(
        None,
        "null = $MLFLOW_TRACKING_URI, else MLflow's default: an SQLite store in ./mlflow.db"
        " (./mlruns instead when it already holds runs).",
    )
    experiment: str | None = setting(None, "null = the sweep's name in a sweep (-m), else 'ft'.")


def open_logger(settings: Settings, info: RunInfo) -> RunLogger:
    return MlflowLogger(info, settings.experiment, settings.tracking_uri)


def check(settings: Settings) -> None:
    """The config check: a tracking URI ft can use (chosen or not: the env may set it)."""
    check_uri(settings.tracking_uri)


def credentials_in(settings: Settings) -> list[str]:
    """The URIs whose credentials an error message must not show."""
    return [uri for uri in (settings.tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")) if uri]


DEFAULT_EXPERIMENT = "ft"
PARAMS_PER_CALL = 100  # MLflow's limit on params in one log_batch
PARAM_LENGTH = 6000  # ... and on a param value's length
STATUS = {COMPLETED: "FINISHED", FAILED: "FAILED"}  # anything else: KILLED
CONNECT_SECONDS = 5  # how long the start waits for the tracking server to accept
# MLflow's defaults: 7 retries with backoff, 120 s each: about four minutes for a dead server.
RETRY_BUDGET = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def tracking_uri(configured: str | None) -> str:
    """The config's URI, else $MLFLOW_TRACKING_URI, else MLflow's own default: an SQLite
    store in ./mlflow.db, or the file store in ./mlruns where one already holds runs
    (an older default's, kept so that its runs are not left behind)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        older = Path("mlruns")
        if any(older.glob("*/meta.yaml")):
            uri = older.resolve().as_uri()
        else:
            uri = f"sqlite:///{Path('mlflow.db').resolve()}"
    return allow_file_store(uri)


def allow_file_store(uri: str) -> str:
    if urlparse(uri).scheme in ("", "file"):
        # MLflow 3 keeps its file store only on request; ft's default is that store.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def check_uri(configured: str | None) -> None:
    """Credentials in logger.mlflow.tracking_uri would be written into config.yaml."""
    found = secrets.secrets_in(configured) if configured else []
    if found and found[0].startswith("a password"):
        raise FtError(
            "logger.mlflow.tracking_uri holds a password, which would be saved with the run;"
            " drop it from the URI and set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        )
    if found:
        raise FtError(
            f"logger.mlflow.tracking_uri holds a credential ({found[0]}), which would be saved"
            " with the run; drop it from the URI and set MLFLOW_TRACKING_TOKEN (or put the URI"
            " in $MLFLOW_TRACKING_URI)"
        )


def check_reachable(uri: str) -> None:
    """A tracking server that does not answer fails the start within seconds, by name
    (MLflow's own client would retry for minutes)."""
    import socket

    parts = urlparse(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise FtError(
            f"logger=mlflow: cannot reach the tracking server {secrets.redacted(uri)} ({why});"
            " start it, fix logger.mlflow.tracking_uri / $MLFLOW_TRACKING_URI, or drop"
            " logger=mlflow"
        ) from err


def bound_retries() -> None:
    """MLflow's HTTP retry budget, unless the user set one: a few seconds, not minutes."""
    for name, value in RETRY_BUDGET.items():
        os.environ.setdefault(name, value)


def quiet_store_setup() -> None:
    """A new SQLite store announces its tables and migrations at INFO: not the run's news."""
    import logging

    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class MlflowLogger(RunLogger):
    name = "mlflow"

    def __init__(self, info: RunInfo, experiment: str | None, configured_uri: str | None) -> None:
        from mlflow.tracking import MlflowClient

        saved = info.state.get("tracking_uri")  # a resumed run stays in its store
        self.uri = allow_file_store(saved) if saved else tracking_uri(configured_uri)
        bound_retries()
        quiet_store_setup()
        check_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_id = self._reopen(info.state.get("run_id"))
        if self.run_id is None:
            name = experiment or (info.sweep.name if info.sweep else DEFAULT_EXPERIMENT)
            tags = {"ft.run_dir": str(info.run_dir), "mlflow.source.name": "ft train"}
            if info.sweep:
                tags["ft.sweep"] = info.sweep.name
            run = self.client.create_run(self._experiment_id(name), run_name=info.name, tags=tags)
            self.run_id = run.info.run_id
            self._log_params(info.params)

    def _reopen(self, run_id: str | None) -> str | None:
        """Resume: the same run, marked running again (None: start a new one)."""
        if not run_id:
            return None
        self.client.get_run(run_id)  # fails in one line (see loggers.open_all) if it is gone
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # another job of the sweep created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[start : start + PARAMS_PER_CALL])

    def state(self) -> dict[str, Any]:
        # Credentials in $MLFLOW_TRACKING_URI stay out of the run dir; resume reads it again.
        kept = None if secrets.secrets_in(self.uri) else self.uri
        return {"tracking_uri": kept, "run_id": self.run_id}

    def scrub(self, text: str) -> str:
        return secrets.scrubbed(text, self.uri) if self.uri else text

    def where(self) -> str:
        parts = urlparse(self.uri)
        if parts.scheme in ("", "file"):
            return f"run {self.run_id}: mlflow ui --backend-store-uri {self.uri}"
        server = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], query="").geturl()
        return f"run {self.run_id} on {server}"

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        self._metrics({f"{prefix}/{k}": v for k, v in values.items()}, step)

    def results(self, values: dict[str, float], step: int) -> None:
        self._metrics(values, step)

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def artifacts(self, files: dict[str, Path]) -> None:
        """`files`: artifact path -> local file of the same base name."""
        for name, path in files.items():
            folder = Path(name).parent
            where = None if folder == Path(".") else folder.as_posix()
            self.client.log_artifact(self.run_id, str(path), artifact_path=where)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, STATUS.get(status, "KILLED"))
