"""Errors that mean "the user gave bad input" (exit code 2), kept apart from bugs.

The CLI turns any :class:`UserError` into one clear line on stderr and exit code 2;
everything else is a failure of the run (exit code 1) and keeps its traceback under
``--debug``.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a file, a field, an option or data that is not allowed."""


class ConfigError(UserError, ValueError):
    """A config or study file that does not validate."""


class DataError(UserError):
    """A dataset folder that cannot be trained on (missing, unpaired or broken files)."""
