"""An Optuna search as a Hydra sweeper (`hydra/sweeper=ft_optuna`), on current Optuna.

The search space is Hydra's override grammar, from `hydra.sweeper.params` and the
command line (which wins): `interval(a, b)` a float, `int(interval(a, b))` a whole
number, `tag(log, interval(a, b))` on a log scale, `choice(a, b, ...)` and `range(a,
b)` a category. Plain overrides are passed to every trial. The study lives in
`storage` under `study_name` and is continued when it exists: each sweep adds
`n_trials` trials, asked `n_jobs` at a time and run by the launcher. A job that
fails, or returns no finite value, is told to the study as failed; more failures
than `max_failure_rate` of the trials so far stop the search. With a stored study,
each job gets its trial (`job_trial`) and reports every evaluation to it; the
pruner (`pruner.name`) may stop it there, and the trial is told as pruned.
"""

# No `from __future__ import annotations`: Hydra runs this module while scanning for
# plugins without registering it, and dataclasses then cannot resolve string annotations.
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional  # noqa: UP035 (OmegaConf reads these types)

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

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
    lower: Optional[float] = None  # noqa: UP045 (threshold: prune below this)
    upper: Optional[float] = None  # noqa: UP045 (threshold: prune above this)


@dataclass
class FtOptunaSweeperConf:
    _target_: str = "hydra_plugins.ft_optuna_sweeper.sweeper.FtOptunaSweeper"
    direction: Any = "maximize"
    study_name: Optional[str] = None  # noqa: UP045
    storage: Optional[str] = None  # noqa: UP045
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 0.0
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
        return optuna.pruners.HyperbandPruner()
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "threshold":
        return optuna.pruners.ThresholdPruner(lower=conf.lower, upper=conf.upper)
    raise ValueError(f"hydra.sweeper.pruner.name={name}: one of {', '.join(PRUNERS)}")


def job_trial(sweeper_conf: Any) -> Any:
    """The Optuna trial this job runs (None: not a job of a stored study), which the run
    reports its evaluations to and which may prune it."""
    import os

    trial_id = os.environ.get(TRIAL_VARIABLE)
    if not trial_id or sweeper_conf is None or not sweeper_conf.get("storage"):
        return None
    import optuna

    study = optuna.load_study(
        study_name=sweeper_conf.study_name,
        storage=sweeper_conf.storage,
        pruner=pruner_of(sweeper_conf.get("pruner")),
    )
    return optuna.trial.Trial(study, int(trial_id))


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
        import optuna

        settings = self.settings
        parser = OverridesParser.create()
        given = [f"{key}={value}" for key, value in (settings.params or {}).items()]
        found: dict[str, Override] = {}
        for override in parser.parse_overrides([*given, *arguments]):
            found[override.get_key_element()] = override  # the command line wins
        space = {k: distribution(o) for k, o in found.items() if o.is_sweep_override()}
        fixed = [o.input_line for o in found.values() if not o.is_sweep_override()]
        directions = settings.direction
        many = not isinstance(directions, str)
        study = optuna.create_study(
            study_name=settings.study_name,
            storage=settings.storage,
            sampler=sampler_of(settings.sampler, space),
            pruner=pruner_of(settings.pruner),
            directions=list(directions) if many else None,
            direction=None if many else directions,
            load_if_exists=True,
        )
        launched = failed = 0
        while launched < settings.n_trials:
            batch = min(settings.n_jobs, settings.n_trials - launched)
            trials = [study.ask(space) for _ in range(batch)]
            jobs = [
                [
                    *fixed,
                    *(f"{key}={_text(trial.params[key])}" for key in space),
                    f"+hydra.job.env_set.{TRIAL_VARIABLE}={trial._trial_id}",
                ]
                for trial in trials
            ]
            returns = self.launcher.launch(jobs, initial_job_idx=launched)
            for trial, outcome in zip(trials, returns, strict=True):
                if _pruned(outcome):
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    continue
                value = _value(outcome)
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    failed += 1
                else:
                    study.tell(trial, value)
            launched += batch
            if failed > settings.max_failure_rate * launched:
                raise RuntimeError(
                    f"{failed} of {launched} trials failed, above"
                    f" hydra.sweeper.max_failure_rate={settings.max_failure_rate}"
                )


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
