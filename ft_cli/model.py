"""Build the tokenizer and the task model from the `model` and `task` configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ft_cli import hub, paths
from ft_cli.errors import FtError
from ft_cli.schema import ModelConfig, ModelInit, TaskKind

T = TypeVar("T")

_HINT = "use a local folder (model.name_or_path=DIR) or the packaged model=minilm_l6"


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def resolved_name(cfg: ModelConfig) -> str:
    return paths.resolve_path(cfg.name_or_path, "model.name_or_path")


def _load(cfg: ModelConfig, loader: Callable[..., T], what: str, **kwargs: Any) -> T:
    """Load from a folder, else the hub cache, else the hub (checked reachable first)."""
    name = resolved_name(cfg)
    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code, **kwargs}
    if Path(name).is_dir():
        return _friendly(lambda: loader(name, local_files_only=True, **common), name, what)
    if cfg.name_or_path.startswith(paths.PKG_PREFIX) or name.startswith((".", "/")):
        raise FtError(f"model.name_or_path: folder '{name}' does not exist; {_HINT}")
    try:
        return loader(name, local_files_only=True, **common)
    except (OSError, ValueError):
        pass  # not cached: try the hub below
    if not hub.hub_reachable():
        raise hub.unreachable_error("model.name_or_path", name, _HINT)
    return _friendly(lambda: loader(name, **common), name, what)


def _friendly(load: Callable[[], T], name: str, what: str) -> T:
    try:
        return load()
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FtError(f"model.name_or_path: cannot load the {what} from '{name}': {first}") from err


def load_tokenizer(cfg: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    _quiet_transformers()
    return _load(cfg, AutoTokenizer.from_pretrained, "tokenizer")


def build_model(cfg: ModelConfig, task: TaskKind, labels: list[str] | None) -> Any:
    """A sequence-classification model with the right head for the task.

    Args:
        cfg: the model config.
        task: classification (one logit per label) or regression (one output).
        labels: class names in id order (classification only).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    _quiet_transformers()
    if task == TaskKind.regression:
        head: dict[str, Any] = {"num_labels": 1, "problem_type": "regression"}
    else:
        assert labels is not None
        head = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "problem_type": "single_label_classification",
        }
    config = _load(cfg, AutoConfig.from_pretrained, "model config", **head)
    if cfg.init == ModelInit.scratch:
        return AutoModelForSequenceClassification.from_config(
            config, trust_remote_code=cfg.trust_remote_code
        )
    return _load(cfg, AutoModelForSequenceClassification.from_pretrained, "model", config=config)
