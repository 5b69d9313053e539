"""PgBouncer in front of a study's PostgreSQL database: its configuration, its files and its process.

Each worker holds two or three connections to the database (the trial loop, the admission lock,
the heartbeat thread), so a server with the default ``max_connections = 100`` stops at about 50
workers. PgBouncer in *transaction* pooling mode lets hundreds of workers connect to it while it
runs their transactions on a few server connections: a worker spends almost all its time training,
holding no transaction open, so 20 server connections serve hundreds of workers.

:func:`pgbouncer_files` renders the configuration from the storage URL (a pure function);
:func:`write_pooler_files` puts it into a private folder; :func:`run_foreground` runs PgBouncer as
a child that dies with this process, and passes SIGTERM/Ctrl-C on to it. Clients log in to PgBouncer
with the database's own user and password (SCRAM, checked against the ``userlist.txt`` that holds
the password, removed as soon as PgBouncer has read it), and PgBouncer logs in to the server with
the same pair. Where the database needs no password, PgBouncer
asks none either (``trust``). The password is never part of a printed line, a log line, the
client URL or PgBouncer's command line.

psycopg and SQLAlchemy are imported inside the functions that need them, so the CLI stays quick.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from edgesearch.errors import ConfigError, UserError, child_exit_code
from edgesearch.files import atomic_write_text
from edgesearch.searcher.storage.urls import driver_message, scrub_password
from edgesearch.services.host_check import is_loopback

__all__ = [
    "CLIENT_CONNECTIONS_PER_WORKER",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_PORT",
    "DEFAULT_RUN_AS",
    "EXIT_FORCED",
    "INI_NAME",
    "INSTALL_HINT",
    "MAX_MAX_CLIENTS",
    "MAX_POOL_SIZE",
    "MIN_POOL_SIZE",
    "PID_NAME",
    "SBIN",
    "USERLIST_NAME",
    "PoolerFiles",
    "ServerTarget",
    "check_folder",
    "check_options",
    "check_reachable",
    "check_server",
    "ensure_fd_limit",
    "find_password",
    "find_pgbouncer",
    "is_loopback",
    "pgbouncer_argv",
    "pgbouncer_files",
    "pgpass_password",
    "run_as_user",
    "run_foreground",
    "server_target",
    "write_pooler_files",
]

DEFAULT_LISTEN = "127.0.0.1"
"""Loopback, like the dashboard: listening where other machines reach it is a choice made explicitly."""

DEFAULT_PORT = 6432
"""PgBouncer's customary port."""

DEFAULT_POOL_SIZE = 20
"""Server connections PgBouncer opens at most: the number that must stay below ``max_connections``."""

MIN_POOL_SIZE = 2
"""A worker holding the admission lock keeps one transaction (one server connection) open while it
counts and asks; with a pool of one, every other call of every worker (heartbeats, reports) would
wait behind each admission, and behind each waiter for the lock."""

MAX_POOL_SIZE = 1000
"""More server connections than this defeats the point of pooling; PostgreSQL would not take them."""

DEFAULT_MAX_CLIENTS = 1000
"""Client connections PgBouncer accepts: about 300 workers at :data:`CLIENT_CONNECTIONS_PER_WORKER` each."""

MAX_MAX_CLIENTS = 100_000

CLIENT_CONNECTIONS_PER_WORKER = 3
"""What one worker process holds open at most: the trial loop's, the admission lock's, the heartbeat's."""

DEFAULT_RUN_AS = "nobody"
"""The system user PgBouncer runs as when started by root (it refuses to run as root itself)."""

INSTALL_HINT = "install PgBouncer (Debian/Ubuntu: apt-get install pgbouncer)"

INI_NAME = "pgbouncer.ini"
USERLIST_NAME = "userlist.txt"
LOG_NAME = "pgbouncer.log"
PID_NAME = "pgbouncer.pid"

SBIN = ("/usr/sbin", "/usr/local/sbin")
"""Where distributions install pgbouncer, looked in after PATH: /usr/sbin is not on a Debian user's PATH."""
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
# Characters that go into pgbouncer.ini unquoted: a name holding others could break a line of it.
_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")
_PLAIN_ALLOWED = "letters, digits, '_', '.', '-'"
_HOST = re.compile(r"[A-Za-z0-9_.:-]+")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Query parameters of the storage URL that mean something here; anything else is refused, not dropped.
_QUERY_ALLOWED = ("password", "sslmode", "sslrootcert", "connect_timeout", "application_name")
_WILDCARDS = frozenset({"0.0.0.0", "::", "*"})
_CHECK_TIMEOUT_S = 10
_FD_MARGIN = 64  # listening sockets, log file, DNS: what PgBouncer needs beyond one descriptor per connection


@dataclass(frozen=True)
class ServerTarget:
    """The PostgreSQL server a storage URL names, read once and checked."""

    host: str
    port: int
    database: str
    user: str
    password: str | None
    """The URL's own password (or its ``?password=``); None when it holds none."""
    sslmode: str | None = None
    sslrootcert: str | None = None
    connect_timeout: int | None = None


@dataclass(frozen=True)
class PoolerFiles:
    """What :func:`pgbouncer_files` renders: the two files, and the URL workers use instead."""

    ini: str
    userlist: str
    """``"user" "password"``: the one secret; written with mode 0600 only."""
    client_url: str
    """``postgresql+psycopg://USER@HOST:PORT/DB`` of the pooler: never a password in it."""
    auth_type: str
    """``scram-sha-256``, or ``trust`` when the database needs no password."""


def server_target(url: str) -> ServerTarget:
    """The server, database and user of a PostgreSQL storage URL.

    Allowed: ``postgresql://``, ``postgres://`` or ``postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DB``
    with a user, a host and a database, and only the query parameters ``password``, ``sslmode``,
    ``sslrootcert``, ``connect_timeout`` and ``application_name``. Raises ConfigError otherwise.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    from edgesearch.searcher.storage.urls import redact

    shown = redact(url)
    example = "e.g. --storage postgresql://USER@HOST:5432/DB"
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ConfigError(f"--storage {shown}: not a database URL; the pooler needs PostgreSQL, {example}") from None
    if parsed.drivername not in _POSTGRES_SCHEMES:
        raise ConfigError(
            f"--storage {shown}: the pooler stands in front of PostgreSQL, not {parsed.drivername!r}; {example}"
        )
    if parsed.host and "@" in parsed.host:
        raise ConfigError(f"--storage {shown}: the password holds a raw '@'; write it URL-encoded (@ as %40)")
    missing = [
        part
        for part, value in (("user", parsed.username), ("host", parsed.host), ("database", parsed.database))
        if not value
    ]
    if missing:
        raise ConfigError(f"--storage {shown}: names no {' and no '.join(missing)}; {example}")
    unknown = sorted(set(parsed.query) - set(_QUERY_ALLOWED))
    if unknown:
        raise ConfigError(
            f"--storage {shown}: query parameter {', '.join(unknown)} cannot be carried through PgBouncer; "
            f"allowed: {', '.join(_QUERY_ALLOWED)}"
        )
    query = {key: _single(parsed.query[key]) for key in parsed.query}
    # Guarded by the checks above; repeated for the type checker.
    if parsed.username is None or parsed.host is None or parsed.database is None:
        raise ConfigError(f"--storage {shown}: names no user, host or database; {example}")
    _check_plain("database", parsed.database, shown)
    _check_plain("user", parsed.username, shown)
    if not _HOST.fullmatch(parsed.host):
        raise ConfigError(f"--storage {shown}: host {parsed.host!r} is not allowed; allowed: {_PLAIN_ALLOWED}, ':'")
    sslmode = query.get("sslmode")
    if sslmode is not None and sslmode not in _SSLMODES:
        raise ConfigError(f"--storage {shown}: sslmode {sslmode!r} is not allowed; allowed: {', '.join(_SSLMODES)}")
    sslrootcert = query.get("sslrootcert")
    if sslrootcert is not None and ("\n" in sslrootcert or not Path(sslrootcert).is_absolute()):
        raise ConfigError(f"--storage {shown}: sslrootcert must be an absolute file path, got {sslrootcert!r}")
    timeout = query.get("connect_timeout")
    if timeout is not None and not (timeout.isdigit() and int(timeout) > 0):
        raise ConfigError(f"--storage {shown}: connect_timeout must be a whole number of seconds > 0, got {timeout!r}")
    return ServerTarget(
        host=parsed.host,
        port=parsed.port or 5432,
        database=parsed.database,
        user=parsed.username,
        password=parsed.password if parsed.password is not None else query.get("password"),
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        connect_timeout=int(timeout) if timeout is not None else None,
    )


def _single(value: str | tuple[str, ...]) -> str:
    return value if isinstance(value, str) else value[-1]


def _check_plain(part: str, value: str, shown: str) -> None:
    if not _PLAIN.fullmatch(value):
        raise ConfigError(f"--storage {shown}: {part} {value!r} is not allowed here; allowed: {_PLAIN_ALLOWED}")


def pgpass_password(text: str, *, host: str, port: int, database: str, user: str) -> str | None:
    """The password of the first line of a pgpass file's ``text`` that matches, as libpq reads it.

    Lines are ``host:port:database:user:password``; ``*`` matches anything in the first four
    fields; ``\\:`` and ``\\\\`` stand for ``:`` and ``\\``; lines starting with ``#`` are comments.
    """
    wanted = (host, str(port), database, user)
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) < 5:
            continue
        if all(field in ("*", value) for field, value in zip(fields[:4], wanted, strict=True)):
            return ":".join(fields[4:])  # an unescaped ':' in the password is kept, as libpq does
    return None


def _pgpass_fields(line: str) -> list[str]:
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def find_password(target: ServerTarget, environ: Mapping[str, str]) -> str | None:
    """The password for ``target``, looked up as libpq does: the URL's, else ``PGPASSWORD``, else the
    pgpass file (``PGPASSFILE``, default ``~/.pgpass``; skipped, as libpq skips it, when group or
    others may read it). None when there is none: the server then needs no password."""
    if target.password is not None:
        return target.password
    if environ.get("PGPASSWORD"):
        return environ["PGPASSWORD"]
    path = Path(environ["PGPASSFILE"]) if environ.get("PGPASSFILE") else Path.home() / ".pgpass"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return pgpass_password(text, host=target.host, port=target.port, database=target.database, user=target.user)


def _check_listen(listen_addr: str) -> None:
    allowed = "an IP address of this machine (127.0.0.1, ::1), 0.0.0.0 or :: (all), * or localhost"
    if listen_addr in _WILDCARDS or listen_addr == "localhost":
        return
    try:
        ipaddress.ip_address(listen_addr)
    except ValueError:
        raise ConfigError(f"--listen {listen_addr!r} is not allowed; allowed: {allowed}") from None


def check_options(*, listen_addr: str, listen_port: int, pool_size: int, max_client_conn: int) -> None:
    """Raise ConfigError naming the option unless each value is one the pooler allows."""
    _check_listen(listen_addr)
    if not 1 <= listen_port <= 65535:
        raise ConfigError(f"--port {listen_port} is not allowed; allowed: 1 to 65535")
    if not MIN_POOL_SIZE <= pool_size <= MAX_POOL_SIZE:
        raise ConfigError(
            f"--pool-size {pool_size} is not allowed; allowed: {MIN_POOL_SIZE} to {MAX_POOL_SIZE} "
            "(server connections; keep it below PostgreSQL's max_connections)"
        )
    if not 1 <= max_client_conn <= MAX_MAX_CLIENTS:
        raise ConfigError(f"--max-clients {max_client_conn} is not allowed; allowed: 1 to {MAX_MAX_CLIENTS}")


def client_host(listen_addr: str) -> str:
    """The host name workers reach the pooler by: the listen address, or this machine's name for all."""
    return socket.gethostname() if listen_addr in _WILDCARDS else listen_addr


def pgbouncer_files(
    url: str,
    *,
    listen_addr: str = DEFAULT_LISTEN,
    listen_port: int = DEFAULT_PORT,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_client_conn: int = DEFAULT_MAX_CLIENTS,
    folder: Path,
    password: str | None,
) -> PoolerFiles:
    """PgBouncer's ``pgbouncer.ini`` and ``userlist.txt`` for the database of ``url``, and the URL workers use.

    ``password``: found elsewhere than the URL (:func:`find_password`); the URL's own wins. With none,
    clients log in without one (``auth_type = trust``). ``folder`` (an absolute path) holds the
    files and PgBouncer's log and pid files. Raises ConfigError for a URL or option not allowed
    (:func:`server_target`, :func:`check_options`).
    """
    from sqlalchemy.engine import URL

    check_options(
        listen_addr=listen_addr, listen_port=listen_port, pool_size=pool_size, max_client_conn=max_client_conn
    )
    target = server_target(url)
    secret = target.password if target.password is not None else password
    auth_type = "trust" if not secret else "scram-sha-256"
    server = f"host={target.host} port={target.port} dbname={target.database}"
    if target.connect_timeout is not None:
        server += f" connect_timeout={target.connect_timeout}"
    tls = []
    if target.sslmode is not None:
        tls.append(f"server_tls_sslmode = {target.sslmode}")
    if target.sslrootcert is not None:
        tls.append(f"server_tls_ca_file = {target.sslrootcert}")
    folder = folder.absolute()
    ini = _INI.format(
        database=target.database,
        server=server,
        listen_addr=listen_addr,
        listen_port=listen_port,
        auth_type=auth_type,
        userlist=folder / USERLIST_NAME,
        pool_size=pool_size,
        max_client_conn=max_client_conn,
        per_worker=CLIENT_CONNECTIONS_PER_WORKER,
        workers=max_client_conn // CLIENT_CONNECTIONS_PER_WORKER,
        logfile=folder / LOG_NAME,
        pidfile=folder / PID_NAME,
        tls="\n".join(tls) + "\n" if tls else "",
    )
    userlist = f"{_quoted(target.user)} {_quoted(secret or '')}\n"
    client_url = URL.create(
        "postgresql+psycopg",
        username=target.user,
        host=client_host(listen_addr),
        port=listen_port,
        database=target.database,
    ).render_as_string(hide_password=True)
    return PoolerFiles(ini=ini, userlist=userlist, client_url=client_url, auth_type=auth_type)


def _quoted(value: str) -> str:
    """A userlist.txt field: in double quotes, a double quote inside written twice."""
    return '"' + value.replace('"', '""') + '"'


_INI = """\
; Written by `edgesearch pooler`; rewritten at each start.

[databases]
{database} = {server}

[pgbouncer]
listen_addr = {listen_addr}
listen_port = {listen_port}
; TCP only: no socket file left in a shared folder.
unix_socket_dir =

; Clients log in with the database's own user and password, checked against the userlist;
; PgBouncer logs in to the server with the same pair. trust: the database needs no password.
auth_type = {auth_type}
auth_file = {userlist}

; A worker holds a transaction only for a storage call (milliseconds) and trains between them,
; so server connections are shared per transaction. What outlives a transaction (session advisory
; locks, SET, prepared statements) would be lost: edgesearch uses none (its admission lock is a
; transaction-scoped advisory lock, and psycopg's automatic prepared statements are off).
pool_mode = transaction
; Server connections: the number that must stay below PostgreSQL's max_connections.
default_pool_size = {pool_size}
max_db_connections = {pool_size}
; No reserve pool: the pool size is the whole load PostgreSQL sees.
reserve_pool_size = 0
; Client connections: each worker holds up to {per_worker}, so this serves about {workers} workers.
max_client_conn = {max_client_conn}

; Nothing to reset between transactions (the reset query runs only in session mode).
server_reset_query =
; What psycopg2 and JDBC clients send at connect and PgBouncer 1.18 does not track; psycopg 3 sends
; none of them (application_name is tracked by PgBouncer itself).
ignore_startup_parameters = extra_float_digits

; A client waits this long for a free server connection. The wait is a few transactions' time,
; but hundreds of workers starting together on a busy server queue for seconds to tens of seconds:
; 300 s is as long as a worker waits out a database outage, so a burst gives no error, and a server
; that is down gives one that the worker's storage retries like any outage (0 would hang forever).
query_wait_timeout = 300
; Workers keep idle client connections through a whole epoch (minutes): never close them.
client_idle_timeout = 0
; Server connections are renewed hourly and closed after 10 idle minutes (an idle study).
server_lifetime = 3600
server_idle_timeout = 600
{tls}
; Hundreds of workers log in and out all the time: only errors (a refused password) and the
; minutely stats are logged, not every login.
log_connections = 0
log_disconnections = 0
logfile = {logfile}
pidfile = {pidfile}
"""


def run_as_user(requested: str | None, *, is_root: bool) -> str | None:
    """The system user PgBouncer runs as: ``requested`` or :data:`DEFAULT_RUN_AS` under root; None
    (this process's user) otherwise, where a ``--user`` is a ConfigError (only root can switch)."""
    if not is_root:
        if requested is not None:
            raise ConfigError(f"--user {requested}: only root can run PgBouncer as another user; leave --user out")
        return None
    name = requested or DEFAULT_RUN_AS
    if name == "root":
        raise ConfigError("--user root is not allowed: PgBouncer refuses to run as root; name another system user")
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"--user {name}: no such user on this machine; name an existing system user") from None
    return name


def check_reachable(folder: Path, user: str) -> None:
    """Raise ConfigError unless ``user`` can pass through every folder above ``folder`` to reach it.

    Root hands the files to the user PgBouncer runs as; a folder inside a private one (a home
    folder, pytest's ``/tmp/pytest-of-root``) would be out of that user's reach.
    """
    entry = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for parent in folder.absolute().parents:
        if not parent.exists():
            continue  # made by mkdir with the usual mode, which lets others through
        info = parent.stat()
        if info.st_uid == entry.pw_uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid in groups:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            raise ConfigError(
                f"--folder {folder}: PgBouncer runs as {user}, who cannot enter {parent}; "
                "choose a folder that user can reach (e.g. under /tmp or /var/lib), or leave --folder out"
            )


def check_folder(folder: Path, owner: str | None) -> None:
    """Raise UserError unless ``folder`` is new, empty or one this command wrote before (its files are
    closed to others and handed to PgBouncer's user: never a folder that holds anything else), or
    (:func:`check_reachable`) when ``owner``, the user PgBouncer runs as, cannot reach it. Nothing is
    created."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--folder {folder}: exists and is not a folder")
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if not _ours(p.name))
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise UserError(
                f"--folder {folder}: holds other files ({shown}); choose a new or empty folder, "
                "or one that edgesearch pooler wrote before"
            )
    if owner is not None:
        check_reachable(folder, owner)


def _ours(name: str) -> bool:
    """A file this command or PgBouncer writes into the folder (and atomic_write's temporary names)."""
    names = (INI_NAME, USERLIST_NAME, LOG_NAME, PID_NAME)
    return name in names or any(name.startswith(f".{n}.") and name.endswith(".tmp") for n in names)


def write_pooler_files(files: PoolerFiles, folder: Path, *, owner: str | None) -> Path:
    """Write ``pgbouncer.ini`` and ``userlist.txt`` (mode 0600) into ``folder`` (created, mode 0700);
    the path of the ini file.

    ``owner``: the system user PgBouncer runs as, given the folder and both files (root only); None
    keeps this process's user. A folder that exists must be a folder; an ``--folder`` that is a file is a
    UserError, and nothing is written.
    """
    check_folder(folder, owner)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # before the secret goes in: a folder made earlier may be open to others
    paths = [folder / USERLIST_NAME, folder / INI_NAME]
    for path, text in zip(paths, (files.userlist, files.ini), strict=True):
        atomic_write_text(path, text)
        os.chmod(path, 0o600)  # atomic_write follows the umask; the folder keeps others out meanwhile
    if owner is not None:
        entry = pwd.getpwnam(owner)
        for path in [folder, *paths]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return folder / INI_NAME


def find_pgbouncer(path: str | None, *, also: Sequence[str] = SBIN) -> str:
    """The ``pgbouncer`` program on ``path`` (a PATH value), else in the folders ``also``; UserError if none."""
    found = shutil.which("pgbouncer", path=path) or (
        shutil.which("pgbouncer", path=os.pathsep.join(also)) if also else None
    )
    if found is None:
        where = f"PATH or {', '.join(also)}" if also else "PATH"
        raise UserError(f"pgbouncer not found on {where}: {INSTALL_HINT}")
    return found


def pgbouncer_argv(executable: str, ini: Path) -> list[str]:
    """PgBouncer's command line: the ini file (the password is in the userlist, never here).

    No ``-u USER``: :func:`run_foreground` starts it as that user, since a process that changes its own
    user loses the signal that ends it with its parent.
    """
    return [executable, str(ini)]


def ensure_fd_limit(needed: int) -> None:
    """Raise this process's open-file limit (which PgBouncer inherits) to ``needed`` where the hard
    limit allows; a ConfigError naming ``--max-clients`` where it does not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed += _FD_MARGIN
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ConfigError(
                f"--max-clients needs about {needed} open files but this machine allows {hard} (ulimit -Hn); "
                f"allowed here: up to {max(hard - _FD_MARGIN, 1)} clients and server connections together"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def check_server(target: ServerTarget, password: str | None, *, pool_size: int, shown_url: str) -> None:
    """Connect once, as PgBouncer will, so that a wrong URL or password is one line now, not an error
    in every worker later; and refuse a ``pool_size`` the server could never grant.

    UserError (one line, the password scrubbed) when the server cannot be reached or used.
    """
    import psycopg
    from psycopg.conninfo import make_conninfo

    params: dict[str, str | int] = {
        "host": target.host,
        "port": target.port,
        "dbname": target.database,
        "user": target.user,
        "connect_timeout": target.connect_timeout or _CHECK_TIMEOUT_S,
        "application_name": "edgesearch-pooler",
    }
    if password:
        params["password"] = password
    if target.sslmode is not None:
        params["sslmode"] = target.sslmode
    if target.sslrootcert is not None:
        params["sslrootcert"] = target.sslrootcert
    try:
        with psycopg.connect(make_conninfo("", **params), autocommit=True) as connection:
            row = connection.execute(
                "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
            ).fetchone()
    except psycopg.Error as exc:
        reason = scrub_password(driver_message(str(exc)), password)
        raise UserError(f"storage {shown_url}: cannot connect ({reason})") from None
    if row is not None and pool_size > row[0] - row[1]:
        raise ConfigError(
            f"--pool-size {pool_size} is more than the server allows: max_connections {row[0]}, "
            f"{row[1]} reserved for superusers; allowed: {MIN_POOL_SIZE} to {row[0] - row[1]} "
            "(less what other clients of the server need)"
        )


SAFE_SHUTDOWN_S = 10.0
"""How long PgBouncer's safe shutdown may take before the immediate one: a transaction still running
then (one waiting for a second connection that the shutdown no longer gives) is cut off."""

EXIT_FORCED = 130
"""PgBouncer was stopped at once (a second signal, or a safe shutdown that took too long): 128 + SIGINT."""

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_S = 0.2
_STARTING_POLL_S = 0.005  # until the secret is removed: a few milliseconds on disk, not a poll's length


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent SIGTERM (PgBouncer's immediate shutdown) when this process
    ends, ``kill -9`` included; None where the kernel offers no such signal (not Linux).

    The kernel sends it when the *thread* that started the child ends: :func:`run_foreground` starts and
    waits for it on the main thread, whose end is the process's. It is cleared when the child changes its
    user, so the child is started as its user (``Popen(user=...)``, before this runs) rather than switching
    itself (PgBouncer's ``-u``).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent ended before the signal was armed
            os._exit(1)

    return arm


def _ids_of(name: str | None) -> tuple[int | None, int | None, list[int] | None]:
    """The user, group and supplementary groups of system user ``name``, as ``Popen`` takes them; all None
    for None (the child keeps this process's)."""
    if name is None:
        return None, None, None
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid, os.getgrouplist(name, entry.pw_gid)


def _names(pidfile: Path, pid: int) -> bool:
    """Whether ``pidfile`` holds ``pid``: PgBouncer writes it once it has read its configuration."""
    try:
        return pidfile.read_text(encoding="ascii").strip() == str(pid)
    except (OSError, UnicodeDecodeError):
        return False


def run_foreground(
    argv: Sequence[str],
    *,
    run_as: str | None = None,
    secret: Path | None = None,
    pidfile: Path | None = None,
    discard: Path | None = None,
    safe_shutdown_s: float = SAFE_SHUTDOWN_S,
) -> int:
    """Run ``argv`` (PgBouncer) until it exits; its exit code (0 after a safe shutdown).

    ``run_as``: the system user it runs as (root only; None keeps this process's). It ends when this
    process ends, however it ends (Linux). ``secret`` (the userlist) is removed as soon as ``pidfile``
    names the child: PgBouncer has read it by then, and reads it again only on a reload, which keeps
    the users it has when the file is gone; so no password stays on disk while it runs, nor after a
    ``kill -9`` of this process. ``discard`` (a temporary folder holding the ini, log and pid files) is
    removed at the same moment: PgBouncer keeps its log open and also logs to stderr, and nothing
    needs the files again, so a ``kill -9`` of this process leaves no file behind either.

    SIGTERM, SIGINT (Ctrl-C) and SIGHUP (the terminal closed; PgBouncer itself would read it as
    "reload") ask for PgBouncer's safe shutdown (its SIGINT: running transactions end first, then it
    exits 0). A second signal, or ``safe_shutdown_s`` without an end, sends the immediate one (its
    SIGTERM); the code is then :data:`EXIT_FORCED`. The child has a session of its own, so a
    terminal's Ctrl-C reaches this process only and is passed on once. Should this process stop
    by an error, the child is ended with it.
    """
    uid, gid, groups = _ids_of(run_as)
    child = subprocess.Popen(
        list(argv), start_new_session=True, preexec_fn=_die_with_parent(), user=uid, group=gid, extra_groups=groups
    )
    requested: list[float] = []  # when each stop signal came

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(sig)

    def forward(signum: int, frame: FrameType | None) -> None:
        requested.append(time.monotonic())
        send(signal.SIGINT if len(requested) == 1 else signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in _STOP_SIGNALS}
    forced = False
    try:
        while True:
            if secret is not None and pidfile is not None and _names(pidfile, child.pid):
                secret.unlink(missing_ok=True)
                secret = None
                if discard is not None:
                    shutil.rmtree(discard, ignore_errors=True)
            starting = secret is not None and pidfile is not None
            try:
                code = child.wait(timeout=_STARTING_POLL_S if starting else _POLL_S)
                break
            except subprocess.TimeoutExpired:
                if requested and not forced and time.monotonic() - requested[0] > safe_shutdown_s:
                    send(signal.SIGTERM)
                    forced = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if forced or len(requested) > 1:
        return EXIT_FORCED
    return child_exit_code(code)
