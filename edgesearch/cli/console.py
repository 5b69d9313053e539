"""Terminal output for the CLI: consoles, exit codes, and the bad-input -> exit 2 rule."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from edgesearch.errors import RunFailed, UserError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_RUN_FAILED",
    "err",
    "fail",
    "out",
    "print_commands",
    "settings",
    "user_errors",
    "warn",
]

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)."""

# soft_wrap: a line is never cut at the terminal width, so logs and pipes keep whole lines.
# markup=False: what is printed is printed as it is, so a path or value such as ``data/q[/b]`` or
# ``[bold]x`` reads as the user wrote it; a line that is styled asks with markup=True and escapes
# every value it holds (rich.markup.escape).
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class _Settings:
    debug = False


settings = _Settings()


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr: the prefix styled, the message as it is."""
    err.print(f"[bold yellow]warning:[/] {escape(message)}", markup=True)


def fail(message: str, code: int) -> NoReturn:
    """Print ``message`` on stderr (``error:`` for bad input, ``failed:`` otherwise) and exit with ``code``."""
    prefix = "error" if code == EXIT_BAD_INPUT else "failed"
    for line in message.splitlines() or [""]:
        err.print(f"[bold red]{prefix}:[/] {escape(line)}", markup=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a UserError into its message on stderr and exit code 2, and a RunFailed (a full disk) into
    its message and exit code 1 (traceback only with --debug)."""
    try:
        yield
    except UserError as exc:
        if settings.debug:
            raise
        fail(str(exc), EXIT_BAD_INPUT)
    except RunFailed as exc:
        if settings.debug:
            raise
        fail(str(exc), EXIT_RUN_FAILED)


def print_commands(url: str, lines: list[str]) -> None:
    """Print commands to copy, ``{storage}`` in each replaced by the ``--storage`` option when it may be
    printed; for a URL that holds a password, one more line says how the commands find it."""
    from edgesearch.searcher.storage.urls import storage_hint, storage_option

    option = storage_option(url)
    for line in lines:
        out.print(line.replace("{storage}", option), markup=False)
    hint = storage_hint(url)
    if hint is not None:
        out.print(hint, markup=False)
