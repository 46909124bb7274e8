"""Searches and launchers: Optuna (resumable, failures not fatal), joblib, the SLURM config."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
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
    # n_trials is the study's: the same command again adds nothing, a larger budget the rest.
    for name, trials in (("first", 2), ("again", 2), ("second", 3)):
        assert cli.run_train(search(tmp_path, name, trials)) == 0
    import optuna

    study = optuna.load_study(study_name="test", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trials = study.trials
    assert len(trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # accuracy
    assert len({t.params["optimizer.lr"] for t in trials}) == 3
    assert not (tmp_path / "again").exists() or not list((tmp_path / "again").glob("*/"))
    # Each trial runs in the subdir of its number; its value is its run's best monitored metric.
    recorded = []
    for name, number in (("first", 0), ("first", 1), ("second", 2)):
        record = json.loads((tmp_path / name / str(number) / "metrics.json").read_text())
        recorded.append(record["monitor"]["best"])
    assert [t.value for t in trials] == pytest.approx(recorded)
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())["runs"]
    assert [row["status"] for row in summary] == ["done"]


def test_a_loss_monitored_search_minimises() -> None:
    from ft_cli.config.schema import search_direction

    assert search_direction("classification", None, None) == "maximize"
    assert search_direction("mlm", None, None) == "minimize"
    assert search_direction("regression", "mse", None) == "minimize"
    assert search_direction("classification", "loss", "max") == "maximize"


@pytest.mark.slow
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


def test_successive_halving_waits_for_its_first_rung_and_keeps_the_best_share() -> None:
    """min_resource and reduction_factor reach Optuna: no trial is pruned before step
    4, and at step 4 only the best half of the trials so far go on."""
    import optuna
    from omegaconf import OmegaConf

    from hydra_plugins.ft_optuna_sweeper import sweeper

    conf = {"name": "successive_halving", "min_resource": 4, "reduction_factor": 2}
    study = optuna.create_study(
        direction="maximize", pruner=sweeper.pruner_of(OmegaConf.create(conf))
    )
    decisions = []
    for value in (0.9, 0.5, 0.95, 0.92):
        trial = study.ask()
        trial.report(0.0, 1)  # far behind, but before the first rung
        early = trial.should_prune()
        trial.report(value, 4)
        decisions.append((early, trial.should_prune()))
        study.tell(trial, value)
    # The fourth is second of four at step 4: in the best half (reduction_factor 2).
    assert decisions == [(False, False), (False, True), (False, False), (False, False)]


def test_objectives_are_name_and_mode_or_a_one_line_error() -> None:
    from ft_cli.errors import FtError
    from ft_cli.search import objectives

    found = objectives.parse(["accuracy:max", " latency_ms:min"])
    assert [(o.name, o.direction) for o in found] == [
        ("accuracy", "maximize"),
        ("latency_ms", "minimize"),
    ]
    for bad, said in (("accuracy", "not NAME:max"), ("f1:up", "not NAME:max")):
        with pytest.raises(FtError, match=said):
            objectives.parse([bad])
    with pytest.raises(FtError, match="appears twice"):
        objectives.parse(["f1:max", "f1:min"])


def test_the_pareto_front_is_every_run_no_other_beats_on_both(tmp_path: Path, capsys) -> None:
    from ft_cli.commands import runs
    from ft_cli.rundir import pareto

    # (accuracy: max, latency: min): c beats b on both; a and c and d trade off.
    points = {"a": (0.9, 5.0), "b": (0.7, 4.0), "c": (0.8, 3.0), "d": (0.6, 1.0), "e": (0.6, 2.0)}
    assert pareto.front([list(p) for p in points.values()], ["max", "min"]) == [0, 2, 3]
    assert pareto.front([[1.0, 1.0], [1.0, 1.0]], ["max", "max"]) == [0, 1]  # ties both stay
    for job, (accuracy, latency) in points.items():
        (tmp_path / job).mkdir()
        record = {
            "status": "completed",
            "monitor": {"metric": "accuracy", "mode": "max", "best": accuracy},
            "objectives": {
                "accuracy": {"value": accuracy, "mode": "max"},
                "latency_ms": {"value": latency, "mode": "min"},
            },
        }
        (tmp_path / job / "metrics.json").write_text(json.dumps(record))
    (tmp_path / "f").mkdir()  # a failed trial is on no front
    (tmp_path / "f" / "metrics.json").write_text('{"status": "failed", "error": "boom"}')
    assert runs.main([str(tmp_path)]) == 0
    said = capsys.readouterr().out
    assert "Pareto front (accuracy, latency_ms): a, c, d" in said
    summary = json.loads((tmp_path / "summary.json").read_text())["runs"]
    assert {row["job"]: row["pareto"] for row in summary} == {
        "a": True,
        "b": False,
        "c": True,
        "d": True,
        "e": False,
        "f": None,
    }
    header = (tmp_path / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"objective/accuracy", "objective/latency_ms", "pareto"} <= set(header)


def test_a_trial_whose_worker_stopped_beating_is_failed_and_leaves_the_budget(
    tmp_path: Path,
) -> None:
    import time

    import optuna

    from hydra_plugins.ft_optuna_sweeper import storage

    journal = storage.open_storage(str(tmp_path / "study.log"))  # a path: the journal file
    study = optuna.create_study(study_name="s", storage=journal)
    alive, dead, done = study.ask(), study.ask(), study.ask()
    study.tell(done, 1.0)
    with storage.heartbeat(study, [alive._trial_id], interval=0.05):
        time.sleep(0.2)
        dead.set_user_attr(storage.HEARTBEAT, time.time() - 60)  # its worker died a minute ago
        assert storage.fail_stale(study, grace=30) == [dead.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {alive.number: "RUNNING", dead.number: "FAIL", done.number: "COMPLETE"}
    assert [storage.counted(t) for t in study.get_trials()] == [True, False, True]
    # A trial asked but not started beats from its ask: it is not stale within the grace.
    assert storage.fail_stale(study, grace=30) == []


@pytest.mark.slow
def test_a_two_objective_search_records_its_pareto_front(tmp_path: Path, monkeypatch) -> None:
    from ft_cli import cli

    monkeypatch.chdir(tmp_path)
    args = [*search(tmp_path, "two", 3), "hydra.sweeper.objectives=[accuracy:max,latency_ms:min]"]
    assert cli.run_train(args) == 0
    import optuna

    study = optuna.load_study(study_name="test", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for trial in study.trials:
        record = json.loads((tmp_path / "two" / str(trial.number) / "metrics.json").read_text())
        scored = record["objectives"]
        assert trial.values == [scored["accuracy"]["value"], scored["latency_ms"]["value"]]
        assert scored["accuracy"]["value"] == record["best"]["accuracy"]
        assert 0 < scored["latency_ms"]["value"] < 10_000
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())["runs"]
    front = {int(row["job"]) for row in summary if row["pareto"]}
    assert front == {t.number for t in study.best_trials}
    from ft_cli.commands import report

    report.write_report(tmp_path / "two", confusion=False)
    assert (tmp_path / "two" / "pareto_front.png").stat().st_size > 1000


def worker(tmp_path: Path, name: str, trials: int) -> subprocess.Popen:
    """`ft train -m +search=...` in a process of its own on the journal study."""
    args = search(tmp_path, name, trials)
    args[args.index(f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}")] = (
        f"hydra.sweeper.storage={tmp_path / 'study.log'}"
    )
    args += ["hydra.sweeper.heartbeat_interval=0.5", "hydra.sweeper.grace_period=3"]
    return subprocess.Popen(
        [sys.executable, "-m", "ft_cli", "train", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_workers_share_one_study_and_resume_the_trial_of_a_killed_one(tmp_path: Path) -> None:
    import signal
    import time

    import optuna

    from hydra_plugins.ft_optuna_sweeper import storage

    def study() -> optuna.Study:
        return optuna.load_study(study_name="test", storage=storage.open_storage(journal))

    journal = str(tmp_path / "study.log")
    killed = worker(tmp_path, "killed", 3)
    deadline = time.monotonic() + 120
    while not (tmp_path / "study.log").is_file() or not study().get_trials(deepcopy=False):
        assert killed.poll() is None and time.monotonic() < deadline, killed.stderr.read()
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)  # mid-trial: nobody tells the study
    killed.wait()
    assert [t.state.name for t in study().trials] == ["RUNNING"]
    time.sleep(3)  # its grace period
    both = [worker(tmp_path, name, 3) for name in ("one", "two")]
    for process in both:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    trials = study().trials
    assert trials[0].state.name == "FAIL" and not storage.counted(trials[0])
    finished = [t.number for t in trials if t.state.name == "COMPLETE"]
    # Three trials count; two workers asking at the same moment may each take the last.
    assert len(finished) in (3, 4) and len(trials) == len(finished) + 1
    ran = {name: {int(p.name) for p in (tmp_path / name).glob("[0-9]*")} for name in ("one", "two")}
    assert not ran["one"] & ran["two"]  # disjoint trials
    assert ran["one"] | ran["two"] == set(finished)
