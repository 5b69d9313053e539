"""Storage URL -> Optuna ``RDBStorage``: SQLite by default, PostgreSQL for many machines, heartbeat on.

Everything a study shares between workers lives in one SQL database reached through SQLAlchemy. This
module checks a URL (:mod:`~edgesearch.searcher.storage.urls`) and the database behind it before anything
is written, and opens it with settings that make it safe to share:

* SQLite: a 60 s busy timeout and WAL journal mode, so several local worker processes wait for each
  other instead of crashing with "database is locked".
* PostgreSQL (psycopg 3): a small pool, a 10 s connect timeout, and no server-side prepared statements,
  so the same URL works through a transaction-pooling PgBouncer (``edgesearch pooler``).
* Outages: every database call is retried with backoff while the server is unreachable (for up to
  5 minutes, :mod:`edgesearch.searcher.storage.reconnecting`), so a PostgreSQL restart does not kill workers.
* Heartbeat: a killed worker's trial becomes FAIL after the grace period and is re-queued by
  :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`.

Database errors become one :class:`~edgesearch.errors.UserError` line that names the redacted URL and the
reason, never the driver's raw text. Optuna and SQLAlchemy are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import random
import re
import sqlite3
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesearch.errors import ConfigError, UserError
from edgesearch.searcher.storage.urls import (
    SQLITE_DRIVERS,
    check_url,
    driver_message,
    normalize_url,
    plain_sqlite_path,
    redact,
    scrub_password,
    sqlite_file,
)

if TYPE_CHECKING:
    import sqlalchemy.exc
    from optuna.storages import RDBStorage
    from sqlalchemy.engine import URL

__all__ = [
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "MAX_RETRIES",
    "OPTUNA_HEAD_REVISION",
    "existing_sqlite_file",
    "open_storage",
    "set_fault_tolerance",
]


HEARTBEAT_INTERVAL_S = 30
"""Default seconds between a running trial's heartbeats (a study file's ``fault_tolerance``)."""

GRACE_PERIOD_S = 90
"""Default seconds without a heartbeat after which a trial counts as dead: FAIL, then retried."""

MAX_RETRIES = 2
"""Default number of times a dead worker's trial is retried."""

SQLITE_BUSY_TIMEOUT_S = 60
"""How long a SQLite writer waits for another process's lock before giving up."""

PG_CONNECT_TIMEOUT_S = 10
"""How long to wait for a PostgreSQL server to answer before reporting it unreachable."""

_CREATION_ATTEMPTS = 5


def existing_sqlite_file(url: str) -> Path | None:
    """The file of a plain SQLite URL (:func:`plain_sqlite_path`), checked; ``None`` for any other URL.

    The checks and errors are those of ``open_storage(url, create=False)``, so that a reader that skips
    Optuna fails on a bad path (a folder, a missing folder or file) exactly as the other commands do.
    """
    path = plain_sqlite_path(url)
    if path is not None:
        check_url(url)
        if not path.exists():
            raise _no_database_file(url, path)
    return path


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = GRACE_PERIOD_S,
    max_retries: int | None = MAX_RETRIES,
    create: bool = True,
    read_only: bool = False,
) -> RDBStorage:
    """Open (creating tables if needed) the Optuna storage at ``url``, ready to be shared by many workers.

    ``create=False`` is for commands that only read or use existing studies: a SQLite file that
    does not exist is then an error instead of a new empty database left behind by a typo.
    ``read_only=True`` (implies ``create=False``) is for commands that only look (``study list``,
    ``show``, ``best``, ``export``, ``report``, ``predict --study``, the dashboard): the database is
    left byte-identical. No table is created and a SQLite file keeps its journal mode; a database
    without Optuna's tables (someone else's), or a path that is not a regular file (a FIFO, a device),
    is refused with a UserError instead.

    ``heartbeat_interval`` (seconds; ``None`` turns the heartbeat off): how often a running trial
    proves its worker is alive. ``grace_period`` (seconds; ``None``: Optuna's default of twice the
    interval): how long without a heartbeat before the trial is marked FAIL. ``max_retries``: how many
    times such a stale trial is re-queued (``0`` or ``None``: never).

    Raises :class:`~edgesearch.errors.ConfigError` for a URL or setting that is not allowed and
    :class:`~edgesearch.errors.UserError` (one line, password hidden) when the database cannot be
    reached or used.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    from edgesearch.searcher.storage.reconnecting import ReconnectingRDBStorage, is_sqlite_busy, locked_error

    url = normalize_url(url)
    check_url(url)
    _check_positive("heartbeat_interval", heartbeat_interval)
    _check_positive("grace_period", grace_period)
    if max_retries is not None and max_retries < 0:
        raise ConfigError(f"max_retries must be >= 0 or None (no retry), got {max_retries}")

    parsed = make_url(url)
    started = time.monotonic()
    create = create and not read_only
    if not create and parsed.drivername in SQLITE_DRIVERS:
        path = sqlite_file(parsed)
        if path is not None and not path.exists():
            raise _no_database_file(url, path)
        if path is not None and read_only:
            _check_optuna_sqlite(url, path)
    engine_kwargs = _engine_kwargs(parsed)
    if parsed.drivername in SQLITE_DRIVERS and not read_only:
        _enable_wal(parsed, url)
    if not create and parsed.drivername not in SQLITE_DRIVERS and url not in _HAS_TABLES:
        try:
            _check_optuna_tables(url, engine_kwargs, read_only=read_only)
            _HAS_TABLES.add(url)  # a worker opens its storage twice (load_study): one look is enough
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise _storage_error(parsed, url, exc) from None

    for attempt in range(1, _CREATION_ATTEMPTS + 1):
        try:
            storage = ReconnectingRDBStorage(
                # RDBStorage treats its URL as a str.format template: keep a "{" in a password or path literal.
                url.replace("{", "{{").replace("}", "}}"),
                engine_kwargs=engine_kwargs,
                # A server database to use has its tables (checked above): no DDL round trips per worker.
                skip_table_creation=read_only or (not create and parsed.drivername not in SQLITE_DRIVERS),
                # Optuna's own check holds one connection in a transaction while it opens a second:
                # workers starting together behind a small pooler would hold every server connection
                # and each wait for one more. The same check, one connection at a time:
                skip_compatibility_check=True,
            )
            current = storage.get_current_version()
            if current != OPTUNA_HEAD_REVISION and current != _head_version(storage):
                raise UserError(
                    f"storage {redact(url)}: written by an incompatible Optuna version; "
                    f"upgrade it with `optuna storage upgrade --storage URL`"
                )
            set_fault_tolerance(
                storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retries=max_retries
            )
            return storage
        except sqlalchemy.exc.SQLAlchemyError as exc:
            # Several workers opening a brand-new database at once race to create the same tables; the
            # losers see "already exists" / a duplicate key, and succeed on a second look.
            if attempt < _CREATION_ATTEMPTS and _is_creation_race(exc):
                time.sleep(0.2 * attempt * (1 + random.random()))
                continue
            path = sqlite_file(parsed)
            if path is not None and is_sqlite_busy(exc):
                raise locked_error(path, time.monotonic() - started) from None
            raise _storage_error(parsed, url, exc) from None
    raise AssertionError("unreachable")  # pragma: no cover  (the loop returns or raises)


def set_fault_tolerance(
    storage: RDBStorage, *, heartbeat_interval: int | None, grace_period: int | None, max_retries: int | None
) -> None:
    """Give an open storage its heartbeat settings (as :func:`open_storage`'s arguments of the same names).

    A worker learns them from the study's stored config, which it reads through the storage it then
    goes on using: one storage opened per worker, not one to read the config and another to work.
    """
    import optuna
    from optuna.exceptions import ExperimentalWarning

    from edgesearch.searcher.storage._optuna.handles import set_heartbeat

    _check_positive("heartbeat_interval", heartbeat_interval)
    _check_positive("grace_period", grace_period)
    callback = None
    if heartbeat_interval is not None and max_retries:
        with warnings.catch_warnings():
            # Marked experimental since Optuna 2.8; it is the documented way to recover killed workers'
            # trials, so the warning is noise for our users.
            warnings.filterwarnings("ignore", message="RetryHeartbeatStaleTrialCallback ", category=ExperimentalWarning)
            callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
    set_heartbeat(storage, heartbeat_interval, grace_period if heartbeat_interval is not None else None, callback)


OPTUNA_HEAD_REVISION = "v3.2.0.a"
"""The schema revision the installed Optuna writes (its alembic head), pinned: a database at this revision is
opened without asking alembic, which loads every migration script to say (0.2 s of each command's start). A
test compares it with Optuna's own; any other revision is checked against what alembic says."""

_HEAD_VERSION: list[str] = []
_HAS_TABLES: set[str] = set()


def _head_version(storage: RDBStorage) -> str:
    """The schema revision this Optuna writes: read once per process (alembic loads every migration script)."""
    if not _HEAD_VERSION:
        _HEAD_VERSION.append(storage.get_head_version())
    return _HEAD_VERSION[0]


_OPTUNA_TABLES = frozenset({"studies", "trials", "version_info"})
"""Tables every Optuna database has: without them a database is not one edgesearch may read."""


def _not_optuna(url: str, detail: str) -> UserError:
    return UserError(
        f"storage {redact(url)}: not an edgesearch/Optuna database ({detail}); refusing to touch it. "
        "Check --storage or EDGESEARCH_STORAGE"
    )


def _check_optuna_sqlite(url: str, path: Path) -> None:
    """UserError unless the SQLite file ``path`` holds Optuna's tables; read without writing a byte."""
    try:
        # mode=ro: SQLite can neither create nor change the file through this connection.
        with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise _not_optuna(url, str(exc)) from None
    if not tables >= _OPTUNA_TABLES:
        raise _not_optuna(url, f"no {', '.join(sorted(_OPTUNA_TABLES - tables))} table")


def _check_optuna_tables(url: str, engine_kwargs: dict[str, Any], *, read_only: bool = True) -> None:
    """UserError unless the server database at ``url`` has Optuna's tables; only reads its catalogue."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url, **engine_kwargs)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if not tables and not read_only:
        raise UserError(f"storage {redact(url)}: holds no study yet; create one first (edgesearch study create FILE)")
    if not tables >= _OPTUNA_TABLES:
        raise _not_optuna(url, f"no {', '.join(sorted(_OPTUNA_TABLES - tables))} table")


def _no_database_file(url: str, path: Path) -> UserError:
    return UserError(
        f"storage {redact(url)}: no database file at {path}; create a study first (edgesearch study create FILE)"
    )


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds or None (off), got {value}")


def _engine_kwargs(parsed: URL) -> dict[str, Any]:
    """SQLAlchemy engine settings for sharing the database; values given in the URL's query win."""
    if parsed.drivername in SQLITE_DRIVERS:
        connect_args: dict[str, Any] = {}
        if "timeout" not in parsed.query:
            connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
        return {"connect_args": connect_args}
    connect_args = {}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    if "application_name" not in parsed.query:
        connect_args["application_name"] = "edgesearch"
    # psycopg prepares a statement on the server after its 5th use. A transaction-pooling PgBouncer
    # (edgesearch pooler) may run the next use on another server connection that never saw it.
    connect_args["prepare_threshold"] = None
    return {
        # No pool_pre_ping (a round trip per call): a call that finds its pooled connection dead is
        # retried on a new one (reconnecting.py).
        "pool_size": 2,  # the trial loop + Optuna's heartbeat thread
        "max_overflow": 8,  # short bursts (dashboard threads) without holding connections open
        "pool_recycle": 1800,  # outlive idle-connection reapers in proxies and poolers
        "connect_args": connect_args,
    }


def _enable_wal(parsed: URL, url: str) -> None:
    """Switch a SQLite file to WAL journal mode (persistent: once per file) so readers never block writers.

    Changing the journal mode needs the file to itself, and SQLite answers "database is locked" at once
    (without its busy timeout) while another process is opening or switching it: several workers
    starting together do exactly that, so the switch is retried until the busy timeout runs out.
    WAL needs a local file system (not NFS); where it cannot be had SQLite keeps its old mode, which is
    still correct, only slower under many workers.
    """
    from edgesearch.searcher.storage.reconnecting import is_sqlite_busy, locked_error

    path = sqlite_file(parsed)
    if path is None:
        return
    started = time.monotonic()
    deadline = started + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as connection:
                if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if is_sqlite_busy(exc) and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            if is_sqlite_busy(exc):
                raise locked_error(path, time.monotonic() - started) from None
            raise UserError(f"storage {redact(url)}: cannot open ({_explain(str(exc), None)}") from None
        except sqlite3.Error as exc:
            raise UserError(f"storage {redact(url)}: cannot open ({_explain(str(exc), None)}") from None


def _is_creation_race(exc: sqlalchemy.exc.SQLAlchemyError) -> bool:
    import sqlalchemy.exc

    text = str(getattr(exc, "orig", exc)).lower()
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in text or "duplicate key" in text


# (pattern in the driver's message, reason shown, hint shown); the first match wins.
_REASONS: tuple[tuple[str, str, str], ...] = (
    (r"connection refused", "connection refused", "is the server running?"),
    (r"timeout expired|timed out", f"no answer within {PG_CONNECT_TIMEOUT_S} s", "is the host reachable?"),
    (r"failed to resolve host|could not translate host name|name or service not known", "unknown host", ""),
    (r"password authentication failed|authentication failed", "authentication failed", "check user and password"),
    (r"no password supplied", "the server wants a password", "put it in the URL or ~/.pgpass"),
    (r'database "[^"]*" does not exist', "", "create it first (e.g. createdb)"),
    (r'role "[^"]*" does not exist', "", "check the user name"),
    (r"unable to open database file", "unable to open the database file", "check the path and its permissions"),
    (r"file is not a database", "the file is not a SQLite database", ""),
    (r"permission denied", "", "grant the user rights to create tables, or use another database"),
)


def _storage_error(parsed: URL, url: str, exc: sqlalchemy.exc.SQLAlchemyError) -> UserError:
    """One line naming the redacted URL and why the database could not be used, with the password scrubbed."""
    import sqlalchemy.exc

    if parsed.drivername in SQLITE_DRIVERS:
        verb = "cannot open"
    elif isinstance(exc, sqlalchemy.exc.OperationalError):
        verb = "cannot connect"
    else:
        verb = "cannot use the database"
    detail = str(getattr(exc, "orig", None) or exc)
    return UserError(f"storage {redact(url)}: {verb} ({_explain(detail, parsed.password)}")


def _explain(detail: str, password: str | None) -> str:
    """``"reason)[; hint]"`` for a driver message: a known reason and what to do, else its first line, scrubbed."""
    reason, hint = driver_message(detail), ""
    for pattern, shown, tip in _REASONS:
        match = re.search(pattern, detail, flags=re.IGNORECASE)
        if match:
            reason, hint = shown or match.group(0), tip
            break
    return scrub_password(reason, password) + ")" + (f"; {hint}" if hint else "")
