"""SQL over Optuna's own tables (``optuna.storages._rdb.models``): reads and writes in one statement where
Optuna's own methods take a transaction of many round trips, paid per epoch or per admission by every worker.

The one-statement writes (PostgreSQL): Optuna writes a parameter, an intermediate value or a user
attribute in a transaction of four or five round trips (BEGIN, read the trial, read the row, write it,
COMMIT), several times per epoch of every trial. Here each is one INSERT ... SELECT ... WHERE the trial is
RUNNING ... ON CONFLICT, in autocommit. When it writes no row (the trial is finished or gone, or the
parameter is already set), Optuna's own method runs instead and raises or skips exactly as it would have.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import optuna
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc, func, select, update

if TYPE_CHECKING:
    from sqlalchemy.sql import Select

__all__ = [
    "FAST_WRITES",
    "FAST_WRITE_RESULTS",
    "Curve",
    "complete_ids_query",
    "read_curves",
    "read_trial",
    "set_any_trial_user_attr",
    "stale_trial_ids",
    "state_counts_query",
    "study_user_attr_query",
    "trial_state_query",
]


def trial_state_query(trial_id: int) -> Select[Any]:
    """``SELECT state FROM trials WHERE trial_id = ...``"""
    table = models.TrialModel.__table__
    return select(table.c.state).where(table.c.trial_id == trial_id)


def study_user_attr_query(study_id: int, key: str) -> Select[Any]:
    """``SELECT value_json FROM study_user_attributes WHERE study_id = ... AND key = ...``"""
    table = models.StudyUserAttributeModel.__table__
    return select(table.c.value_json).where(table.c.study_id == study_id, table.c.key == key)


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


def state_counts_query(study_id: int) -> Select[Any]:
    """``SELECT state, count(*) ... GROUP BY state`` over one study's trials."""
    table = models.TrialModel.__table__
    return select(table.c.state, func.count()).where(table.c.study_id == study_id).group_by(table.c.state)


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


def set_any_trial_user_attr(storage: optuna.storages.RDBStorage, trial_id: int, key: str, value: Any) -> None:
    """Set a user attribute of a trial in any state, in one INSERT ... ON CONFLICT DO UPDATE.

    Optuna refuses to change a finished trial; a note about what happened to one's files since (its
    checkpoint removed by ``keep_checkpoints``) belongs with the trial all the same. SQLite and PostgreSQL
    both take the statement (the storages edgesearch opens).
    """
    from sqlalchemy.dialects import postgresql, sqlite

    table = models.TrialUserAttributeModel.__table__
    dialect = postgresql if storage.engine.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(trial_id=trial_id, key=key, value_json=json.dumps(value))
    statement = statement.on_conflict_do_update(
        index_elements=["trial_id", "key"], set_={"value_json": statement.excluded.value_json}
    )
    with _one_statement(storage) as connection:
        connection.execute(statement)


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
