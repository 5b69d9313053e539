"""An Optuna RDB storage that waits out a database outage instead of failing the worker.

A PostgreSQL restart, a failover or a dropped network link makes every storage call raise for
a few seconds. This class retries the calls that failed meanwhile, with exponential backoff, for up
to ``outage_seconds``. A call that fails on a pooled connection found dead (SQLAlchemy discards it)
is first retried at once on a new connection: that replaces ``pool_pre_ping``, which paid a round
trip on every call to find the same thing out. Only connection-level errors are retried (SQLAlchemy's OperationalError,
InterfaceError, or a DBAPIError that invalidated its connection, also when Optuna wraps one in a
StorageInternalError): a genuine error such as a constraint violation surfaces at once. A SQLite
file that another program keeps locked through all of it ends in one
:class:`~edgesearch.errors.DatabaseLocked` naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import text

from edgesearch.errors import DatabaseLocked
from edgesearch.searcher.storage._optuna.handles import rdb_storage
from edgesearch.searcher.storage._optuna.queries import (
    Curve,
    complete_ids_query,
    read_curves,
    read_trial,
    stale_trial_ids,
    state_counts_query,
    study_user_attr_query,
    trial_state_query,
)
from edgesearch.searcher.storage._optuna.routing import RoutedRDBStorage

if TYPE_CHECKING:
    import optuna

__all__ = ["ReconnectingRDBStorage", "admitted", "is_connection_error", "is_sqlite_busy", "locked_error"]

_log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or the SQLAlchemy error it wraps) means the database could not be reached."""
    if isinstance(exc, StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated


def is_sqlite_busy(exc: BaseException) -> bool:
    """Whether ``exc``, or the error it wraps (Optuna's ``__cause__``, SQLAlchemy's ``orig``), is SQLite's
    SQLITE_BUSY: another connection held the database's lock for longer than the busy timeout."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain of wrappers, never a cycle
        if seen is None:
            return False
        if isinstance(seen, sqlite3.OperationalError):
            return getattr(seen, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY  # extended codes too
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def locked_error(path: Path | str, waited_s: float) -> DatabaseLocked:
    """The one line for a SQLite file that another program kept locked for the ``waited_s`` seconds this one
    waited: the machine, not the input (exit code 1)."""
    where = Path(path).absolute()
    return DatabaseLocked(
        f"the SQLite database {where} is locked by another process (a long write, or a program holding it "
        f"open); gave up after {waited_s:.0f} s. `fuser -v {where}` names it; run again once it lets go"
    )


def _dropped_while_pooled(exc: BaseException) -> bool:
    """Whether ``exc`` is a database call that failed because its connection was found dead."""
    if isinstance(exc, StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated


class ReconnectingRDBStorage(RoutedRDBStorage):
    """``RDBStorage`` whose database calls survive an outage of up to ``outage_seconds``."""

    outage_seconds: float = 300.0
    _local = threading.local()
    _complete_lock = threading.Lock()  # the class's, so that the storage stays picklable as Optuna's is

    def database_call(self, name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)``, retried with backoff while the database cannot be reached."""
        if getattr(self._local, "active", False):  # an outer call already retries this one
            return call(*args, **kwargs)
        self._local.active = True
        try:
            started = time.monotonic()
            deadline = started + self.outage_seconds
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
                    if not is_connection_error(exc):
                        raise
                    if time.monotonic() + delay > deadline:
                        if is_sqlite_busy(exc) and self.engine.url.database:
                            raise locked_error(self.engine.url.database, time.monotonic() - started) from exc
                        raise
                    _log.warning(
                        "%s during %s (%s); retrying in %.1f s",
                        "SQLite database locked by another process" if is_sqlite_busy(exc) else "storage unreachable",
                        name,
                        type(exc).__name__,
                        delay,
                    )
                    time.sleep(delay)
                    delay = min(delay * 2, 15.0)
        finally:
            self._local.active = False

    @contextlib.contextmanager
    def one_statement(self) -> Iterator[Any]:
        """A connection for one statement: in autocommit, so no BEGIN and ROLLBACK around it (two
        round trips of three). Inside :meth:`exclusive` on this thread: the lock's own transaction."""
        held = self._held()
        if held is not None:
            yield held
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield connection

    def _held(self) -> Any:
        """The connection whose transaction holds this storage's lock on this thread, or None."""
        held = getattr(self._local, "held", None)
        return held[1] if held is not None and held[0] is self else None

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
            with self.one_statement() as connection:
                return Counter({TrialState(state): int(n) for state, n in connection.execute(query)})

        result: Counter[TrialState] = self.database_call("count_trials", count)
        return result

    def trial_state(self, trial_id: int) -> TrialState:
        """One trial's state, read alone (a KeyError, as Optuna's, when there is no such trial)."""
        query = trial_state_query(trial_id)

        def read() -> TrialState:
            with self.one_statement() as connection:
                state = connection.execute(query).scalar_one_or_none()
            if state is None:
                raise KeyError(f"no trial with id {trial_id}")  # the study was deleted
            return TrialState[state] if isinstance(state, str) else TrialState(state)

        result: TrialState = self.database_call("trial_state", read)
        return result

    def study_user_attr(self, study_id: int, key: str) -> Any:
        """One user attribute of a study, read alone (``None`` when it is not set)."""
        query = study_user_attr_query(study_id, key)

        def read() -> Any:
            with self.one_statement() as connection:
                value = connection.execute(query).scalar_one_or_none()
            return None if value is None else json.loads(value)

        return self.database_call("study_user_attr", read)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """The trial, whole, in two statements (:func:`read_trial`) instead of Optuna's eight round trips."""

        def read() -> FrozenTrial:
            with self.one_statement() as connection:
                return read_trial(connection, trial_id)

        result: FrozenTrial = self.database_call("get_trial", read)
        return result

    def find_stale_trials(self, study_id: int) -> list[int]:
        """RDBStorage's query in one statement (:func:`stale_trial_ids`): it runs at every admission."""
        if self.heartbeat_interval is None:
            raise RuntimeError("stale trials are found by heartbeats; this storage has none")
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        with self.one_statement() as connection:
            return stale_trial_ids(connection, study_id, grace)

    def complete_curves(self, study_id: int) -> list[Curve]:
        """The study's COMPLETE trials' curves in number order, each read from the database once per process.

        A complete trial never changes, so one statement listing the complete ids finds the new
        ones, and only those are read (:func:`read_curves`). Why: the median pruner asks at every
        epoch of every trial, in every worker.
        """
        query = complete_ids_query(study_id)

        def read() -> list[Curve]:
            with self.one_statement() as connection:
                ids = {int(trial_id) for (trial_id,) in connection.execute(query)}
                with self._complete_lock:
                    cache: dict[int, dict[int, Curve]] = self.__dict__.setdefault("_complete_curves", {})
                    known = cache.setdefault(study_id, {})
                    known.update(read_curves(connection, ids - known.keys()))
                    return sorted((known[i] for i in ids if i in known), key=lambda curve: curve.number)

        result: list[Curve] = self.database_call("complete_curves", read)
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

    def exclusively(self, key: str, body: Callable[[bool], _T]) -> _T:
        """``body(locked)`` inside :meth:`exclusive`, run again whole if the connection is lost meanwhile.

        Inside the lock nothing is retried alone: the lock's transaction went with its connection,
        and with it whatever the body had written (nothing half-done stays behind).
        """

        def once() -> _T:
            with self.exclusive(key) as locked:
                return body(locked)

        result: _T = self.database_call("exclusive", once)
        return result

    @contextlib.contextmanager
    def _advisory_lock(self, key: str) -> Iterator[None]:
        """A transaction-scoped advisory lock; every call of this thread's storage runs in its transaction.

        Transaction-scoped so that it works behind a transaction-pooling PgBouncer, where a session
        lock would stay with whichever server connection took it (and an unlock could land on
        another). Waited for in the server (``pg_advisory_xact_lock``): a waiter costs nothing while
        it waits, however many there are. Behind a pooler each waiter pins a server connection, so
        the holder must never need a second one: while the block runs, this thread's Optuna calls
        (through its scoped session, each call a SAVEPOINT) and one-statement calls all go through
        the lock's connection. What the block writes is committed with the lock's release, at once;
        a block that raises, or a holder that dies, writes nothing and releases the lock.
        """
        from sqlalchemy.orm import Session

        connection = self.engine.connect()
        try:
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
            session = Session(bind=connection, join_transaction_mode="create_savepoint")
            retrying = getattr(self._local, "active", False)
            self._local.held, self._local.active = (self, connection), True  # no call retried alone in here
            self.scoped_session.registry.set(session)
            try:
                yield
            finally:
                self._local.held, self._local.active = None, retrying
                self.scoped_session.registry.clear()
                session.close()
            connection.commit()  # releases the lock, with what the block wrote
        finally:
            with contextlib.suppress(Exception):
                connection.close()  # a rollback first if not committed: the lock is released either way


def admitted(study: optuna.Study, body: Callable[[bool], _T]) -> _T:
    """``body(locked)`` under ``study``'s admission lock (``locked``: whether the storage has one), as one
    transaction on PostgreSQL, run again whole if the connection is lost meanwhile.

    Whatever reads a study's trials and then adds to them on that reading (a worker asking for the
    next free slot, ``study confirm`` queueing the jobs not yet queued) runs as such a body, so two
    processes never act on the same reading.
    """
    storage = rdb_storage(study)
    if isinstance(storage, ReconnectingRDBStorage):
        return storage.exclusively(f"edgesearch-admission:{study.study_name}", body)
    return body(False)
