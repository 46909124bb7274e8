"""A built wheel carries configs/ and recipes/ and works from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_ships_configs_and_recipes(tmp_path: Path) -> None:
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(tmp_path.glob("ft_cli-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "ft_cli/configs/config.yaml",
        "ft_cli/configs/model/minilm_l6.yaml",
        "ft_cli/recipes/demo.yaml",
        "ft_cli/assets/demo/train.csv",
        "ft_cli/assets/ner/train.conll",
        "ft_cli/assets/qa/train.json",
        "ft_cli/configs/search/lr_batch.yaml",
        "ft_cli/configs/launcher/slurm.yaml",
        "ft_cli/recipes/demo_ner.yaml",
        "ft_cli/assets/tiny_bert/vocab.txt",
    ):
        assert name in names, name

    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONSAFEPATH": "1"}
    probe = (
        "import ft_cli, sys; from ft_cli.cli import main;"
        f" assert ft_cli.__file__.startswith({str(installed)!r}), ft_cli.__file__;"
        " main(sys.argv[1:])"
    )

    def ft_installed(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", probe, *args]
        return subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True)

    recipes = ft_installed("recipes")
    assert recipes.returncode == 0, recipes.stderr
    assert "minilm_mrpc" in recipes.stdout
    composed = ft_installed("train", "+recipe=demo", "--cfg", "job")
    assert composed.returncode == 0, composed.stderr
    assert "train.csv" in composed.stdout
