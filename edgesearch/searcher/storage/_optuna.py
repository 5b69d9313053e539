"""Every use of Optuna's private API, in one place with a small typed surface.

Optuna's public ``Study``/``Trial`` hide their storage and ids, but a worker that runs its own
heartbeat, hands trials back and counts slots in one statement needs them. Everything that
reaches past the public API lives here, so an Optuna upgrade means reading this file (and the
schema pin of :mod:`edgesearch.searcher.storage.sqlite_summaries`); a test fails if any other module of
edgesearch touches ``optuna.*._*``, ``_storage``, ``_trial_id`` or ``_study_id``.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import optuna
from optuna.artifacts._protocol import ArtifactStore
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc, func, select, update

if TYPE_CHECKING:
    from sqlalchemy.sql import Select

__all__ = [
    "FAST_WRITES",
    "FAST_WRITE_RESULTS",
    "PRIVATE_STORAGE_CALLS",
    "ArtifactStore",
    "Curve",
    "ask",
    "complete_curves",
    "complete_ids_query",
    "count_trials",
    "hand_back",
    "has_stale_trials",
    "heartbeat",
    "is_retry",
    "live_trials",
    "rdb_storage",
    "read_curves",
    "read_trial",
    "release_slot",
    "rename_study",
    "set_heartbeat",
    "stale_trial_ids",
    "state_counts_query",
    "stored_state",
    "study_exists",
    "study_storage",
    "study_user_attr",
    "study_user_attr_query",
    "tell",
    "trial_state_query",
]

_log = logging.getLogger(__name__)

PRIVATE_STORAGE_CALLS = ("_get_trials",)
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
    """The trial's state as the storage holds it now (another worker may have changed it).

    One statement where the storage can (ReconnectingRDBStorage): ``get_trial`` would read the whole
    trial (its parameters, values and attributes: six statements) for its state.
    """
    storage = rdb_storage(study)
    if isinstance(storage, _ReadsTrialStates):
        return storage.trial_state(trial._trial_id)
    return study._storage.get_trial(trial._trial_id).state


def trial_state_query(trial_id: int) -> Select[Any]:
    """``SELECT state FROM trials WHERE trial_id = ...``"""
    table = models.TrialModel.__table__
    return select(table.c.state).where(table.c.trial_id == trial_id)


@runtime_checkable
class _ReadsTrialStates(Protocol):
    def trial_state(self, trial_id: int) -> TrialState: ...


def study_user_attr_query(study_id: int, key: str) -> Select[Any]:
    """``SELECT value_json FROM study_user_attributes WHERE study_id = ... AND key = ...``"""
    table = models.StudyUserAttributeModel.__table__
    return select(table.c.value_json).where(table.c.study_id == study_id, table.c.key == key)


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


def complete_ids_query(study_id: int) -> Select[Any]:
    """``SELECT trial_id ... WHERE state = 'COMPLETE'`` over one study's trials."""
    table = models.TrialModel.__table__
    return select(table.c.trial_id).where(table.c.study_id == study_id, table.c.state == TrialState.COMPLETE.name)


def read_trial(connection: Any, trial_id: int) -> FrozenTrial:
    """One trial, whole, as ``RDBStorage.get_trial`` builds it, in two statements on ``connection``.

    Optuna's reads the trial row and then each of its five child tables lazily, inside a
    transaction (eight round trips), through the ORM; a worker reads its trial whole when it asks
    and when it tells. Here: the row, then one ``UNION ALL`` of the children, read as plain rows.
    A missing trial raises Optuna's ``KeyError``.
    """
    import json

    from sqlalchemy import Float, Integer, String, cast, literal, null, union_all

    trials = models.TrialModel.__table__
    row = connection.execute(
        select(trials.c.number, trials.c.state, trials.c.datetime_start, trials.c.datetime_complete).where(
            trials.c.trial_id == trial_id
        )
    ).first()
    if row is None:
        raise KeyError(models.NOT_FOUND_MSG)

    def part(kind: str, table: Any, key: Any, number: Any, text: Any, order: Any) -> Any:
        return select(
            literal(kind, String).label("kind"),
            cast(key, String).label("key"),
            cast(number, Float).label("number"),
            cast(text, String).label("text"),
            cast(order, Integer).label("ordering"),
        ).where(table.c.trial_id == trial_id)

    p = models.TrialParamModel.__table__
    v = models.TrialValueModel.__table__
    iv = models.TrialIntermediateValueModel.__table__
    ua = models.TrialUserAttributeModel.__table__
    sa = models.TrialSystemAttributeModel.__table__
    children = union_all(
        part("p", p, p.c.param_name, p.c.param_value, p.c.distribution_json, p.c.param_id),
        part("v", v, v.c.objective, v.c.value, v.c.value_type, literal(0)),
        part("i", iv, iv.c.step, iv.c.intermediate_value, iv.c.intermediate_value_type, literal(0)),
        part("u", ua, ua.c.key, null(), ua.c.value_json, literal(0)),
        part("s", sa, sa.c.key, null(), sa.c.value_json, literal(0)),
    )
    params: list[tuple[int, str, float, str]] = []
    values: dict[int, float] = {}
    intermediate: dict[int, float] = {}
    user_attrs: dict[str, Any] = {}
    system_attrs: dict[str, Any] = {}
    value_type = models.TrialValueModel.TrialValueType
    intermediate_type = models.TrialIntermediateValueModel.TrialIntermediateValueType
    for kind, key, number, text, ordering in connection.execute(children):
        if kind == "p":
            params.append((ordering, key, number, text))
        elif kind == "v":
            values[int(key)] = models.TrialValueModel.stored_repr_to_value(number, value_type[text])
        elif kind == "i":
            intermediate[int(key)] = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
                number, intermediate_type[text]
            )
        elif kind == "u":
            user_attrs[key] = json.loads(text)
        else:
            system_attrs[key] = json.loads(text)
    distributions = {name: optuna.distributions.json_to_distribution(text) for _, name, _, text in sorted(params)}
    return FrozenTrial(
        number=row.number,
        state=row.state,
        value=None,
        values=[values[i] for i in range(len(values))] if values else None,
        datetime_start=row.datetime_start,
        datetime_complete=row.datetime_complete,
        params={name: distributions[name].to_external_repr(number) for _, name, number, _ in sorted(params)},
        distributions=distributions,
        user_attrs=user_attrs,
        system_attrs=system_attrs,
        intermediate_values=intermediate,
        trial_id=trial_id,
    )


def stale_trial_ids(connection: Any, study_id: int, grace_seconds: int) -> list[int]:
    """The study's RUNNING trials whose heartbeat is older than ``grace_seconds`` by the database's
    clock, in one statement (as ``RDBStorage._get_stale_trial_ids`` decides).

    Optuna's reads the clock, then loads every RUNNING trial of the study with its heartbeat through
    the ORM, in a transaction: with N workers, N trial objects at every admission of every worker.
    """
    from datetime import timedelta

    trials = models.TrialModel.__table__
    beats = models.TrialHeartbeatModel.__table__
    rows = connection.execute(
        select(trials.c.trial_id, beats.c.heartbeat, func.now())
        .join_from(trials, beats, beats.c.trial_id == trials.c.trial_id)
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING)
    )
    limit = timedelta(seconds=grace_seconds)
    # As Optuna: the clock's time zone dropped (PostgreSQL gives an aware time, the column is naive).
    return [trial_id for trial_id, beat, now in rows if now.replace(tzinfo=None) - beat > limit]


class Curve(NamedTuple):
    """What a pruner reads of a COMPLETE trial: its number, its reported values by step, and its
    stored ``config`` user attribute (None when it has none)."""

    number: int
    intermediate_values: dict[int, float]
    config: Any


def read_curves(connection: Any, trial_ids: set[int]) -> dict[int, Curve]:
    """The :class:`Curve` of each trial of ``trial_ids`` by id, in three narrow statements on ``connection``.

    Not the whole trials: Optuna builds an ORM object per parameter, value and attribute of each,
    and every worker reads every complete trial of the study, so at hundreds of workers that was
    most of a worker's CPU per trial.
    """
    import json

    if not trial_ids:
        return {}
    trials = models.TrialModel.__table__
    reported = models.TrialIntermediateValueModel.__table__
    attrs = models.TrialUserAttributeModel.__table__
    wanted = sorted(trial_ids)
    numbers = {
        trial_id: number
        for trial_id, number in connection.execute(
            select(trials.c.trial_id, trials.c.number).where(trials.c.trial_id.in_(wanted))
        )
    }
    values: dict[int, dict[int, float]] = {trial_id: {} for trial_id in numbers}
    rows = connection.execute(
        select(
            reported.c.trial_id, reported.c.step, reported.c.intermediate_value, reported.c.intermediate_value_type
        ).where(reported.c.trial_id.in_(wanted))
    )
    for trial_id, step, value, kind in rows:
        values[trial_id][step] = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, kind)
    configs = {
        trial_id: json.loads(value_json)
        for trial_id, value_json in connection.execute(
            select(attrs.c.trial_id, attrs.c.value_json).where(attrs.c.key == "config", attrs.c.trial_id.in_(wanted))
        )
    }
    return {trial_id: Curve(number, values[trial_id], configs.get(trial_id)) for trial_id, number in numbers.items()}


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
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


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


# --- One-statement writes of the per-trial calls (PostgreSQL) ----------------------------------
#
# Optuna writes a parameter, an intermediate value or a user attribute in a transaction of four or
# five round trips (BEGIN, read the trial, read the row, write it, COMMIT), several times per epoch
# of every trial. On PostgreSQL each is one INSERT ... SELECT ... WHERE the trial is RUNNING ...
# ON CONFLICT, in autocommit. When it writes no row (the trial is finished or gone, or the parameter
# is already set), Optuna's own method runs instead and raises or skips exactly as it would have.


@runtime_checkable
class _HasOneStatement(Protocol):
    def one_statement(self) -> AbstractContextManager[Any]: ...


def _one_statement(storage: optuna.storages.RDBStorage) -> AbstractContextManager[Any]:
    """The storage's connection for one statement (ReconnectingRDBStorage: inside its lock, the lock's
    transaction, so that a holder never waits for a second connection), else one in autocommit."""
    if isinstance(storage, _HasOneStatement):
        return storage.one_statement()
    connection: AbstractContextManager[Any] = storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    return connection


def _write_if_running(
    storage: optuna.storages.RDBStorage, model: Any, values: dict[str, Any], *, unique: tuple[str, str], update: bool
) -> bool:
    """INSERT ``values`` into ``model``'s table if the trial is RUNNING (``unique``: the table's unique
    pair, whose clash updates the row or, without ``update``, writes nothing); True when a row was written."""
    from sqlalchemy import literal
    from sqlalchemy.dialects.postgresql import insert

    table = model.__table__
    trials = models.TrialModel.__table__
    columns = list(values)
    source = select(*(literal(values[c], type_=table.c[c].type) for c in columns)).where(
        trials.c.trial_id == values["trial_id"], trials.c.state == TrialState.RUNNING
    )
    statement = insert(table).from_select(columns, source)
    if update:
        kept = {c: statement.excluded[c] for c in columns if c not in unique}
        statement = statement.on_conflict_do_update(index_elements=list(unique), set_=kept)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(unique))
    # RETURNING says whether a row was written (SQLAlchemy reports no rowcount for an INSERT).
    with _one_statement(storage) as connection:
        return connection.execute(statement.returning(table.c.trial_id)).first() is not None


def _fast_set_trial_param(
    storage: optuna.storages.RDBStorage,
    trial_id: int,
    param_name: str,
    param_value_internal: float,
    distribution: optuna.distributions.BaseDistribution,
    previous_distribution: optuna.distributions.BaseDistribution | None,
) -> bool:
    if previous_distribution is None:
        return False  # the first of its name in this process: Optuna reads the study's to compare
    optuna.distributions.check_distribution_compatibility(previous_distribution, distribution)
    values = {
        "trial_id": trial_id,
        "param_name": param_name,
        "param_value": param_value_internal,
        "distribution_json": optuna.distributions.distribution_to_json(distribution),
    }
    return _write_if_running(storage, models.TrialParamModel, values, unique=("trial_id", "param_name"), update=False)


def _fast_set_trial_intermediate_value(
    storage: optuna.storages.RDBStorage, trial_id: int, step: int, intermediate_value: float
) -> bool:
    stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(intermediate_value)
    values = {"trial_id": trial_id, "step": step, "intermediate_value": stored, "intermediate_value_type": kind}
    return _write_if_running(
        storage, models.TrialIntermediateValueModel, values, unique=("trial_id", "step"), update=True
    )


def _fast_set_trial_user_attr(storage: optuna.storages.RDBStorage, trial_id: int, key: str, value: Any) -> bool:
    import json

    values = {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
    return _write_if_running(storage, models.TrialUserAttributeModel, values, unique=("trial_id", "key"), update=True)


def _fast_set_trial_state_values(
    storage: optuna.storages.RDBStorage, trial_id: int, state: TrialState, values: Sequence[float] | None = None
) -> bool:
    """A RUNNING trial's end (state, datetime_complete and its values) in one statement.

    Optuna's takes six round trips (BEGIN, the trial FOR UPDATE, each value's row, INSERT, UPDATE,
    COMMIT). Only the end of a RUNNING trial: a move to RUNNING or WAITING, and a trial already
    finished, go to Optuna's method, which decides and raises as it always has.
    """
    from datetime import datetime

    from sqlalchemy import cast, literal, union_all
    from sqlalchemy.dialects.postgresql import insert

    if not state.is_finished():
        return False
    trials = models.TrialModel.__table__
    ended = (
        update(trials)
        .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
        .values(state=state, datetime_complete=datetime.now())  # naive local time, as Optuna stamps trials
        .returning(trials.c.trial_id)
    )
    with _one_statement(storage) as connection:
        if not values:
            return connection.execute(ended).first() is not None
        done = ended.cte("done")
        table = models.TrialValueModel.__table__
        rows = []
        for objective, value in enumerate(values):
            stored, kind = models.TrialValueModel.value_to_stored_repr(value)
            rows.append(
                select(
                    done.c.trial_id,
                    literal(objective, type_=table.c.objective.type),
                    cast(literal(stored, type_=table.c.value.type), table.c.value.type),
                    # Cast: a UNION's columns lose the literals' types, and PostgreSQL would see text.
                    cast(literal(kind, type_=table.c.value_type.type), table.c.value_type.type),
                )
            )
        columns = ["trial_id", "objective", "value", "value_type"]
        statement = insert(table).from_select(columns, rows[0] if len(rows) == 1 else union_all(*rows))
        statement = statement.on_conflict_do_update(
            index_elements=["trial_id", "objective"],
            set_={"value": statement.excluded.value, "value_type": statement.excluded.value_type},
        )
        return connection.execute(statement.returning(table.c.trial_id)).first() is not None


def _fast_record_heartbeat(storage: optuna.storages.RDBStorage, trial_id: int) -> bool:
    """The trial's heartbeat stamped with the database's clock in one statement (Optuna's: a transaction
    of five or six round trips). A trial that is gone (its study deleted) is ignored, as Optuna does."""
    from sqlalchemy.dialects.postgresql import insert

    table = models.TrialHeartbeatModel.__table__
    statement = (
        insert(table)
        .values(trial_id=trial_id, heartbeat=func.now())
        .on_conflict_do_update(index_elements=["trial_id"], set_={"heartbeat": func.now()})
    )
    try:
        with _one_statement(storage) as connection:
            connection.execute(statement)
    except exc.IntegrityError:
        pass  # no such trial any more
    return True


FAST_WRITES: dict[str, Any] = {
    "_set_trial_param": _fast_set_trial_param,
    "set_trial_intermediate_value": _fast_set_trial_intermediate_value,
    "set_trial_user_attr": _fast_set_trial_user_attr,
    "set_trial_state_values": _fast_set_trial_state_values,
    "record_heartbeat": _fast_record_heartbeat,
}
"""RDBStorage methods with a one-statement version for PostgreSQL: name -> f(storage, *args) -> written."""

FAST_WRITE_RESULTS: dict[str, Any] = {"set_trial_state_values": True}
"""What such a method returns when its one statement wrote (Optuna's says True; the others return None)."""


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
