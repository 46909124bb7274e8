"""Searches and launchers: Optuna (resumable, failures not fatal), joblib, the SLURM config."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
from conftest import TINY
from test_cli import ft

# Found, not imported (seconds): the tests that read a study import it.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("optuna") is None, reason="the sweep extra is not installed"
)

QUICK = [*TINY, "train.epochs=1", "data.max_train_samples=48"]


def search(tmp_path: Path, name: str, trials: int) -> list[str]:
    return [
        "-m",
        *QUICK,
        "+search=lr_batch",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",
        "hydra.sweeper.study_name=test",
        f"hydra.sweep.dir={tmp_path / name}",
    ]


@pytest.mark.slow
def test_an_optuna_search_completes_and_resumes_from_its_storage(
    tmp_path: Path, monkeypatch
) -> None:
    from ft_cli import cli

    monkeypatch.chdir(tmp_path)
    for name in ("first", "second"):  # the second search continues the stored study
        assert cli.run_train(search(tmp_path, name, 2)) == 0
    import optuna

    study = optuna.load_study(study_name="test", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trials = study.trials
    assert len(trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # accuracy
    assert len({t.params["optimizer.lr"] for t in trials}) == 4
    # Each trial's value is the best monitored metric its run recorded.
    recorded = []
    for name in ("first", "second"):
        for job in ("0", "1"):
            record = json.loads((tmp_path / name / job / "metrics.json").read_text())
            recorded.append(record["monitor"]["best"])
    assert [t.value for t in trials] == pytest.approx(recorded)
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())["runs"]
    assert [row["status"] for row in summary] == ["done", "done"]


def test_a_loss_monitored_search_minimises() -> None:
    from ft_cli.config.schema import search_direction

    assert search_direction("classification", None, None) == "maximize"
    assert search_direction("mlm", None, None) == "minimize"
    assert search_direction("regression", "mse", None) == "minimize"
    assert search_direction("classification", "loss", "max") == "maximize"


def test_crashed_and_nonfinite_trials_fail_alone(tmp_path: Path, monkeypatch, capsys) -> None:
    from ft_cli import cli
    from ft_cli.training import engine

    real_train = engine.train
    calls: list[int] = []

    def flaky_train(spec, run_dir, overrides=None, records=None, sweep=None, **given):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the GPU fell off the bus")
        result = real_train(spec, run_dir, overrides, records, sweep, **given)
        if len(calls) == 2:
            return dataclasses.replace(result, metric=math.nan)
        return result

    monkeypatch.setattr(engine, "train", flaky_train)
    monkeypatch.chdir(tmp_path)
    code = cli.run_train(search(tmp_path, "sweep", 3))
    assert code == 1
    assert "2 job(s) failed" in capsys.readouterr().err
    import optuna

    study = optuna.load_study(study_name="test", storage=f"sqlite:///{tmp_path / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "FAIL", "COMPLETE"]
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())["runs"]
    by_job = {row["job"]: row for row in summary}
    assert by_job["0"]["error"] == "the GPU fell off the bus"
    assert by_job["1"]["status"] == "failed" and "no finite accuracy" in by_job["1"]["error"]
    assert by_job["2"]["status"] == "done"
    # The non-finite run's own record is kept, only its status changes.
    record = json.loads((tmp_path / "sweep" / "1" / "metrics.json").read_text())
    assert record["steps"] > 0 and record["status"] == "failed"


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes_and_still_summarises(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from ft_cli import cli

    monkeypatch.chdir(tmp_path)  # the sweep runs here; its jobs in joblib's processes
    code = cli.run_train(
        [
            "-m",
            *QUICK,
            "+launcher=joblib",
            "hardware.num_threads=1",
            "train.max_steps=2,0",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    assert code == 1
    assert "1 job(s) failed: job 1: train.max_steps=0 must be at least 1" in capsys.readouterr().err
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())["runs"]
    assert sorted(row["status"] for row in summary) == ["done", "failed"]


def test_the_slurm_launcher_requeues_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = ft("train", "+launcher=slurm", "--cfg", "all", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "SlurmLauncher" in text and "max_num_timeout: 5" in text
    assert "\nresume: auto\n" in text


@pytest.mark.slow
def test_a_requeued_submitit_job_resumes_in_its_own_run_dir(tmp_path: Path, monkeypatch) -> None:
    """submitit's local executor runs jobs the way SLURM does (pickled, in new processes;
    the launching sweep runs in this one).

    A requeued job is called again with the same config: same sweep dir, same job
    number, so resume=auto finds the checkpoints of its first attempt. The first
    attempt runs here (Hydra's basic launcher lays out the sweep dir as submitit's
    does); the requeued one through submitit, in a process per job.
    """
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from ft_cli import cli

    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *QUICK,
        "resume=auto",
        "train.save_every=1",
        "optimizer.lr=1e-4,1e-3",
        f"hydra.sweep.dir={sweep}",
    ]
    assert cli.run_train(args) == 0
    weights = [(sweep / job / "model" / "model.safetensors").read_bytes() for job in ("0", "1")]
    assert cli.run_train([*args, "hydra/launcher=submitit_local"]) == 0
    for job, before in zip(("0", "1"), weights, strict=True):
        record = json.loads((sweep / job / "metrics.json").read_text())
        assert record["resumed_from"].startswith(str(sweep / job / "checkpoints"))
        assert (sweep / job / "model" / "model.safetensors").read_bytes() == before


def test_a_missing_plugin_is_named_with_its_install_command(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    from ft_cli.config import compose
    from ft_cli.errors import FtError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if "optuna" in name else real(name, *a)
    )
    with pytest.raises(FtError) as caught:
        compose.check_overrides(["+search=lr_batch"])
    assert str(caught.value) == (
        "'+search=lr_batch' needs optuna: pip install 'ft-cli[sweep]'"
        " (from a checkout: pip install -e '.[sweep]')"
    )
    compose.check_overrides(["+launcher=joblib"])  # installed: no complaint


def test_the_override_grammar_becomes_optuna_distributions_and_samplers_by_name() -> None:
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from hydra_plugins.ft_optuna_sweeper import sweeper

    parsed = OverridesParser.create().parse_overrides(
        [
            "optimizer.lr=tag(log, interval(1e-5, 1e-3))",
            "train.epochs=int(interval(1, 4))",
            "train.batch_size=choice(16, 32)",
            "train.seed=range(1, 4)",
        ]
    )
    found = {o.get_key_element(): sweeper.distribution(o) for o in parsed}
    assert found["optimizer.lr"] == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert found["train.epochs"] == optuna.distributions.IntDistribution(1, 4)
    assert found["train.batch_size"].choices == (16, 32)
    assert found["train.seed"].choices == (1, 2, 3)
    for name in sweeper.SAMPLERS:
        conf = OmegaConf.create({"name": name, "seed": 0})
        space = {k: v for k, v in found.items() if name != "grid" or hasattr(v, "choices")}
        assert isinstance(sweeper.sampler_of(conf, space), optuna.samplers.BaseSampler)
    with pytest.raises(ValueError, match="one of tpe, random"):
        sweeper.sampler_of(OmegaConf.create({"name": "annealing", "seed": 0}), found)


@pytest.mark.slow
def test_a_pruner_stops_a_trial_at_its_first_evaluation_and_the_study_says_pruned(
    tmp_path: Path, monkeypatch
) -> None:
    from ft_cli import cli

    monkeypatch.chdir(tmp_path)
    args = search(tmp_path, "pruned", 1)
    args += ["train.max_steps=3", "train.eval_every=1"]
    # Threshold: an accuracy below 2 is always "behind", so the trial stops at step 1.
    args += ["hydra.sweeper.pruner.name=threshold", "hydra.sweeper.pruner.lower=2.0"]
    assert cli.run_train(args) == 0
    import optuna

    study = optuna.load_study(study_name="test", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["PRUNED"]
    assert all(list(t.intermediate_values) == [1] for t in study.trials)
    record = json.loads((tmp_path / "pruned" / "0" / "metrics.json").read_text())
    assert record["status"] == "pruned" and record["steps"] == 1
    summary = json.loads((tmp_path / "pruned" / "summary.json").read_text())["runs"]
    assert [row["status"] for row in summary] == ["pruned"]
