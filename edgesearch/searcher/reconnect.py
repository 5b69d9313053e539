"""An Optuna RDB storage that waits out a database outage instead of failing the worker.

A PostgreSQL restart, a failover or a dropped network link makes every storage call raise for
a few seconds. ``pool_pre_ping`` replaces dead pooled connections once the server is back; this
class retries the calls that failed meanwhile, with exponential backoff, for up to
``outage_seconds``. Only connection-level errors are retried (SQLAlchemy's OperationalError,
InterfaceError, or a DBAPIError that invalidated its connection, also when Optuna wraps one in a
StorageInternalError): a genuine error such as a constraint violation surfaces at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import text

from edgesearch.searcher.optuna_internals import PRIVATE_STORAGE_CALLS, state_counts_query

__all__ = ["ReconnectingRDBStorage", "is_connection_error"]

_log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])

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
    "set_trial_intermediate_value",
    "set_trial_user_attr",
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


class ReconnectingRDBStorage(RDBStorage):
    """``RDBStorage`` whose database calls survive an outage of up to ``outage_seconds``."""

    outage_seconds: float = 300.0
    _local = threading.local()

    def _retrying(self, name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(self._local, "active", False):  # an outer call already retries this one
            return call(*args, **kwargs)
        self._local.active = True
        try:
            deadline = time.monotonic() + self.outage_seconds
            delay = 0.5
            while True:
                try:
                    return call(*args, **kwargs)
                except Exception as exc:
                    if not is_connection_error(exc) or time.monotonic() + delay > deadline:
                        raise
                    _log.warning(
                        "storage unreachable during %s (%s); retrying in %.1f s", name, type(exc).__name__, delay
                    )
                    time.sleep(delay)
                    delay = min(delay * 2, 15.0)
        finally:
            self._local.active = False

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
            with self.engine.connect() as connection:
                return Counter({TrialState(state): int(n) for state, n in connection.execute(query)})

        result: Counter[TrialState] = self._retrying("count_trials", count)
        return result

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[bool]:
        """Hold a lock named ``key`` shared by every process using this database; yields whether there is one.

        PostgreSQL: a session advisory lock (released by the server if this process dies).
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
        def acquire() -> Any:
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                connection.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": key})
            except Exception:
                connection.close()
                raise
            return connection

        connection = self._retrying("lock", acquire)
        try:
            yield
        finally:
            # A dropped connection has released the lock with its session already.
            with contextlib.suppress(Exception):
                connection.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": key})
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
