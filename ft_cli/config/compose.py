"""Compose configs/ + recipes/ + overrides into a validated `RunSpec`.

Also turns Hydra's and OmegaConf's composition errors into one line that names
the key or option and what would fix it. No torch here.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ft_cli import paths, tasks
from ft_cli.config import schema
from ft_cli.errors import FtError, closest

RECIPE_GROUP = "recipe"
# Added with +GROUP=NAME; they set up Hydra itself (search sweeper, launcher).
ADDON_GROUPS = ("search", "launcher")
_registered: tuple[Path, ...] | None = None  # the recipe files in the ConfigStore
broken_recipes: dict[str, str] = {}  # recipe name -> why its file cannot be read

# A search's direction follows the run's monitored metric (configs/search/).
OmegaConf.register_new_resolver("ft.direction", schema.search_direction, replace=True)


def register() -> None:
    """Register the root schema and every recipe in Hydra's ConfigStore (again only
    when the recipe files changed: FT_RECIPES_DIR names another folder)."""
    global _registered
    files = tuple(recipe_files())
    if _registered == files:
        return
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    _share_when_copied(ConfigStore)
    schema.register_configs()
    broken_recipes.clear()
    for path in files:
        try:
            node = read_recipe(path)
        except FtError as err:  # only a run that asks for this recipe fails
            broken_recipes[path.stem] = str(err)
            continue
        store.store(group=RECIPE_GROUP, name=path.stem, node=node, package="_global_")
    _registered = files


def _share_when_copied(store_class: type) -> None:
    """Hydra deep-copies its config repository at every composition, and with it the
    whole ConfigStore (the schema, every recipe, Hydra's own configs): about half of a
    composition's time, in every `ft` command and each job of a sweep. The store is the
    process's one instance, and `ConfigStore.load` copies each node it hands out: a copy
    may be the store itself. (Hydra's later releases stop holding the store there.)"""
    store_class.__deepcopy__ = lambda self, memo: self


def override(key: str, value: object) -> str:
    """`key=value` as Hydra's grammar reads it: a value with characters outside plain
    paths (`=`, spaces, quotes, brackets ...) is quoted."""
    text = str(value)
    if re.fullmatch(r"[\w./:@+-]*", text):
        return f"{key}={text}"
    if "'" not in text:
        return f"{key}='{text}'"
    return f'{key}="{text.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'


def read_recipe(path: Path) -> DictConfig:
    """A recipe file as a config; a YAML error names the file and its line."""
    import yaml

    try:
        node = OmegaConf.load(path)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise FtError(
            f"recipe {path}{where}: not valid YAML ({err.problem or err.context}); fix or remove"
            " that file"
        ) from err
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FtError(f"recipe {path}: cannot be read ({first}); fix or remove that file") from err
    if not isinstance(node, DictConfig):
        raise FtError(f"recipe {path}: holds no mapping of keys; fix or remove that file")
    return node


def recipe_files() -> list[Path]:
    """The shipped recipes, then the user's (`$FT_RECIPES_DIR/*.yaml`; same name: theirs)."""
    found = {p.stem: p for p in sorted(paths.recipes_dir().glob("*.yaml"))}
    own = os.environ.get("FT_RECIPES_DIR")
    if own:
        if not Path(own).is_dir():
            raise FtError(f"FT_RECIPES_DIR={own} is not a folder; point it at your recipes")
        found |= {p.stem: p for p in sorted(Path(own).glob("*.yaml"))}
    return sorted(found.values(), key=lambda p: p.stem)


def recipe_purpose(path: Path) -> str:
    """The recipe's one-line purpose: its `# Purpose:` comment."""
    for line in path.read_text().splitlines():
        match = re.match(r"#\s*Purpose:\s*(.*)", line)
        if match:
            return match.group(1).strip()
    return ""


def group_options(group: str) -> list[str]:
    if group == RECIPE_GROUP:
        return [p.stem for p in recipe_files()]
    return sorted(p.stem for p in (paths.config_dir() / group).glob("*.yaml"))


def check_overrides(overrides: list[str]) -> None:
    """Catch unknown group options and keys early, with the valid choices named.

    Sweep values (`a,b`) are checked one by one; anything this cannot judge is
    left to Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for token in overrides:
        try:
            parser.parse_overrides([token])
        except Exception as err:
            detail = " ".join(str(err).split()).split(" See https://")[0]
            key, _, value = token.partition("=")
            quoted = f"""'{key}="{value}"'""" if value else "'key=\"a value\"'"
            raise FtError(
                f"cannot parse '{token}': {detail}; write key=value, group=option or"
                f" +key=value, and quote a value with spaces, quotes or non-ASCII letters:"
                f" {quoted}"
            ) from err
        if token.startswith("hydra.") or token.startswith("hydra/") or "=" not in token:
            continue
        key, _, value = token.partition("=")
        key = key.lstrip("+~")
        if key in (*schema.GROUPS, RECIPE_GROUP, *ADDON_GROUPS):
            options = group_options(key)
            for choice in _sweep_values(value):
                if key == RECIPE_GROUP and choice in broken_recipes:
                    raise FtError(broken_recipes[choice])
                if choice not in options:
                    raise FtError(
                        f"unknown {key} option '{choice}' in '{token}'{closest(choice, options)};"
                        f" valid options: {', '.join(options)}"
                    )
                _check_plugin(key, choice, token)
        else:  # a dotted key or a top-level one (output_dir, resume, ...)
            _check_key(key, token)


# Add-on options that need a Hydra plugin from the `sweep` extra.
PLUGINS = {
    ("search", None): "optuna",
    ("launcher", "joblib"): "hydra_plugins.hydra_joblib_launcher",
    ("launcher", "slurm"): "hydra_plugins.hydra_submitit_launcher",
}


def _check_plugin(group: str, option: str, token: str) -> None:
    import importlib.util

    module = PLUGINS.get((group, option)) or PLUGINS.get((group, None))
    if module is None:
        return
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        package = module.split(".")[-1].replace("_", "-")
        raise FtError(
            f"'{token}' needs {package}: pip install 'ft-cli[sweep]'"
            " (from a checkout: pip install -e '.[sweep]')"
        )


def _sweep_values(value: str) -> list[str]:
    value = re.sub(r"^(choice|range|glob)\((.*)\)$", r"\2", value)
    # `logger=[tensorboard,mlflow]` picks several options of one group.
    return [v.strip(" []") for v in value.split(",") if v.strip(" []")]


def _check_key(dotted: str, token: str) -> None:
    node: type = schema.RunSpec
    walked: list[str] = []
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node):
            return  # a list element or a free-form value: Hydra judges it
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            where = ".".join(walked) or "the config"
            hint = closest(part, fields)
            raise FtError(
                f"unknown key '{dotted}' in '{token}'{hint}; keys in {where}: {', '.join(fields)}"
            )
        walked.append(part)
        node = _field_type(node, part)


def _field_type(cls: type, name: str) -> type:
    hint = typing.get_type_hints(cls)[name]
    return hint if isinstance(hint, type) else object


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose and validate in-process (tests, `ft recipes`-style checks)."""
    return compose_with_choices(overrides)[0]


def compose_spec(overrides: list[str]) -> schema.RunSpec:
    """The typed spec of a command line's overrides."""
    return to_spec(compose_config(overrides), overrides)


def compose_with_choices(overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
    """The composed config and the option chosen for each group (`ft explain`)."""
    from hydra import compose, initialize_config_dir

    register()
    check_overrides(overrides)
    try:
        with initialize_config_dir(str(paths.config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except Exception as err:
        raise explain_error(err) from err
    choices = {k: str(v) for k, v in cfg.hydra.runtime.choices.items() if k in schema.GROUPS}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def to_spec(cfg: DictConfig, overrides: list[str] | None = None) -> schema.RunSpec:
    """Turn a composed config into the typed RunSpec; missing values fail by key.

    `overrides`: the command line's, checked against the spec (a multi-task
    run has no top-level data to set).
    """
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            key = missing[0]
            raise FtError(f"{key} is required but not set; add {key}=VALUE to the command")
        spec = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise explain_error(err) from err
    assert isinstance(spec, schema.RunSpec)
    schema.check_spec(spec)
    if tasks.info(spec.task.kind).targets == "tasks":
        _check_multitask_overrides(spec, overrides or [])
    return spec


def _check_multitask_overrides(spec: schema.RunSpec, overrides: list[str]) -> None:
    """`data.KEY=V` would set nothing in a multi-task run: each task has its own data."""
    for override in overrides:
        key = override.lstrip("~+").split("=", 1)[0]
        if key == "data" or key.startswith("data."):
            inner = key[len("data") :] or ".max_length"
            example = f"task.tasks.{next(iter(spec.task.tasks))}.data{inner}=..."
            raise FtError(
                f"{override}: task=multitask reads each task's own data; set it per task,"
                f" e.g. {example}"
            )


def explain_error(err: BaseException) -> FtError:
    """One readable line for a Hydra/OmegaConf composition error."""
    if isinstance(err, FtError):
        return err
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        key = cause.full_key
        message = str(getattr(cause, "msg", "") or str(cause)).splitlines()[0]
        if "not a subclass of SubTaskConfig" in message:
            return FtError(
                f"task.tasks.{key}: a task cannot be added from the command line (it needs its"
                " kind and data together); add it to a recipe (see recipes/demo_multitask.yaml)"
                " and override its keys from the shell"
            )
        if "not in struct" in message or ("Key '" in message and "not in" in message):
            return FtError(f"unknown key '{key}': {message}")
        return FtError(f"{key}: {message}")
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return FtError(text)
