"""Real PostgreSQL for tests and benchmarks: a throwaway server, databases of their own, and an admin connection.

A throwaway server is started and stopped with ``.ci/start-postgres.sh``, the script that CI and developers
use for the shared test server, so that every server the project starts for itself is set up one way.
A database of one's own (:func:`fresh_database`) keeps a test or a benchmark apart from everything else on a
shared server, and goes with its connections at the end. :class:`PgAdmin` does what workers never do:
create and drop databases, read settings and who is connected.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

START_POSTGRES = Path(__file__).resolve().parent.parent / ".ci" / "start-postgres.sh"

HOUSEKEEPING = (
    "postgres: checkpointer",
    "postgres: background writer",
    "postgres: walwriter",
    "postgres: autovacuum launcher",
    "postgres: logical replication launcher",
)
"""Command lines of PostgreSQL's own long-lived helpers: they wake on timers whether or not anyone asks
anything, so their CPU grows with the time a server runs rather than with the work it is given (autovacuum
*workers*, started because rows were written, are not among them)."""


class PostgresUnavailable(RuntimeError):
    """A throwaway server could not be started (no server binaries, the script failed); the message says why."""


def connect_params(url: str, *, dbname: str | None = None) -> dict[str, Any]:
    """psycopg's connection keywords for a SQLAlchemy URL; ``dbname``: another database on its server."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    params = {"host": parsed.host, "port": parsed.port, "user": parsed.username, "password": parsed.password}
    params.update(dbname=dbname or parsed.database, connect_timeout=10)
    return {key: value for key, value in params.items() if value is not None}


def database_url(server: str, name: str) -> str:
    """``server``'s URL naming the database ``name`` instead, the password kept."""
    from sqlalchemy.engine import make_url

    return make_url(server).set(database=name).render_as_string(hide_password=False)


class PgAdmin:
    """An autocommit connection to the server's maintenance database (``postgres``).

    CREATE and DROP DATABASE cannot run inside a transaction, and what it reads (settings, connections) is
    the server's. Its own server process is :attr:`backend_pid`, so that a benchmark metering the server
    can take away what its own looks cost.
    """

    def __init__(self, server: str) -> None:
        import psycopg

        self.server = server
        self.connection: psycopg.Connection[Any] = psycopg.connect(
            autocommit=True, **connect_params(server, dbname="postgres")
        )

    def __enter__(self) -> PgAdmin:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def backend_pid(self) -> int:
        return int(self.connection.info.backend_pid)

    def create_database(self, prefix: str = "es_") -> str:
        """The URL of a new, empty database named ``prefix`` and a random suffix."""
        from psycopg import sql

        name = f"{prefix}{uuid.uuid4().hex}"
        self.connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return database_url(self.server, name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, closing its connections first; nothing when it is gone already."""
        from psycopg import sql
        from sqlalchemy.engine import make_url

        name = sql.Identifier(str(make_url(url).database))
        self.connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))

    def setting(self, name: str) -> int:
        """A numeric server setting (``max_connections``); 0 for a name the server does not have."""
        row = self.connection.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()
        return int(row[0]) if row else 0

    def connections(self, url: str) -> int:
        """How many server connections the database of ``url`` has now."""
        from sqlalchemy.engine import make_url

        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        row = self.connection.execute(query, (make_url(url).database,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.connection.close()


@contextlib.contextmanager
def fresh_database(server: str, *, prefix: str = "es_") -> Iterator[str]:
    """URL of a brand-new, empty database on ``server``, dropped (with its connections) afterwards.

    The admin connection is held only to create and to drop, so none is open on the server meanwhile.
    """
    with PgAdmin(server) as admin:
        url = admin.create_database(prefix)
    try:
        yield url
    finally:
        with PgAdmin(server) as admin:
            admin.drop_database(url)


@dataclass(frozen=True)
class ThrowawayServer:
    """A server started by ``.ci/start-postgres.sh``, as its ``export`` lines describe it."""

    variables: dict[str, str]
    """``EDGESEARCH_TEST_POSTGRES_URL``, ``EDGESEARCH_TEST_PG_BIN``, ``_DATA``, ``_USER`` and ``_DIR``."""

    @property
    def url(self) -> str:
        """URL of its database ``edgesearch_test``."""
        return self.variables["EDGESEARCH_TEST_POSTGRES_URL"]

    @property
    def bin(self) -> Path:
        """The folder holding ``pg_ctl`` and ``initdb``."""
        return Path(self.variables["EDGESEARCH_TEST_PG_BIN"])

    @property
    def data(self) -> Path:
        """The cluster's data folder (``pg_ctl -D``)."""
        return Path(self.variables["EDGESEARCH_TEST_PG_DATA"])

    @property
    def owner(self) -> str:
        """The system user that owns the cluster: ``pg_ctl`` runs as this user."""
        return self.variables.get("EDGESEARCH_TEST_PG_USER", "")

    def postmaster_pid(self) -> int:
        """The pid of the server's first process, the parent of one process per connection."""
        return int((self.data / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def throwaway_postgres(*, first_port: int, max_connections: int | None = None) -> Iterator[ThrowawayServer]:
    """A PostgreSQL server of one's own on 127.0.0.1 (the first free port from ``first_port`` on), stopped and
    its folder removed afterwards; :class:`PostgresUnavailable` when it cannot start.

    For what must not happen to the shared test server (restarting it) or needs a server set up otherwise
    (few ``max_connections``, its processes on this machine to meter).
    """
    env = dict(os.environ, EDGESEARCH_PG_PORT=str(first_port))
    if max_connections is not None:
        env["EDGESEARCH_PG_MAX_CONNECTIONS"] = str(max_connections)
    # The script's `stop` reads these: inherited from the shared server, they would name that one.
    for name in ("EDGESEARCH_TEST_PG_DATA", "EDGESEARCH_TEST_PG_DIR"):
        env.pop(name, None)
    try:
        started = subprocess.run(
            ["bash", str(START_POSTGRES)], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostgresUnavailable(f"{START_POSTGRES.name} could not run: {exc}") from exc
    if started.returncode != 0:
        raise PostgresUnavailable(f"{START_POSTGRES.name} failed: {started.stderr.strip() or 'no output'}")
    exports = [line.removeprefix("export ") for line in started.stdout.splitlines() if line.startswith("export ")]
    variables = {key: shlex.split(value)[0] for key, value in (line.split("=", 1) for line in exports)}
    try:
        yield ThrowawayServer(variables)
    finally:
        stop = ["bash", str(START_POSTGRES), "stop"]
        subprocess.run(stop, env={**env, **variables}, capture_output=True, timeout=120, check=False)
