"""Where a study lives, and how a trial whose worker died stops counting as running.

`hydra.sweeper.storage` is an SQLAlchemy URL (`sqlite:///optuna.db`: one machine, a
few workers; `postgresql://...`, `mysql://...`: any number, on any machines) or a file
path, for Optuna's journal storage (an append-only file: workers on a shared file
system, with no database server).

Every trial in flight has a heartbeat: its worker writes the time into the trial every
`interval` seconds while the trial runs. A worker that asks for trials first marks as
failed every running trial whose heartbeat is older than `grace` seconds: its worker was
killed, and the trial would otherwise count as running forever. Such a trial is marked
orphaned: the search's budget does not count it, so a resumed search runs another.
"""

# No `from __future__ import annotations`: see sweeper.py.
import contextlib
import threading
import time
from typing import Any, Iterator, Optional  # noqa: UP035

HEARTBEAT = "ft_heartbeat"  # the trial's attribute: the time of its last beat
ORPHANED = "ft_orphaned"  # a trial failed because its worker died: not in the budget


def open_storage(text: Optional[str]) -> Any:  # noqa: UP045
    """The Optuna storage `text` names (None: in memory, this process only)."""
    if not text:
        return None
    if "://" in text:
        return text  # Optuna opens an SQLAlchemy URL itself
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    # The open lock (O_EXCL) works on NFS, where the default symlink lock may not.
    return JournalStorage(JournalFileBackend(text, lock_obj=JournalFileOpenLock(text)))


def beat(study: Any, trial_ids: list) -> None:
    import optuna

    now = time.time()
    for trial_id in trial_ids:
        with contextlib.suppress(Exception):  # a trial finished meanwhile: nothing to keep
            optuna.trial.Trial(study, trial_id).set_user_attr(HEARTBEAT, now)


@contextlib.contextmanager
def heartbeat(study: Any, trial_ids: list, interval: float) -> Iterator[None]:
    """Beat for `trial_ids` every `interval` seconds while the block runs."""
    beat(study, trial_ids)
    done = threading.Event()

    def keep_beating() -> None:
        while not done.wait(interval):
            beat(study, trial_ids)

    thread = threading.Thread(target=keep_beating, name="ft-trial-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def counted(trial: Any) -> bool:
    """Whether a trial counts against the search's budget (all but orphaned ones)."""
    return not trial.user_attrs.get(ORPHANED)


def fail_stale(study: Any, grace: float) -> list:
    """Mark failed the running trials with no heartbeat for `grace` seconds; their numbers."""
    import optuna

    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        last = trial.user_attrs.get(HEARTBEAT)
        if last is None and trial.datetime_start is not None:
            last = trial.datetime_start.timestamp()
        if last is not None and now - float(last) > grace:
            with contextlib.suppress(Exception):  # another worker got there first
                optuna.trial.Trial(study, trial._trial_id).set_user_attr(ORPHANED, True)
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                failed.append(trial.number)
    return failed
