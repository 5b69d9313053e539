"""Storage URLs: which one to use, whether it is one edgesearch can open, and how to show it without its password.

The URL comes from ``--storage`` > ``$EDGESEARCH_STORAGE`` > the study file's ``storage:`` >
:data:`DEFAULT_STORAGE`. A password in a URL is never printed: every message goes through :func:`redact`,
and a driver's message through :func:`scrub_password`. SQLAlchemy is imported only for a URL that is not
a plain ``sqlite:///PATH``, and Optuna never.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgesearch.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = [
    "ALLOWED",
    "DEFAULT_STORAGE",
    "ENV_VAR",
    "SECRET_QUERY_PARAMETERS",
    "SQLITE_DRIVERS",
    "check_url",
    "driver_message",
    "holds_secret",
    "normalize_url",
    "plain_sqlite_path",
    "redact",
    "resolve_storage_url",
    "scrub_password",
    "sqlite_file",
    "storage_hint",
    "storage_option",
]


DEFAULT_STORAGE = "sqlite:///edgesearch.db"
"""The embedded default: a SQLite file in the current folder."""


ENV_VAR = "EDGESEARCH_STORAGE"
"""Environment variable naming the storage URL when ``--storage`` is not given."""


ALLOWED = "sqlite:///PATH (a local file) or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
"""The URL forms edgesearch accepts, as printed in error messages."""


SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})


_POSTGRES_DRIVER = "postgresql+psycopg"


# Spellings of PostgreSQL that mean "the default driver": SQLAlchemy maps them to psycopg2, which is
# not installed, so they are rewritten to psycopg 3.
_POSTGRES_ALIASES = frozenset({"postgresql", "postgres"})


_HIDDEN = "***"


_UNPARSABLE = "<unparsable URL, not shown: it may contain a password>"


# sqlite:///PATH where PATH holds only characters that SQLAlchemy neither decodes when parsing a URL nor
# encodes when printing one: no host, no query, no %-escapes, ASCII only.
_PLAIN_SQLITE = re.compile(r"sqlite(?:\+pysqlite)?:///(?P<path>[A-Za-z0-9_.~ +/-]+)")


def resolve_storage_url(cli: str | None, study_file_url: str | None = None) -> str:
    """The storage URL to use: ``--storage`` > ``$EDGESEARCH_STORAGE`` > the study file's ``storage:`` > default.

    An empty or blank value counts as not given, so ``EDGESEARCH_STORAGE=`` in a shell falls through.
    The URL is returned as given; :func:`open_storage` normalizes and checks it.
    """
    for candidate in (cli, os.environ.get(ENV_VAR), study_file_url):
        if candidate is not None and candidate.strip():
            return candidate.strip()
    return DEFAULT_STORAGE


SECRET_QUERY_PARAMETERS = frozenset({"password", "sslpassword"})
"""Query parameters of a database URL whose values are secrets (libpq's names)."""


def redact(url: str) -> str:
    """``url`` with its password and secret query values (:data:`SECRET_QUERY_PARAMETERS`) as ``***``.

    A password holding a raw ``@`` (which belongs in a URL as ``%40``) makes SQLAlchemy split the
    URL at its first ``@`` and show the rest of the password as the host; such a URL is redacted
    from its last ``@`` instead. A string that SQLAlchemy cannot parse is shown as is only when it
    cannot hold a password (no ``@``, no ``:`` beyond the scheme, no "password"); otherwise a
    placeholder stands in for it.
    """
    if _PLAIN_SQLITE.fullmatch(url):
        return url  # nothing to hide, and SQLAlchemy would print it unchanged: no need to import it
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        rest = url.split("://", 1)[-1]
        if "@" in url or ":" in rest or "password" in url.lower():
            return _UNPARSABLE
        return url
    if parsed.host and "@" in parsed.host:  # the rest of a password that held a raw "@"
        parsed = parsed.set(host=parsed.host.rsplit("@", 1)[1], password=_HIDDEN)
    secret = {key: _HIDDEN for key in parsed.query if key.lower() in SECRET_QUERY_PARAMETERS}
    if secret:
        parsed = parsed.update_query_dict(secret)
    # SQLAlchemy quotes the stars of a hidden query value; they are shown as they are.
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", _HIDDEN)


def holds_secret(url: str) -> bool:
    """Whether ``url`` carries a password or a secret query parameter (an unparsable one may: True)."""
    if _PLAIN_SQLITE.fullmatch(url):
        return False
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return True
    return parsed.password is not None or any(key.lower() in SECRET_QUERY_PARAMETERS for key in parsed.query)


def storage_option(url: str) -> str:
    """The ``--storage`` option to print in a command to copy, or ``""`` when the URL holds a secret.

    A redacted URL would not work when pasted, and a secret must not be printed: the user sets
    ``EDGESEARCH_STORAGE`` instead (:func:`storage_hint` says so).
    """
    return "" if holds_secret(url) else f" --storage '{url}'"


def storage_hint(url: str) -> str | None:
    """One line telling the user how the printed commands find a storage whose URL holds a secret."""
    if not holds_secret(url):
        return None
    return f"the storage URL holds a password: set {ENV_VAR} to it (export {ENV_VAR}='...') and run these commands"


def normalize_url(url: str) -> str:
    """``url`` with ``postgresql://`` / ``postgres://`` rewritten to ``postgresql+psycopg://``.

    Why: SQLAlchemy's default PostgreSQL driver is psycopg2, which is not installed; psycopg 3 is. Any
    other URL (including an unparsable one, left for :func:`check_url` to report) is returned unchanged.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return url
    if parsed.drivername in _POSTGRES_ALIASES:
        return parsed.set(drivername=_POSTGRES_DRIVER).render_as_string(hide_password=False)
    return url


def check_url(url: str) -> None:
    """Raise :class:`~edgesearch.errors.ConfigError` unless ``url`` is a storage edgesearch can open.

    Allowed (after :func:`normalize_url`): ``sqlite:///PATH`` whose parent folder exists (or an in-memory
    ``sqlite://``), and ``postgresql+psycopg://...``. The check is offline: it does not connect.
    """
    path = plain_sqlite_path(url)
    if path is not None:
        _check_sqlite_path(url, path)
        return
    parsed = _parse(url)
    if parsed.drivername in SQLITE_DRIVERS:
        path = sqlite_file(parsed)
        if path is not None:
            _check_sqlite_path(url, path)
        return
    where = f"storage {redact(url)}"
    if parsed.host and "@" in parsed.host:
        # Connecting would try the rest of the password as a host name, and print it in the error.
        raise ConfigError(
            f"{where}: the password holds a raw '@'; write it URL-encoded (@ as %40), "
            "e.g. python3 -c 'import urllib.parse; print(urllib.parse.quote(input(), safe=\"\"))'"
        )
    if parsed.drivername == _POSTGRES_DRIVER:
        return
    backend = parsed.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        reason = f"driver {parsed.get_driver_name()!r} is not supported (psycopg 3 is the installed driver)"
    else:
        reason = f"unsupported database {parsed.drivername!r}"
    raise ConfigError(f"{where}: {reason}; allowed: {ALLOWED}")


def plain_sqlite_path(url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL, read without SQLAlchemy; ``None`` for any other URL.

    Plain: no host, no query and a path of ASCII letters, digits, ``_.~+-/`` and spaces only, which
    SQLAlchemy neither decodes when parsing nor encodes when printing. So the file is exactly the one
    SQLAlchemy would open, and the URL prints unchanged through :func:`redact`. Anything else (in-memory,
    ``?timeout=5``, ``%20``, non-ASCII names, PostgreSQL) is left to SQLAlchemy.
    """
    match = _PLAIN_SQLITE.fullmatch(url)
    if match is None:
        return None
    try:
        return Path(match["path"]).expanduser()
    except RuntimeError:  # "~name/..." of no known user: left to the SQLAlchemy path, which reports it
        return None


def _parse(url: str) -> URL:
    """``make_url(normalize_url(url))``, raising ConfigError (password hidden) for a malformed URL."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        return make_url(normalize_url(url))
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ConfigError(f"storage {redact(url)}: not a valid database URL; allowed: {ALLOWED}") from None


def sqlite_file(parsed: URL) -> Path | None:
    """The file a SQLite URL names, or ``None`` for an in-memory database."""
    database = parsed.database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser()


def _check_sqlite_path(url: str, path: Path) -> None:
    """ConfigError unless ``path`` can be a SQLite database file: not a folder, in a folder that exists.

    A FIFO, device or socket is refused too: SQLite would wait on it forever.
    """
    where = f"storage {redact(url)}"
    if path.is_dir():
        raise ConfigError(f"{where}: {path} is a folder; name a database file, e.g. sqlite:///{path}/study.db")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{where}: {path} is not a regular file (a FIFO, device or socket); name a database file")
    if not path.parent.is_dir():
        raise ConfigError(f"{where}: folder {path.parent} does not exist; create it or choose another path")


def driver_message(detail: str) -> str:
    """The driver message's first line without libpq's "connection to server at ... failed:" preamble."""
    line = detail.strip().splitlines()[0] if detail.strip() else "unknown error"
    line = re.sub(r"^connection failed:\s*", "", line)
    line = re.sub(r"^connection to server (at|on) .*? failed:\s*", "", line)
    line = re.sub(r"^FATAL:\s*", "", line)
    return line.strip() or "unknown error"


def scrub_password(text: str, password: str | None) -> str:
    """``text`` with every occurrence of the password (plain or URL-quoted) replaced by ``***``."""
    if password:
        from urllib.parse import quote, quote_plus

        for form in {password, quote(password, safe=""), quote_plus(password)}:
            text = text.replace(form, _HIDDEN)
    return text
