"""PgBouncer's configuration for a study's database, and the private folder it is written into.

:func:`check_options` checks the pooler's options; :func:`pgbouncer_files` renders ``pgbouncer.ini``
and ``userlist.txt`` from the storage URL (a pure function): PgBouncer in *transaction* pooling mode,
clients logging in with the database's own user and password (SCRAM, checked against the userlist,
the one file that holds the password), or with none (``trust``) where the database needs none.
:func:`write_pooler_files` puts them into a folder closed to others, handed to the user PgBouncer
runs as (:func:`run_as_user`) when started by root.

The CLI reads the defaults here when it starts, so SQLAlchemy, the URL's reading and the file
writing are imported inside the functions that need them.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from edgesearch.errors import ConfigError, UserError

__all__ = [
    "CLIENT_CONNECTIONS_PER_WORKER",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_PORT",
    "DEFAULT_RUN_AS",
    "INI_NAME",
    "MAX_MAX_CLIENTS",
    "MAX_POOL_SIZE",
    "MIN_POOL_SIZE",
    "PID_NAME",
    "USERLIST_NAME",
    "PoolerFiles",
    "check_folder",
    "check_options",
    "check_reachable",
    "pgbouncer_files",
    "run_as_user",
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

INI_NAME = "pgbouncer.ini"
USERLIST_NAME = "userlist.txt"
LOG_NAME = "pgbouncer.log"
PID_NAME = "pgbouncer.pid"

_WILDCARDS = frozenset({"0.0.0.0", "::", "*"})


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

    ``password``: found elsewhere than the URL (:func:`~edgesearch.services.pgbouncer_target.find_password`);
    the URL's own wins. With none, clients log in without one (``auth_type = trust``). ``folder`` (an
    absolute path) holds the files and PgBouncer's log and pid files. Raises ConfigError for a URL or option not allowed
    (:func:`~edgesearch.services.pgbouncer_target.server_target`, :func:`check_options`).
    """
    from sqlalchemy.engine import URL

    from edgesearch.services.pgbouncer_target import server_target

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
    from edgesearch.files import atomic_write_text

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
