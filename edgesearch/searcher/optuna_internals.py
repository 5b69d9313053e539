"""Every use of Optuna's private API, in one place with a small typed surface.

Optuna's public ``Study``/``Trial`` hide their storage and ids, but a worker that runs its own
heartbeat, hands trials back and counts slots in one statement needs them. Everything that
reaches past the public API lives here, so an Optuna upgrade means reading this file (and the
schema pin of :mod:`edgesearch.searcher.summary`); a test fails if any other module of
edgesearch touches ``optuna.*._*``, ``_storage``, ``_trial_id`` or ``_study_id``.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import optuna
from optuna.artifacts._protocol import ArtifactStore
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy import exc, func, select, update

if TYPE_CHECKING:
    from sqlalchemy.sql import Select

__all__ = [
    "PRIVATE_STORAGE_CALLS",
    "ArtifactStore",
    "count_trials",
    "hand_back",
    "heartbeat",
    "is_retry",
    "live_trials",
    "rdb_storage",
    "release_slot",
    "rename_study",
    "state_counts_query",
    "stored_state",
    "study_exists",
    "study_storage",
]

_log = logging.getLogger(__name__)

PRIVATE_STORAGE_CALLS = ("_get_trials", "_get_stale_trial_ids")
"""RDBStorage's private methods that touch the database (retried through outages like the public ones)."""


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes through (Optuna's trial cache in front of the database)."""
    storage: optuna.storages.BaseStorage = study._storage
    return storage


def rdb_storage(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The study's RDB storage behind Optuna's cache, or None for another kind of storage."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def stored_state(study: optuna.Study, trial: optuna.Trial) -> TrialState:
    """The trial's state as the storage holds it now (another worker may have changed it)."""
    return study._storage.get_trial(trial._trial_id).state


def is_retry(trial: optuna.Trial) -> bool:
    """Whether the trial is the heartbeat's retry of a failed trial (it then carries its run_dir)."""
    return trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial") is not None


def state_counts_query(study_id: int) -> Select[Any]:
    """``SELECT state, count(*) ... GROUP BY state`` over one study's trials."""
    table = models.TrialModel.__table__
    return select(table.c.state, func.count()).where(table.c.study_id == study_id).group_by(table.c.state)


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
            except Exception:  # a dropped connection: try again on the next beat
                _log.warning("heartbeat of trial %d failed; retrying", trial.number, exc_info=True)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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
