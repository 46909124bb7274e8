"""The real `ft` command in subprocesses: multirun, the README's commands, Hydra flags."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY

FT = [sys.executable, "-m", "ft_cli"]


def ft(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*FT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_multirun_gives_one_dir_per_job(tmp_path: Path, monkeypatch, capsys) -> None:
    from ft_cli import cli

    sweep = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    overrides = [*TINY, "train.max_steps=2", "optimizer.lr=1e-5,5e-5"]
    assert cli.run_train(["-m", *overrides, f"hydra.sweep.dir={sweep}"]) == 0
    result = capsys.readouterr()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = []
    for job in jobs:
        record = json.loads((job / "metrics.json").read_text())
        assert record["status"] == "completed"
        assert (job / "model" / "model.safetensors").exists()
        lrs.append(re.search(r"^  lr: (.*)$", (job / "config.yaml").read_text(), re.M).group(1))
    assert lrs == ["1.0e-05", "5.0e-05"]
    assert "\x1b[" not in result.out  # not a terminal: plain lines, no control characters


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path: Path, monkeypatch, capsys) -> None:
    from ft_cli import cli

    sweep = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    overrides = [*TINY, "train.max_steps=2", "data.text_column=nope,text"]
    assert cli.run_train(["-m", *overrides, f"hydra.sweep.dir={sweep}"]) == 1
    result = capsys.readouterr()
    failed = json.loads((sweep / "0" / "metrics.json").read_text())
    assert failed["status"] == "failed"
    assert failed["error"].startswith("data.text_column: column 'nope' is not in the train data")
    assert (sweep / "0" / "error.txt").exists()
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "completed"
    assert "1 job(s) failed: job 0: data.text_column: column 'nope'" in result.err
    assert "Traceback" not in result.err


@pytest.mark.slow  # a process of its own: the real exit code and stderr
def test_single_run_user_error_is_one_line(tmp_path: Path) -> None:
    result = ft("train", *TINY, "data=csv", f"data.files.train={tmp_path / 'x.csv'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("ft: error: data.files.train: file ")


@pytest.mark.slow
def test_hydra_run_dir_and_outputs(tmp_path: Path, monkeypatch, capfd) -> None:
    from ft_cli import cli

    run = tmp_path / "my_run"
    monkeypatch.chdir(tmp_path)
    assert cli.run_train([*TINY, "train.max_steps=3", f"hydra.run.dir={run}"]) == 0
    said = capfd.readouterr().out
    for name in ("config.yaml", "metrics.json", "model/config.json", "model/tokenizer_config.json"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert "run summary" in said
    assert "step 3/3" in said


def test_hydra_help_and_info(tmp_path: Path, monkeypatch, capsys) -> None:
    from ft_cli import cli

    monkeypatch.chdir(tmp_path)
    for args in (["train", "--help"], ["train", "--info", "config"]):
        with pytest.raises(SystemExit) as done:
            cli.main(args)
        assert done.value.code in (None, 0)
    said = capsys.readouterr().out
    assert (
        "model: ast_audioset, bert_base_uncased, convnext_tiny, detr_resnet50, gpt2, minilm_l6, resnet50, rtdetr_r50vd, segformer_b0, t5_small, tiny_bert, tiny_gpt2, tiny_llama, tiny_resnet, tiny_rtdetr, tiny_segformer, tiny_t5, tiny_vit, tiny_wav2vec2, vit_base, wav2vec2_base"
        in said
    )
    assert "Config search path" in said


@pytest.mark.slow  # the packaged MiniLM
def test_readme_commands(tmp_path: Path, monkeypatch, capfd) -> None:
    """The README's quick-start lines install and run what this test runs."""
    readme = (REPO / "README.md").read_text()
    demo_line = "pip install -e . && ft train +recipe=demo"
    test_line = "pip install -e '.[dev]' && python -m pytest -q"
    assert demo_line in readme and test_line in readme
    assert "python -m pytest -q" in (REPO / ".ci" / "run").read_text()
    recipes = ft("recipes", cwd=tmp_path)
    assert recipes.returncode == 0 and "demo" in recipes.stdout
    # The demo itself, shortened: the packaged MiniLM on the shipped data.
    run = tmp_path / "demo"
    from ft_cli import cli

    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    assert cli.run_train(["+recipe=demo", "train.max_steps=4", f"hydra.run.dir={run}"]) == 0
    said = capfd.readouterr()  # every line written to the terminal, libraries' too
    # Only ft's own lines: no "Generating train split" bars from the datasets library.
    assert "run summary" in said.out and "Generating" not in said.out + said.err
    record = json.loads((run / "metrics.json").read_text())
    assert record["steps"] == 4
    assert record["labels"] == ["negative", "positive"]


def test_shell_completion_installs_and_completes(monkeypatch, capsys) -> None:
    from ft_cli import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["train", "-sc", "install=bash"])
    assert done.value.code == 0
    assert "complete -o nospace -o default -F hydra_bash_completion ft" in capsys.readouterr().out
    # What the installed script asks while `ft train optimizer.l<TAB>` is typed.
    monkeypatch.setenv("COMP_LINE", "ft train optimizer.l")
    monkeypatch.setenv("COMP_POINT", "20")
    with pytest.raises(SystemExit):
        cli.main(["-sc", "query=bash"])
    assert capsys.readouterr().out.split() == ["optimizer.lr="]
    monkeypatch.setenv("COMP_LINE", "ft train strategy=freeze_b")
    monkeypatch.setenv("COMP_POINT", "26")
    with pytest.raises(SystemExit):
        cli.main(["-sc", "query=bash"])
    assert capsys.readouterr().out.split() == ["strategy=freeze_backbone"]
