"""Build the tokenizer and the task model from the `model` and `task` configs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ft_cli import paths
from ft_cli.config.schema import ModelConfig, ModelInit
from ft_cli.errors import FtError
from ft_cli.models import hub

T = TypeVar("T")

_HINT = "use a local folder (model.name_or_path=DIR) or the packaged model=minilm_l6"


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def resolved_name(cfg: ModelConfig) -> str:
    if cfg.from_run is not None:
        return str(run_export(cfg.from_run))
    return paths.resolve_path(cfg.name_or_path, "model.name_or_path")


def run_export(run: str) -> Path:
    """The model/ export of an earlier run (or the export folder itself)."""
    from ft_cli.models.multitask import ENCODER, MANIFEST

    path = Path(paths.resolve_path(run, "model.from_run"))
    export = path if (path / "config.json").is_file() else path / "model"
    if (export / MANIFEST).is_file():  # a multi-task run: its shared encoder
        export = export / ENCODER
    if not (export / "config.json").is_file():
        raise FtError(
            f"model.from_run: '{path}' holds no exported model (model/config.json); point it at"
            " the run dir of a finished ft run"
        )
    return export


def load_part(
    cfg: ModelConfig, loader: Callable[..., T], what: str, hint: str = _HINT, **kwargs: Any
) -> T:
    """A part of the model (`loader`: a from_pretrained) from a folder, else the hub cache,
    else the hub (checked reachable first); `hint`: what to do if none has it."""
    name = resolved_name(cfg)
    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code, **kwargs}
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise FtError(
                f"model.name_or_path: folder '{name}' holds no model (no config.json); point it"
                " at a save_pretrained folder, or use the packaged model=minilm_l6"
            )
        check_model_code(Path(name), cfg.trust_remote_code)
        return _friendly(lambda: loader(name, local_files_only=True, **common), name, what)
    if cfg.name_or_path.startswith(paths.PKG_PREFIX) or name.startswith((".", "/")):
        raise FtError(f"model.name_or_path: folder '{name}' does not exist; {hint}")
    try:
        return loader(name, local_files_only=True, **common)
    except (OSError, ValueError):
        pass  # not cached: try the hub below
    if not hub.hub_reachable():
        raise hub.unreachable_error("model.name_or_path", name, hint)
    return _friendly(lambda: loader(name, **common), name, what)


def shipped_code(folder: Path) -> list[str]:
    """The Python files a model folder's configs name in `auto_map` (its own model code)."""
    import json

    modules: set[str] = set()
    for name in ("config.json", "tokenizer_config.json"):
        try:
            mapping = json.loads((folder / name).read_text()).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for target in mapping.values():
            for ref in target if isinstance(target, list) else [target]:
                if isinstance(ref, str):
                    modules.add(ref.split("--")[-1].rsplit(".", 1)[0] + ".py")
    return sorted(modules)


_announced: set[str] = set()


def check_model_code(folder: Path, trusted: bool) -> None:
    """A folder that ships model code runs it only when the user said so; ft says what runs."""
    files = shipped_code(folder)
    if not files:
        return
    listed = ", ".join(files)
    if not trusted:
        raise FtError(
            f"model.name_or_path: '{folder}' ships its own model code ({listed}); ft does not run"
            " it unless you add model.trust_remote_code=true to this command"
        )
    if str(folder) not in _announced:
        _announced.add(str(folder))
        print(f"model.trust_remote_code=true: running {listed} from {folder}", file=sys.stderr)


def _friendly(load: Callable[[], T], name: str, what: str) -> T:
    import pickle

    try:
        return load()
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FtError(f"model.name_or_path: cannot load the {what} from '{name}': {first}") from err
    except ImportError as err:  # a model part from a package ft does not install (timm)
        first = next((line for line in str(err).splitlines() if line.strip()), str(err))
        raise FtError(
            f"model.name_or_path: the {what} of '{name}' needs a package that is not installed:"
            f" {first.strip()}"
        ) from err
    except pickle.UnpicklingError as err:
        raise FtError(
            f"model.name_or_path: the weights in '{name}' are a pickle that would run code when"
            " loaded, refused; convert them to model.safetensors where they were made"
        ) from err


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The model's tokenizer; a decoder's without a padding token (GPT-2, Llama) pads with
    its end-of-text token, which the model's config then names (`model_config`)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    tokenizer = load_part(cfg, AutoTokenizer.from_pretrained, "tokenizer")
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(cfg: ModelConfig) -> Any:
    from transformers import AutoConfig

    _quiet_transformers()
    return load_part(cfg, AutoConfig.from_pretrained, "model config")


# Models whose position ids start after the padding id (RoBERTa's scheme).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer")


def check_max_length(cfg: ModelConfig, max_length: int) -> None:
    """data.max_length must fit the model's position embeddings (else an index error mid-run)."""
    config = load_config(cfg)
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return  # relative or rotary positions: no fixed table to overflow
    if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    if max_length > positions:
        raise FtError(
            f"data.max_length={max_length} is longer than {resolved_name(cfg)} can read"
            f" ({positions} positions); set data.max_length={positions} or less"
        )


def load_classifier(cfg: ModelConfig, auto_name: str = "AutoModelForSequenceClassification") -> Any:
    """A trained classifier/regressor as saved (a distillation teacher)."""
    import transformers

    _quiet_transformers()
    return load_part(cfg, getattr(transformers, auto_name).from_pretrained, "model")


def load_model(
    cfg: ModelConfig,
    task: str,
    labels: list[str] | None,
    vocab_size: int,
    dropout: float | None = None,
    auto_name: str | None = None,
    ignore_mismatched_sizes: bool = False,
) -> tuple[Any, set[str]]:
    """The task model (a sequence classifier/regressor, or a masked LM) and the
    names of its parameters that did not come from the checkpoint (the new head).

    Args:
        cfg: the model config.
        task: classification (one logit per label), regression (one output) or mlm.
        labels: class names in id order (classification only).
        vocab_size: the tokenizer's size; a scratch model's embeddings match it.
        dropout: when set, every dropout probability of the model's config.
        auto_name: the transformers Auto class to build; None = the task's.
        ignore_mismatched_sizes: a checkpoint's head of another size is replaced (new).
    """
    config, auto = model_config(cfg, task, labels, vocab_size, dropout, auto_name)
    if cfg.init == ModelInit.scratch and cfg.from_run is None:
        net = auto.from_config(config, trust_remote_code=cfg.trust_remote_code)
        return net, {name for name, _ in net.named_parameters()}
    extra = {"ignore_mismatched_sizes": True} if ignore_mismatched_sizes else {}
    net, info = load_part(
        cfg, auto.from_pretrained, "model", config=config, output_loading_info=True, **extra
    )
    new = set(info.get("missing_keys", ())) | {k for k, *_ in info.get("mismatched_keys", ())}
    return net, new


def model_config(
    cfg: ModelConfig,
    task: str,
    labels: list[str] | None,
    vocab_size: int,
    dropout: float | None = None,
    auto_name: str | None = None,
) -> tuple[Any, Any]:
    """(the transformers config of the task model, the Auto class that builds it)."""
    import transformers

    from ft_cli import tasks

    _quiet_transformers()
    head, own_auto = tasks.get(task).head(labels)
    auto = getattr(transformers, auto_name or own_auto)
    scratch = cfg.init == ModelInit.scratch and cfg.from_run is None
    if scratch:
        head.update(scratch_sizes(cfg))
        if vocab_size:  # models of token ids (other inputs have none)
            head["vocab_size"] = vocab_size
    from transformers import AutoConfig

    config = load_part(cfg, AutoConfig.from_pretrained, "model config", **head)
    if (
        getattr(config, "pad_token_id", 0) is None
        and getattr(config, "eos_token_id", None) is not None
    ):
        # A decoder pads with its end-of-text token (see load_tokenizer): its sequence
        # classifier finds each row's last real token by it, whichever side is padded.
        end = config.eos_token_id
        config.pad_token_id = end[0] if isinstance(end, list) else end
    if dropout is not None:
        for key, value in list(vars(config).items()):
            if "dropout" in key and (value is None or isinstance(value, float)):
                setattr(config, key, dropout)
    heads = getattr(config, "num_attention_heads", 1)
    # (A model of stages has its heads per stage, a list: each stage checks its own.)
    if scratch and isinstance(heads, int) and getattr(config, "hidden_size", 0) % heads:
        raise FtError(
            f"model.hidden_size={config.hidden_size} must be a multiple of the attention"
            f" heads ({heads}); set model.heads"
        )
    return config, auto


def scratch_sizes(cfg: ModelConfig) -> dict[str, int]:
    """Config overrides for a fresh model, in the names transformers configs share."""
    names = {
        "layers": "num_hidden_layers",
        "hidden_size": "hidden_size",
        "heads": "num_attention_heads",
        "intermediate_size": "intermediate_size",
    }
    sizes = {names[k]: getattr(cfg, k) for k in names if getattr(cfg, k) is not None}
    if cfg.hidden_size is not None and cfg.intermediate_size is None:
        sizes["intermediate_size"] = 4 * cfg.hidden_size  # keep the usual BERT ratio
    return sizes
