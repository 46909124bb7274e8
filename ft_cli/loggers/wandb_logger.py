"""Weights & Biases: online when the user has logged in, else an offline run in RUN_DIR/wandb."""

from __future__ import annotations

import netrc
import os
import secrets
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ft_cli.loggers.base import COMPLETED, INTERRUPTED, RunInfo, RunLogger, setting

NEEDS = ("wandb", "wandb")  # the package it imports, the extra that installs it


class WandbMode(str, Enum):
    auto = "auto"
    online = "online"
    offline = "offline"


@dataclass
class Settings:
    enabled: bool = setting(False, "Log to Weights & Biases (pip install 'ft-cli[wandb]').")
    project: str = setting("ft", "W&B project.")
    entity: str | None = setting(None, "W&B team or user; null = the account's default.")
    mode: WandbMode = setting(
        WandbMode.auto,
        "auto: online when logged in (WANDB_API_KEY or `wandb login`), else offline into"
        " RUN_DIR/wandb (`wandb sync` uploads it later).",
    )


def open_logger(settings: Settings, info: RunInfo) -> RunLogger:
    return WandbLogger(info, settings.project, settings.entity, settings.mode.value)


EXIT_CODES = {COMPLETED: 0, INTERRUPTED: 255}  # anything else: 1 (failed)


def logged_in() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def chosen_mode(mode: str) -> str:
    """`auto`: $WANDB_MODE if set, else online when logged in, else offline."""
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if logged_in() else "offline")


class WandbLogger(RunLogger):
    name = "wandb"

    def __init__(self, info: RunInfo, project: str, entity: str | None, mode: str) -> None:
        import wandb

        self.id = info.state.get("id") or secrets.token_hex(4)
        # A resumed run stays in the project it started in.
        self.project = info.state.get("project", project)
        self.entity = info.state.get("entity", entity)
        self.mode = chosen_mode(mode)
        settings = wandb.Settings(console="off", save_code=False, silent=True)
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            group=info.sweep.name if info.sweep else None,
            name=info.name,
            id=self.id,
            resume="allow",
            dir=str(info.run_dir),
            mode=self.mode,
            config=None if info.state else info.params,
            settings=settings,
            reinit="create_new",
        )
        # Every scalar is plotted against ft's optimizer step, also across a resume.
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    @property
    def folder(self) -> Path:
        return Path(self.run.dir).parent  # the run's own folder above files/

    def state(self) -> dict[str, Any]:
        return {"id": self.id, "project": self.project, "entity": self.entity}

    def where(self) -> str:
        if self.mode == "offline":
            return f"offline run {self.id}; upload it with: wandb sync {self.folder}"
        return self.run.url or f"run {self.id} ({self.mode})"

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        self.run.log({**{f"{prefix}/{k}": float(v) for k, v in values.items()}, "step": step})

    def results(self, values: dict[str, float], step: int) -> None:
        self.run.summary.update({k: float(v) for k, v in values.items()})

    def artifacts(self, files: dict[str, Path]) -> None:
        import wandb

        record = wandb.Artifact(f"run-{self.id}", type="run-record")
        for name, path in files.items():
            record.add_file(str(path), name=name)
        self.run.log_artifact(record)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=EXIT_CODES.get(status, 1))
