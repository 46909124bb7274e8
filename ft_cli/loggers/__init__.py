"""Run loggers chosen by the `logger` config group: tensorboard, csv, mlflow, wandb.

The engine talks to one `Loggers` fan-out. `LOGGERS` maps a logger's name to its
module, which holds all of it: its `Settings` (the `logger.NAME` keys; the config
schema gathers them), `open_logger(settings, info)`, and optionally `NEEDS` (the
package it imports and the extra that installs it), `check(settings)` and
`credentials_in(settings)`. A backend's library is imported only when it is
chosen. What reopens a backend's run on resume (an MLflow run id, a W&B run id)
is kept in RUN_DIR/loggers.json. A new logger: its module, a line here, and
configs/logger/NAME.yaml.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from ft_cli.errors import FtError
from ft_cli.loggers.base import COMPLETED, FAILED, INTERRUPTED, RunInfo, RunLogger, SweepJob

__all__ = ["Loggers", "RunInfo", "SweepJob", "check", "chosen", "opened"]

STATE_FILE = "loggers.json"

LOGGERS: dict[str, str] = {
    "tensorboard": "ft_cli.loggers.tensorboard_logger",
    "csv": "ft_cli.loggers.csv_logger",
    "mlflow": "ft_cli.loggers.mlflow_logger",
    "wandb": "ft_cli.loggers.wandb_logger",
}


def module(name: str) -> ModuleType:
    """A logger's module (light to import: its library is imported when it opens)."""
    return importlib.import_module(LOGGERS[name])


def chosen(config: Any) -> list[str]:
    """The loggers a `logger` config turns on, in `LOGGERS` order."""
    return [name for name in LOGGERS if getattr(config, name).enabled]


def check(config: Any) -> None:
    """The config check: each logger's own, and a chosen logger whose library is missing
    gets one line with the install command."""
    for name in LOGGERS:
        own = module(name)
        if hasattr(own, "check"):
            own.check(getattr(config, name))
    for name in chosen(config):
        needs, extra = getattr(module(name), "NEEDS", (None, None))
        if needs is not None and importlib.util.find_spec(needs) is None:
            raise FtError(
                f"logger={name} needs the {needs} package: pip install 'ft-cli[{extra}]'"
                f" (from a checkout: pip install -e '.[{extra}]')"
            )


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
    for name in chosen(config):
        one = dataclasses.replace(info, state=saved.get(name, {}))
        try:
            opened_ones.append(module(name).open_logger(getattr(config, name), one))
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
    from ft_cli.loggers import secrets

    for name in LOGGERS:
        credentials = getattr(module(name), "credentials_in", None)
        for uri in credentials(getattr(config, name)) if credentials else ():
            text = secrets.scrubbed(text, uri)
    return text


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
