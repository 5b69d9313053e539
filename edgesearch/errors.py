"""Errors that mean "the user gave bad input" (exit code 2), kept apart from bugs.

The CLI turns any :class:`UserError` into one clear line on stderr and exit code 2, and a
:class:`RunFailed` (the machine, not the input, stopped the run) into one line and exit code 1;
everything else is a failure of the run too (exit code 1) and keeps its traceback under
``--debug``.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a file, a field, an option or data that is not allowed."""


class ConfigError(UserError, ValueError):
    """A config or study file that does not validate."""


class DataError(UserError):
    """A dataset folder that cannot be trained on (missing, unpaired or broken files)."""


class RunFailed(Exception):
    """The machine stopped the run, not its input or its parameters (a full disk): one line is the
    whole story, and a worker stops instead of failing every next trial the same way."""


class DiskFullError(RunFailed):
    """A write found no space left on its file system; the message names the file."""


class DatabaseLocked(RunFailed):
    """Another program held a SQLite database's lock for longer than the storage waits; the message names
    the file."""


EXIT_KILLED = 1
"""The exit code reported for a child process that a signal ended (its return code is negative)."""


def child_exit_code(returncode: int) -> int:
    """A child's exit code as a command reports it: its own, or :data:`EXIT_KILLED` when a signal ended it."""
    return returncode if returncode >= 0 else EXIT_KILLED


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none: how another library's error
    is quoted inside one of ours, which stays one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


MAX_LISTED_PROBLEMS = 10
"""How many problems one error message lists before it says how many more there are."""


def join_problems(problems: list[str], *, limit: int = MAX_LISTED_PROBLEMS) -> str:
    """The first ``limit`` problems, one per line, then ``... and N more problems`` for the rest."""
    shown = problems[:limit]
    more = len(problems) - len(shown)
    return "\n".join([*shown, *([f"... and {more} more problems"] if more else [])])


def raise_problems(problems: list[str], kind: type[UserError] = UserError) -> None:
    """Raise ``kind`` listing ``problems`` (see :func:`join_problems`); nothing when there are none."""
    if problems:
        raise kind(join_problems(problems))
