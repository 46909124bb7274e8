"""An Optuna search as a Hydra sweeper (`hydra/sweeper=ft_optuna`), on current Optuna.

The search space is Hydra's override grammar, from `hydra.sweeper.params` and the
command line (which wins): `interval(a, b)` a float, `int(interval(a, b))` a whole
number, `tag(log, interval(a, b))` on a log scale, `choice(a, b, ...)` and `range(a,
b)` a category. Plain overrides are passed to every trial.

The study lives in `storage` (see storage.py) under `study_name` and is continued when
it exists: a sweep asks trials, `n_jobs` at a time, run by the launcher, until the study
holds `n_trials` trials (those whose worker died aside), so a search that was stopped
resumes with the command that started it, and several workers (processes, machines,
SLURM jobs) running that command share the trials out. Each job runs in the subdir of
its trial's number.
A job that fails, or returns no finite value, is told as failed; more failures than
`max_failure_rate` of this worker's trials stop it. With a stored study, each job gets
its trial (`job_trial`), reports every evaluation to it, and the pruner may stop it
there (told as pruned). `objectives` (`[accuracy:max,latency_ms:min]`) make a search of
several objectives; its trials' values form a Pareto front. Under torchrun the first
process alone talks to the study; every process runs the same trials.
"""

# No `from __future__ import annotations`: Hydra runs this module while scanning for
# plugins without registering it, and dataclasses then cannot resolve string annotations.
import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional  # noqa: UP035 (OmegaConf reads these)

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.ft_optuna_sweeper import storage as stored

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "nsgaii")


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe, random, grid, cmaes, gp or nsgaii
    seed: Optional[int] = None  # noqa: UP045


@dataclass
class PrunerConf:
    name: str = "none"  # none, median, hyperband, successive_halving or threshold
    n_startup_trials: int = 5  # median: trials that run to the end before any is pruned
    n_warmup_steps: int = 0  # median: optimizer steps before a trial may be pruned
    # hyperband, successive_halving: the steps of the first rung (null: Optuna's estimate
    # from the first trial, 1% of its steps, which prunes at chance level), the share
    # (1/reduction_factor) kept at each rung, and hyperband's last rung (null: estimated)
    min_resource: Optional[int] = None  # noqa: UP045
    reduction_factor: Optional[int] = None  # noqa: UP045 (null: 3 hyperband, 4 halving)
    max_resource: Optional[int] = None  # noqa: UP045
    lower: Optional[float] = None  # noqa: UP045 (threshold: prune below this)
    upper: Optional[float] = None  # noqa: UP045 (threshold: prune above this)


@dataclass
class FtOptunaSweeperConf:
    _target_: str = "hydra_plugins.ft_optuna_sweeper.sweeper.FtOptunaSweeper"
    direction: Any = "maximize"
    objectives: Optional[List[str]] = None  # noqa: UP006, UP045 ([accuracy:max, latency_ms:min])
    study_name: Optional[str] = None  # noqa: UP045
    storage: Optional[str] = None  # noqa: UP045 (an SQLAlchemy URL or a journal file's path)
    n_trials: int = 20  # the study's, over every worker and every resume
    n_jobs: int = 1
    max_failure_rate: float = 0.0
    heartbeat_interval: float = 30.0  # seconds between a running trial's beats
    grace_period: float = 300.0  # a running trial with no beat for this long has failed
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="ft_optuna", node=FtOptunaSweeperConf, provider="ft"
)


def distribution(override: Override) -> Any:
    """The Optuna distribution of one sweep override."""
    import optuna.distributions as dist

    value = override.value()
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        low, high = value.start, value.end
        if isinstance(low, int) and isinstance(high, int):
            return dist.IntDistribution(low, high, log=log)
        return dist.FloatDistribution(float(low), float(high), log=log)
    if isinstance(value, RangeSweep):
        return dist.CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, ChoiceSweep):
        return dist.CategoricalDistribution(list(override.sweep_iterator()))
    raise ValueError(f"{override.input_line}: not a sweep Optuna can sample")


def sampler_of(conf: Any, space: dict[str, Any]) -> Any:
    """The Optuna sampler `conf.name` names, seeded by `conf.seed`."""
    import optuna

    name, seed = conf.name, conf.seed
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        grid = {key: list(d.choices) for key, d in space.items() if hasattr(d, "choices")}
        if len(grid) != len(space):
            raise ValueError("sampler grid: every searched key must be a choice() or range()")
        return optuna.samplers.GridSampler(grid, seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise ValueError(f"hydra.sweeper.sampler.name={name}: one of {', '.join(SAMPLERS)}")


PRUNERS = ("none", "median", "hyperband", "successive_halving", "threshold")
# The variable a job reads its trial from (set through hydra.job.env_set, which every
# launcher applies in the job's own process).
TRIAL_VARIABLE = "FT_OPTUNA_TRIAL_ID"


def pruner_of(conf: Any) -> Any:
    """The Optuna pruner `conf.name` names (the sweeper's and each job's study use it)."""
    import optuna

    name = conf.name if conf is not None else "none"
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=conf.n_startup_trials, n_warmup_steps=conf.n_warmup_steps
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=getattr(conf, "min_resource", None) or 1,
            max_resource=getattr(conf, "max_resource", None) or "auto",
            reduction_factor=getattr(conf, "reduction_factor", None) or 3,
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=getattr(conf, "min_resource", None) or "auto",
            reduction_factor=getattr(conf, "reduction_factor", None) or 4,
        )
    if name == "threshold":
        return optuna.pruners.ThresholdPruner(lower=conf.lower, upper=conf.upper)
    raise ValueError(f"hydra.sweeper.pruner.name={name}: one of {', '.join(PRUNERS)}")


def objectives_of(sweeper_conf: Any) -> list:
    """The search's objectives (`ft_cli.search.objectives`); empty: the monitored metric."""
    from ft_cli.search import objectives

    return objectives.parse(sweeper_conf.get("objectives") if sweeper_conf else None)


@contextlib.contextmanager
def job_trial(sweeper_conf: Any) -> Iterator[Any]:
    """The Optuna trial this job runs, which the run reports its evaluations to and which
    may prune it (None: not a job of a stored study, or a search of several objectives,
    which Optuna does not prune). The trial beats while the job runs, so that it stays
    running if the worker that asked for it dies meanwhile."""
    import os

    from ft_cli.hardware import distributed
    from ft_cli.training import pruning

    trial_id = os.environ.get(TRIAL_VARIABLE)
    if not trial_id or sweeper_conf is None or not sweeper_conf.get("storage"):
        yield None
        return
    prunable = len(objectives_of(sweeper_conf)) <= 1
    if not distributed.from_env().is_main:
        # Under torchrun the first process alone talks to the study.
        yield pruning.Follower() if prunable else None
        return
    import optuna

    study = optuna.load_study(
        study_name=sweeper_conf.study_name,
        storage=stored.open_storage(sweeper_conf.storage),
        pruner=pruner_of(sweeper_conf.get("pruner")),
    )
    with stored.heartbeat(study, [int(trial_id)], sweeper_conf.heartbeat_interval):
        yield optuna.trial.Trial(study, int(trial_id)) if prunable else None


class FtOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = OmegaConf.create(settings)
        self.config: Optional[DictConfig] = None  # noqa: UP045
        self.launcher: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        from ft_cli.hardware import distributed

        settings = self.settings
        parser = OverridesParser.create()
        given = [f"{key}={value}" for key, value in (settings.params or {}).items()]
        found: dict[str, Override] = {}
        for override in parser.parse_overrides([*given, *arguments]):
            found[override.get_key_element()] = override  # the command line wins
        space = {k: distribution(o) for k, o in found.items() if o.is_sweep_override()}
        fixed = [o.input_line for o in found.values() if not o.is_sweep_override()]
        wanted = objectives_of(settings)
        if len(wanted) > 1 and settings.pruner.name != "none":
            raise ValueError(
                "hydra.sweeper.pruner.name: Optuna prunes searches of one objective only;"
                " set it to none with several hydra.sweeper.objectives"
            )
        # Under torchrun every process runs each trial; the first alone asks and tells.
        place = distributed.init()
        study = self._study(space, wanted) if place.is_main else None
        launched = failed = 0
        while True:
            batch = self._ask(study, space) if place.is_main else None
            batch = distributed.broadcast(batch, place)
            if not batch:
                return
            jobs = [
                [
                    *fixed,
                    *(f"{key}={_text(params[key])}" for key in space),
                    f"+hydra.job.env_set.{TRIAL_VARIABLE}={trial_id}",
                    f"hydra.sweep.subdir={number}",
                ]
                for trial_id, number, params in batch
            ]
            ids = [trial_id for trial_id, _, _ in batch]
            beating = stored.heartbeat(study, ids, settings.heartbeat_interval)
            with beating if study is not None else contextlib.nullcontext():
                returns = self.launcher.launch(jobs, initial_job_idx=launched)
            launched += len(batch)
            if study is not None:
                failed += self._tell(study, batch, returns)
            stop = failed > settings.max_failure_rate * launched
            if distributed.broadcast(stop, place):
                raise RuntimeError(
                    f"{failed} of {launched} trials failed, above"
                    f" hydra.sweeper.max_failure_rate={settings.max_failure_rate}"
                )

    def _study(self, space: dict[str, Any], wanted: list) -> Any:
        import optuna

        settings = self.settings
        directions = [o.direction for o in wanted] or settings.direction
        many = not isinstance(directions, str)
        return optuna.create_study(
            study_name=settings.study_name,
            storage=stored.open_storage(settings.storage),
            sampler=sampler_of(settings.sampler, space),
            pruner=pruner_of(settings.pruner),
            directions=list(directions) if many else None,
            direction=None if many else directions,
            load_if_exists=True,
        )

    def _ask(self, study: Any, space: dict[str, Any]) -> list:
        """The next trials to run, as (id, number, params): none once the study holds
        `n_trials` trials (running ones included; not those whose worker died)."""
        settings = self.settings
        stored.fail_stale(study, settings.grace_period)
        counted = [t for t in study.get_trials(deepcopy=False) if stored.counted(t)]
        room = min(settings.n_jobs, settings.n_trials - len(counted))
        trials = [study.ask(space) for _ in range(max(room, 0))]
        return [(t._trial_id, t.number, t.params) for t in trials]

    def _tell(self, study: Any, batch: list, returns: list) -> int:
        """Tell the study each job's outcome; the number that failed."""
        import optuna

        state = optuna.trial.TrialState
        failed = 0
        for (_, number, _), outcome in zip(batch, returns, strict=True):
            if _pruned(outcome):
                study.tell(number, state=state.PRUNED, skip_if_finished=True)
                continue
            value = _value(outcome)
            if value is None:
                study.tell(number, state=state.FAIL, skip_if_finished=True)
                failed += 1
            else:
                study.tell(number, value, skip_if_finished=True)
        return failed


def _pruned(outcome: Any) -> bool:
    """Whether the job says its trial pruned it (it returns {"pruned": true, ...})."""
    try:
        value = outcome.return_value
    except Exception:  # the job raised: a failure, not a pruning
        return False
    return isinstance(value, dict) and bool(value.get("pruned"))


def _value(outcome: Any) -> Any:
    """A job's finite return value(s), or None (it failed or returned nothing usable)."""
    try:
        value = outcome.return_value
    except Exception:  # the job raised: Hydra re-raises it here
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    if value is None or any(v is None or not math.isfinite(float(v)) for v in values):
        return None
    return list(values) if isinstance(value, (list, tuple)) else float(value)


def _text(value: Any) -> str:
    """A sampled value as an override's value (floats exactly, as Python writes them)."""
    return repr(value) if isinstance(value, float) else str(value)
