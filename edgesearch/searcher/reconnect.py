"""An Optuna RDB storage that waits out a database outage instead of failing the worker.

A PostgreSQL restart, a failover or a dropped network link makes every storage call raise for
a few seconds. This class retries the calls that failed meanwhile, with exponential backoff, for up
to ``outage_seconds``. A call that fails on a pooled connection found dead (SQLAlchemy discards it)
is first retried at once on a new connection: that replaces ``pool_pre_ping``, which paid a round
trip on every call to find the same thing out. Only connection-level errors are retried (SQLAlchemy's OperationalError,
InterfaceError, or a DBAPIError that invalidated its connection, also when Optuna wraps one in a
StorageInternalError): a genuine error such as a constraint violation surfaces at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import text

from edgesearch.searcher.optuna_internals import (
    FAST_WRITES,
    PRIVATE_STORAGE_CALLS,
    complete_ids_query,
    read_trials,
    state_counts_query,
    trial_state_query,
)

__all__ = ["ReconnectingRDBStorage", "is_connection_error"]

_log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])

# Admission polls the lock from 5 ms, doubling to 2 s: it is held for a count and an ask (tens of ms),
# and with a hundred workers waiting one of them still tries every ~20 ms while each polls rarely.
_LOCK_POLL_FIRST_S = 0.005
_LOCK_POLL_MAX_S = 2.0

# Calls that touch the database. Other private helpers are left alone: they run inside these calls.
_RETRIED = (
    *PRIVATE_STORAGE_CALLS,
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "record_heartbeat",
)


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or the SQLAlchemy error it wraps) means the database could not be reached."""
    if isinstance(exc, StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated


def _dropped_while_pooled(exc: BaseException) -> bool:
    """Whether ``exc`` is a database call that failed because its connection was found dead."""
    if isinstance(exc, StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated


class ReconnectingRDBStorage(RDBStorage):
    """``RDBStorage`` whose database calls survive an outage of up to ``outage_seconds``."""

    outage_seconds: float = 300.0
    _local = threading.local()
    _complete_lock = threading.Lock()  # the class's, so that the storage stays picklable as Optuna's is

    def _retrying(self, name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(self._local, "active", False):  # an outer call already retries this one
            return call(*args, **kwargs)
        self._local.active = True
        try:
            deadline = time.monotonic() + self.outage_seconds
            delay = 0.5
            fresh_connection_tried = False
            while True:
                try:
                    return call(*args, **kwargs)
                except Exception as exc:
                    if not fresh_connection_tried and _dropped_while_pooled(exc):
                        # The pooled connection died while idle (a long epoch, a server restart, a
                        # proxy's idle timeout) and was discarded: one more try at once, on a new one.
                        fresh_connection_tried = True
                        _log.debug("%s: pooled connection was dropped; retrying on a new one", name)
                        continue
                    if not is_connection_error(exc) or time.monotonic() + delay > deadline:
                        raise
                    _log.warning(
                        "storage unreachable during %s (%s); retrying in %.1f s", name, type(exc).__name__, delay
                    )
                    time.sleep(delay)
                    delay = min(delay * 2, 15.0)
        finally:
            self._local.active = False

    def _one_statement(self) -> Any:
        """A connection for a read of one statement: in autocommit, so no BEGIN and ROLLBACK around it
        (two round trips of three)."""
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def count_trials(self, study_id: int) -> Counter[TrialState]:
        """The study's trials by state, counted by the database in one statement.

        Why not ``get_all_trials``: that loads every trial with its parameters and attributes, a
        cost that grows with the study and, in the worker, is paid while holding the admission
        lock. And one statement reads one snapshot: a trial that finishes meanwhile is counted
        once, as RUNNING or as finished, never in neither (two separate counts can miss it, and
        then one trial too many is admitted).
        """
        query = state_counts_query(study_id)

        def count() -> Counter[TrialState]:
            with self._one_statement() as connection:
                return Counter({TrialState(state): int(n) for state, n in connection.execute(query)})

        result: Counter[TrialState] = self._retrying("count_trials", count)
        return result

    def trial_state(self, trial_id: int) -> TrialState:
        """One trial's state, read alone (a KeyError, as Optuna's, when there is no such trial)."""
        query = trial_state_query(trial_id)

        def read() -> TrialState:
            with self._one_statement() as connection:
                state = connection.execute(query).scalar_one_or_none()
            if state is None:
                raise KeyError(f"no trial with id {trial_id}")  # the study was deleted
            return TrialState[state] if isinstance(state, str) else TrialState(state)

        result: TrialState = self._retrying("trial_state", read)
        return result

    def complete_trials(self, study_id: int) -> list[FrozenTrial]:
        """The study's COMPLETE trials in number order, each read from the database once per process.

        A complete trial never changes, so one statement listing the complete ids finds the new
        ones, and only those are read. Why: the median pruner asks at every epoch of every trial.
        """
        query = complete_ids_query(study_id)

        def read() -> list[FrozenTrial]:
            with self._one_statement() as connection:
                ids = {int(trial_id) for (trial_id,) in connection.execute(query)}
            with self._complete_lock:
                cache: dict[int, dict[int, FrozenTrial]] = self.__dict__.setdefault("_complete_trials", {})
                known = cache.setdefault(study_id, {})
                known.update(read_trials(self, study_id, ids - known.keys()))
                return sorted((known[i] for i in ids if i in known), key=lambda t: t.number)

        result: list[FrozenTrial] = self._retrying("complete_trials", read)
        return result

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[bool]:
        """Hold a lock named ``key`` shared by every process using this database; yields whether there is one.

        PostgreSQL: a transaction-scoped advisory lock (released by the server if this process dies),
        which also works through a transaction-pooling PgBouncer.
        SQLite: an advisory lock on a file beside the database, enough for the processes of the
        one machine that can share a SQLite file. Other databases: no lock (yields False).
        """
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            with self._advisory_lock(key):
                yield True
        elif dialect == "sqlite" and self.engine.url.database not in (None, "", ":memory:"):
            with open(f"{self.engine.url.database}-edgesearch.lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield True
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        else:
            yield False

    @contextlib.contextmanager
    def _advisory_lock(self, key: str) -> Iterator[None]:
        """A transaction-scoped advisory lock, taken by polling, held by one open transaction.

        Transaction-scoped so that it works behind a transaction-pooling PgBouncer, where a session
        lock would stay with whichever server connection took it (and an unlock could land on
        another). Polled (``pg_try_advisory_xact_lock``, a short transaction per try) rather than
        waited for: behind a pooler a waiting transaction pins a server connection, so enough
        waiters would hold the whole pool while the lock's holder waits for one to count and ask.
        Released by COMMIT/ROLLBACK, and by the server when this process dies.
        """

        def attempt() -> Any:
            connection = self.engine.connect()
            try:
                taken = connection.execute(text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"), {"key": key})
                if taken.scalar():
                    return connection
                connection.rollback()
            except Exception:
                connection.close()
                raise
            connection.close()
            return None

        delay = _LOCK_POLL_FIRST_S
        while (connection := self._retrying("lock", attempt)) is None:
            time.sleep(random.uniform(delay / 2, delay))  # jittered: pollers do not retry in step
            delay = min(delay * 2, _LOCK_POLL_MAX_S)
        try:
            yield
        finally:
            # Ending the transaction releases the lock; a dropped connection has released it already.
            with contextlib.suppress(Exception):
                connection.rollback()
            with contextlib.suppress(Exception):
                connection.close()


def _wrap(name: str) -> Callable[..., Any]:
    original = getattr(RDBStorage, name)

    @functools.wraps(original)
    def method(self: ReconnectingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(name, getattr(super(ReconnectingRDBStorage, self), name), *args, **kwargs)

    return method


for _name in _RETRIED:
    setattr(ReconnectingRDBStorage, _name, _wrap(_name))


def _wrap_fast(name: str) -> Callable[..., Any]:
    """The method ``name`` in one statement on PostgreSQL (:data:`FAST_WRITES`), else Optuna's; retried."""
    original = getattr(RDBStorage, name)
    fast = FAST_WRITES[name]

    @functools.wraps(original)
    def method(self: ReconnectingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            if self.engine.dialect.name == "postgresql" and fast(self, *args, **kwargs):
                return None
            return original(self, *args, **kwargs)

        return self._retrying(name, call)

    return method


for _name in FAST_WRITES:
    setattr(ReconnectingRDBStorage, _name, _wrap_fast(_name))
