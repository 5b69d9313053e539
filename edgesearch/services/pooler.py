"""PgBouncer in front of a study's PostgreSQL database, run as a child of this process: :func:`serve`.

Each worker holds two or three connections to the database (the trial loop, the admission lock,
the heartbeat thread), so a server with the default ``max_connections = 100`` stops at about 50
workers. PgBouncer in *transaction* pooling mode lets hundreds of workers connect to it while it
runs their transactions on a few server connections: a worker spends almost all its time training,
holding no transaction open, so 20 server connections serve hundreds of workers.

:func:`serve` checks everything first (the options, the server, the password, with one connection as
PgBouncer will make), writes the configuration (:mod:`~edgesearch.services.pgbouncer_config`) into a
private folder, and :func:`run_foreground` runs PgBouncer as a child that dies with this process, and
passes SIGTERM/Ctrl-C on to it. The userlist that holds the password is removed as soon as PgBouncer
has read it. The password is never part of a printed line, a log line, the client URL or
PgBouncer's command line.

psycopg is imported inside the function that needs it, so the CLI stays quick.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from edgesearch.errors import ConfigError, UserError, child_exit_code
from edgesearch.searcher.storage.urls import driver_message, redact, resolve_storage_url, scrub_password
from edgesearch.services.host_check import is_loopback
from edgesearch.services.pgbouncer_config import (
    CLIENT_CONNECTIONS_PER_WORKER,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_POOL_SIZE,
    DEFAULT_PORT,
    MIN_POOL_SIZE,
    PID_NAME,
    USERLIST_NAME,
    PoolerFiles,
    check_folder,
    check_options,
    pgbouncer_files,
    run_as_user,
    write_pooler_files,
)
from edgesearch.services.pgbouncer_target import ServerTarget, find_password, server_target

__all__ = [
    "EXIT_FORCED",
    "INSTALL_HINT",
    "SBIN",
    "check_server",
    "ensure_fd_limit",
    "find_pgbouncer",
    "pgbouncer_argv",
    "run_foreground",
    "serve",
]

INSTALL_HINT = "install PgBouncer (Debian/Ubuntu: apt-get install pgbouncer)"

SBIN = ("/usr/sbin", "/usr/local/sbin")
"""Where distributions install pgbouncer, looked in after PATH: /usr/sbin is not on a Debian user's PATH."""
_CHECK_TIMEOUT_S = 10
_FD_MARGIN = 64  # listening sockets, log file, DNS: what PgBouncer needs beyond one descriptor per connection


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


def serve(
    storage: str | None,
    *,
    listen_addr: str = DEFAULT_LISTEN,
    listen_port: int = DEFAULT_PORT,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_client_conn: int = DEFAULT_MAX_CLIENTS,
    user: str | None = None,
    folder: Path | None = None,
    say: Callable[[str], None],
    warn: Callable[[str], None],
) -> int:
    """Run PgBouncer in front of the database of ``storage`` until it is stopped; its exit code
    (:func:`run_foreground`).

    ``storage`` is resolved as ``--storage`` is (None: ``$EDGESEARCH_STORAGE``, else the default).
    ``user``: when started as root, the system user PgBouncer runs as (default
    :data:`~edgesearch.services.pgbouncer_config.DEFAULT_RUN_AS`). ``folder``: where its files go;
    None for a private temporary one, removed once PgBouncer has read them. Everything is checked
    before anything is written, the server with one connection as PgBouncer will make it: a
    UserError (ConfigError for an option) otherwise. ``say`` takes each line for the person starting
    it (where it listens, what workers export), ``warn`` the warning of a pooler that asks no
    password where others reach it.
    """
    url = resolve_storage_url(storage)
    shown = redact(url)
    executable = find_pgbouncer(os.environ.get("PATH"))
    run_as = run_as_user(user, is_root=os.geteuid() == 0)
    check_options(
        listen_addr=listen_addr, listen_port=listen_port, pool_size=pool_size, max_client_conn=max_client_conn
    )
    target = server_target(url)
    if folder is not None:
        check_folder(folder, run_as)  # before anything is written
    password = find_password(target, os.environ)
    ensure_fd_limit(max_client_conn + pool_size)
    check_server(target, password, pool_size=pool_size, shown_url=shown)
    temporary = folder is None
    where = Path(tempfile.mkdtemp(prefix="edgesearch-pooler-")) if folder is None else folder
    try:
        files = pgbouncer_files(
            url,
            listen_addr=listen_addr,
            listen_port=listen_port,
            pool_size=pool_size,
            max_client_conn=max_client_conn,
            folder=where,
            password=password,
        )
        ini = write_pooler_files(files, where, owner=run_as)
        _announce(files, shown, listen_addr, listen_port, pool_size, max_client_conn, say=say, warn=warn)
        kept = " (removed once PgBouncer has read them)" if temporary else ""
        say(f"files in {where}{kept}; Ctrl-C or SIGTERM stops it")
        return run_foreground(
            pgbouncer_argv(executable, ini),
            run_as=run_as,
            secret=where / USERLIST_NAME,
            pidfile=where / PID_NAME,
            discard=where if temporary else None,
        )
    finally:
        # Gone once PgBouncer has read it; still here when it never got that far.
        (where / USERLIST_NAME).unlink(missing_ok=True)
        if temporary:
            shutil.rmtree(where, ignore_errors=True)


def _announce(
    files: PoolerFiles,
    shown: str,
    listen: str,
    port: int,
    pool_size: int,
    max_clients: int,
    *,
    say: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    """What the person starting the pooler needs: where it listens, what workers export, and the password's way."""
    workers = max_clients // CLIENT_CONNECTIONS_PER_WORKER
    say(
        f"pooler: PgBouncer on {listen}:{port} for {shown}, transaction pooling; "
        f"at most {pool_size} server connections and {max_clients} clients (about {workers} workers)"
    )
    say(f"workers: export EDGESEARCH_STORAGE={files.client_url}")
    if files.auth_type == "trust":
        if not is_loopback(listen):
            warn(
                "the database asks no password, so neither does the pooler: anyone who "
                f"reaches {listen}:{port} uses the database as its user. Prefer a password (URL, PGPASSWORD, "
                "~/.pgpass)."
            )
    else:
        say(
            "workers give the database password as they would to the database: PGPASSWORD, or a ~/.pgpass line "
            "naming the pooler's host and port (it is never printed)"
        )
