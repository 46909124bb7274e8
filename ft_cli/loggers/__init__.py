"""Run loggers chosen by the `logger` config group: tensorboard, csv, mlflow, wandb.

The engine talks to one `Loggers` fan-out; each backend lives in its own module
and is imported only when chosen. What reopens a backend's run on resume (an
MLflow run id, a W&B run id) is kept in RUN_DIR/loggers.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ft_cli.errors import FtError
from ft_cli.loggers.base import COMPLETED, FAILED, INTERRUPTED, RunInfo, RunLogger, SweepJob

__all__ = ["Loggers", "RunInfo", "SweepJob", "check_available", "opened"]

STATE_FILE = "loggers.json"
# The logger -> (module it needs, the extra that installs it).
NEEDS = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


def check_available(chosen: list[str]) -> None:
    """A chosen logger whose library is missing: one line with the install command."""
    for name in chosen:
        if name not in NEEDS:
            continue
        module, extra = NEEDS[name]
        if importlib.util.find_spec(module) is None:
            raise FtError(
                f"logger={name} needs the {module} package: pip install 'ft-cli[{extra}]'"
                f" (from a checkout: pip install -e '.[{extra}]')"
            )


def _open_one(name: str, config: Any, info: RunInfo) -> RunLogger:
    if name == "tensorboard":
        from ft_cli.loggers.tensorboard_logger import TensorBoardLogger

        return TensorBoardLogger(info)
    if name == "csv":
        from ft_cli.loggers.csv_logger import CsvLogger

        return CsvLogger(info)
    if name == "mlflow":
        from ft_cli.loggers.mlflow_logger import MlflowLogger

        return MlflowLogger(info, config.mlflow.experiment, config.mlflow.tracking_uri)
    from ft_cli.loggers.wandb_logger import WandbLogger

    wandb = config.wandb
    return WandbLogger(info, wandb.project, wandb.entity, wandb.mode.value)


class Loggers:
    """Every chosen logger behind one set of calls. A backend that fails mid-run (a tracking
    server gone) is dropped with one warning; the run and the other loggers go on."""

    def __init__(self, chosen: list[RunLogger], warn: Callable[[str], None]) -> None:
        self.chosen, self.warn, self.closed = list(chosen), warn, False

    def _each(self, call: Callable[[RunLogger], None]) -> None:
        for logger in list(self.chosen):
            try:
                call(logger)
            except Exception as err:
                self.chosen.remove(logger)
                first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                first = logger.scrub(first)
                self.warn(f"logger {logger.name}: {first}; no more logging to it in this run")

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        self._each(lambda logger: logger.scalars(prefix, values, step))

    def text(self, tag: str, text: str) -> None:
        self._each(lambda logger: logger.text(tag, text))

    def results(self, values: dict[str, float], step: int) -> None:
        self._each(lambda logger: logger.results(values, step))

    def artifacts(self, files: dict[str, Path]) -> None:
        present = {name: path for name, path in files.items() if path.is_file()}
        self._each(lambda logger: logger.artifacts(present))

    def where(self) -> list[tuple[str, str]]:
        return [(logger.name, logger.where()) for logger in self.chosen if logger.where()]

    def close(self, status: str) -> None:
        if not self.closed:
            self.closed = True
            self._each(lambda logger: logger.close(status))


@contextlib.contextmanager
def opened(config: Any, info: RunInfo | None, warn: Callable[[str], None]) -> Iterator[Loggers]:
    """The chosen loggers for the length of a run, closed with how it ended: completed,
    failed (an error) or interrupted (a signal). `info` None: log nothing (other ranks)."""
    loggers = Loggers(_open_all(config, info) if info is not None else [], warn)
    try:
        yield loggers
    except Exception:
        loggers.close(FAILED)
        raise
    except BaseException:  # SIGINT / SIGTERM after a checkpoint
        loggers.close(INTERRUPTED)
        raise
    loggers.close(COMPLETED)


def _open_all(config: Any, info: RunInfo) -> list[RunLogger]:
    path = info.run_dir / STATE_FILE
    saved = _read_state(path) if info.resumed_step is not None else {}
    opened_ones: list[RunLogger] = []
    for name in config.chosen():
        one = dataclasses.replace(info, state=saved.get(name, {}))
        try:
            opened_ones.append(_open_one(name, config, one))
        except Exception as err:
            for logger in opened_ones:  # the run does not start: neither do their runs
                logger.close(FAILED)
            if isinstance(err, FtError):
                raise
            detail = _scrubbed(" ".join(str(err).split()), config)[:300] or repr(err)
            raise FtError(f"logger={name} could not start: {detail}") from err
    state = {logger.name: logger.state() for logger in opened_ones if logger.state()}
    if state:
        path.write_text(json.dumps({**saved, **state}, indent=2) + "\n")
    return opened_ones


def _scrubbed(text: str, config: Any) -> str:
    """An error text with the credentials of every tracking URI in play replaced by ***."""
    import os

    from ft_cli.loggers import secrets

    for uri in (config.mlflow.tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")):
        if uri:
            text = secrets.scrubbed(text, uri)
    return text


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
