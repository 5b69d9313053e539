"""The storage and ids behind Optuna's ``Study`` and ``Trial``, and the worker's calls that need them:
trial state and counts read in one statement, the heartbeat, handing a trial back, ``ask`` without the
queue scan and ``tell`` without the read-back, renaming a study, and Optuna's ``ArtifactStore`` type."""

from __future__ import annotations

import logging
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import optuna
from optuna.artifacts._protocol import ArtifactStore
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc, update

from edgesearch.errors import first_line
from edgesearch.searcher.storage._optuna.queries import Curve, set_any_trial_user_attr
from edgesearch.searcher.storage._optuna.routing import RoutedRDBStorage

if TYPE_CHECKING:
    pass

__all__ = [
    "ArtifactStore",
    "ask",
    "complete_curves",
    "count_trials",
    "hand_back",
    "has_stale_trials",
    "heartbeat",
    "is_retry",
    "live_trials",
    "rdb_storage",
    "release_slot",
    "rename_study",
    "set_finished_trial_user_attr",
    "set_heartbeat",
    "stored_state",
    "study_exists",
    "study_storage",
    "study_user_attr",
    "tell",
]

_log = logging.getLogger(__name__)


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes through (Optuna's trial cache in front of the database)."""
    storage: optuna.storages.BaseStorage = study._storage
    return storage


def rdb_storage(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The study's RDB storage behind Optuna's cache, or None for another kind of storage."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def stored_state(study: optuna.Study, trial: optuna.Trial) -> TrialState:
    """The trial's state as the storage holds it now (another worker may have changed it).

    One statement where the storage can (ReconnectingRDBStorage): ``get_trial`` would read the whole
    trial (its parameters, values and attributes: six statements) for its state.
    """
    storage = rdb_storage(study)
    if isinstance(storage, _ReadsTrialStates):
        return storage.trial_state(trial._trial_id)
    return study._storage.get_trial(trial._trial_id).state


@runtime_checkable
class _ReadsTrialStates(Protocol):
    def trial_state(self, trial_id: int) -> TrialState: ...


@runtime_checkable
class _ReadsStudyUserAttrs(Protocol):
    def study_user_attr(self, study_id: int, key: str) -> Any: ...


def study_user_attr(study: optuna.Study, key: str) -> Any:
    """One user attribute of the study as the storage holds it now (``None`` when it is not set).

    One statement where the storage can (ReconnectingRDBStorage), not through Optuna's cache, which
    reads every attribute of the study in a transaction of four round trips.
    """
    storage = rdb_storage(study)
    if isinstance(storage, _ReadsStudyUserAttrs):
        return storage.study_user_attr(study._study_id, key)
    return study._storage.get_study_user_attrs(study._study_id).get(key)


def is_retry(trial: optuna.Trial) -> bool:
    """Whether the trial is the heartbeat's retry of a failed trial (it then carries its run_dir)."""
    return trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial") is not None


@runtime_checkable
class _ReadsCompleteCurves(Protocol):
    def complete_curves(self, study_id: int) -> list[Curve]: ...


def complete_curves(study: optuna.Study) -> list[Curve]:
    """The study's COMPLETE trials' curves in number order, for a pruner: read incrementally where the storage can.

    ``study.get_trials`` goes through Optuna's trial cache, which re-reads every unfinished trial
    of the study, whole, at each call; a pruner asking once per epoch in each of N workers then
    reads N running trials N times an epoch. ReconnectingRDBStorage reads each complete trial's
    curve once.
    """
    storage = rdb_storage(study)
    if isinstance(storage, _ReadsCompleteCurves):
        return storage.complete_curves(study._study_id)
    return [
        Curve(t.number, t.intermediate_values, t.user_attrs.get("config"))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]


@runtime_checkable
class _CountsTrials(Protocol):
    def count_trials(self, study_id: int) -> Counter[TrialState]: ...


def count_trials(study: optuna.Study) -> Counter[TrialState]:
    """The study's trials by state, read from the database itself.

    Not through the study's in-process trial cache: that cache may never see a trial whose
    row was committed after a newer one (it only re-reads ids above the last finished trial),
    and one missed trial is enough for two workers to take the same last slot.
    """
    storage = rdb_storage(study)
    if isinstance(storage, _CountsTrials):  # ReconnectingRDBStorage: one statement, retried through outages
        return storage.count_trials(study._study_id)
    if storage is None:
        return Counter(t.state for t in study.get_trials(deepcopy=False))
    return Counter(t.state for t in storage.get_all_trials(study._study_id, deepcopy=False))


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every interval on a thread while the block runs.

    Ours, not Optuna's: Optuna beats only inside ``study.optimize``, and a worker that calls
    ``ask``/``tell`` itself must prove its trial alive the same way.
    """
    storage = rdb_storage(study)
    interval = storage.get_heartbeat_interval() if storage is not None else None
    if storage is None or interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception as exc:  # a dropped connection, or the study deleted under us: try again
                # One line for the user (the trial loop says what happened to the study, if anything);
                # the traceback only when debugging, since the main thread goes on either way.
                _log.warning("heartbeat of trial %d failed (%s); retrying", trial.number, _root_cause(exc))
                _log.debug("heartbeat of trial %d failed", trial.number, exc_info=True)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause: Optuna wraps a commit's real error (a dropped
    connection, a row deleted under the update) in a ``StorageInternalError`` that names neither."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def hand_back(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """FAIL the interrupted trial and queue its retry at once, as the heartbeat would do later.

    The retry carries the trial's ``run_dir``, so it resumes from the last checkpoint written.
    """
    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=TrialState.FAIL)
    frozen = study._storage.get_trial(trial._trial_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, frozen)


def set_finished_trial_user_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Set a user attribute of ``trial``, finished or not, in the database (Optuna refuses a finished trial's).

    Retried through outages as every database call of the storage. Processes that read the trial
    afresh see it; one that holds the finished trial in Optuna's cache (a worker) keeps its old copy.
    """
    storage = rdb_storage(study)
    if storage is None:
        raise TypeError(f"a finished trial's attributes need an RDB storage, not {type(study._storage).__name__}")

    def write() -> None:
        set_any_trial_user_attr(storage, trial._trial_id, key, value)

    if isinstance(storage, RoutedRDBStorage):
        storage.database_call("set_trial_user_attr", write)
    else:
        write()


def has_stale_trials(study: optuna.Study) -> bool:
    """Whether a RUNNING trial of the study has missed its heartbeats past the grace period (one statement)."""
    storage = rdb_storage(study)
    if storage is None or storage.heartbeat_interval is None:
        return False
    return bool(storage._get_stale_trial_ids(study._study_id))


def live_trials(study: optuna.Study) -> list[int]:
    """Numbers of the study's RUNNING trials whose worker is alive: heartbeats within the grace period.

    Without heartbeats (a storage opened without them) every RUNNING trial counts as live.
    """
    running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    storage = rdb_storage(study)
    if storage is None or storage.heartbeat_interval is None:
        return [t.number for t in running]
    stale = set(storage._get_stale_trial_ids(study._study_id))
    return [t.number for t in running if t._trial_id not in stale]


def study_exists(study: optuna.Study) -> bool:
    """Whether the study is still in its storage (``study delete`` may remove it under a worker)."""
    try:
        study._storage.get_study_id_from_name(study.study_name)
    except KeyError:
        return False
    return True


def ask(study: optuna.Study, *, none_waiting: bool) -> optuna.Trial:
    """``study.ask()``, without its look for a WAITING trial when the caller knows there is none.

    That look goes through Optuna's trial cache, which re-reads every unfinished trial of the study
    whole: with N workers, the N trials running elsewhere, at every ask. A worker that has just
    counted the study's trials under the admission lock (retries are queued under it too) knows
    whether one waits; with none, the new trial is created at once. Otherwise as ``ask()`` does.
    """
    if not none_waiting:
        return study.ask()
    study._thread_local.cached_all_trials = None  # as ask() does: a sampler reads the trials afresh
    return optuna.Trial(study, study._storage.create_new_trial(study._study_id))


def set_heartbeat(
    storage: optuna.storages.RDBStorage,
    interval: int | None,
    grace_period: int | None,
    callback: Callable[[optuna.Study, FrozenTrial], None] | None,
) -> None:
    """RDBStorage's heartbeat settings, set on an open storage as its constructor sets them (Optuna
    reads these attributes at each use)."""
    storage.heartbeat_interval = interval
    storage.grace_period = grace_period
    storage.heartbeat_stale_trial_callback = callback
    storage.failed_trial_callback = callback


def release_slot(study: optuna.Study, trial: optuna.Trial) -> None:
    """Put a just-asked trial back to WAITING: another worker took the last slot meanwhile."""
    study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)


def rename_study(study: optuna.Study, name: str) -> bool:
    """Give the study ``name`` in one UPDATE; False when another study has that name already.

    Optuna has no rename, but ``studies.study_name`` is unique, so the database itself decides
    between two creators of one name: the first rename wins, the second gets False.
    """
    storage = rdb_storage(study)
    if storage is None:
        raise TypeError(f"renaming a study needs an RDB storage, not {type(study._storage).__name__}")
    table = models.StudyModel.__table__
    statement = update(table).where(table.c.study_id == study._study_id).values(study_name=name)
    try:
        with storage.engine.begin() as connection:
            connection.execute(statement)
    except exc.IntegrityError:
        return False
    return True


def tell(
    study: optuna.Study,
    trial: optuna.Trial,
    values: float | Sequence[float] | None = None,
    *,
    state: TrialState | None = None,
) -> None:
    """``study.tell(trial, values, state=state)``, without reading the trial back afterwards.

    ``Study.tell`` ends by reading the whole trial again (six statements) and deep-copying it, only to
    return it; a worker has no use for that copy. Everything before it (the checks, the sampler's
    ``after_trial``, the write) is Optuna's own.
    """
    from optuna.study._tell import _tell_with_warning

    _tell_with_warning(study=study, trial=trial, value_or_values=values, state=state)
