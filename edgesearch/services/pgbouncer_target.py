"""The PostgreSQL server PgBouncer stands in front of: read from the storage URL, and its password
found as libpq finds it.

:func:`server_target` reads and checks the URL (only what can be carried through PgBouncer is
allowed); :func:`find_password` looks the password up in the URL, ``PGPASSWORD`` or the pgpass file.
SQLAlchemy is imported inside the function that needs it, so the CLI stays quick.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgesearch.errors import ConfigError

__all__ = ["ServerTarget", "find_password", "pgpass_password", "server_target"]

_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
# Characters that go into pgbouncer.ini unquoted: a name holding others could break a line of it.
_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")
_PLAIN_ALLOWED = "letters, digits, '_', '.', '-'"
_HOST = re.compile(r"[A-Za-z0-9_.:-]+")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Query parameters of the storage URL that mean something here; anything else is refused, not dropped.
_QUERY_ALLOWED = ("password", "sslmode", "sslrootcert", "connect_timeout", "application_name")


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
