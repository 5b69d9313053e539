"""A study in the making: built under a hidden name, then given its real name in one statement.

Why: creating an edgesearch study is several storage writes (the study, its run id, its config,
each enqueued point). A ``study create`` killed between two of them used to leave a study with
no config under the real name, which every later ``create``, ``run`` and ``delete`` refused, and
a second create could enqueue the known-good points again. Built under a name no user study can
have (study names are letters, digits, ``-``, ``_`` and ``.``; these hold ``:``), the study
appears under its real name only once everything is in it, so the name means "whole".

A create killed part-way leaves a hidden study that no command lists or loads; the next create
removes it once it is older than :data:`STALE_AFTER_S` (a live create may still be filling it
before then).
"""

from __future__ import annotations

import secrets
import time

__all__ = ["PREFIX", "STALE_AFTER_S", "hidden_name", "is_hidden", "is_stale"]

PREFIX = "creating:"

STALE_AFTER_S = 3600
"""Age after which a hidden study is a dead create's leftover: creating one takes seconds
(at most :data:`~edgesearch.searcher.study.config.MAX_ENQUEUE` enqueued points)."""


def hidden_name(name: str, *, now: float | None = None) -> str:
    """``creating:<name>:<unix seconds>:<8 hex digits>``; the time tells a leftover from a live create."""
    stamp = int(time.time() if now is None else now)
    return f"{PREFIX}{name}:{stamp}:{secrets.token_hex(4)}"


def is_hidden(study_name: str) -> bool:
    """Whether ``study_name`` is a study in the making (or a dead create's leftover)."""
    return study_name.startswith(PREFIX)


def is_stale(study_name: str, *, now: float | None = None) -> bool:
    """Whether ``study_name`` is a hidden study older than :data:`STALE_AFTER_S` (or one it cannot date)."""
    if not is_hidden(study_name):
        return False
    _, _, stamp = study_name[len(PREFIX) :].rpartition(":")[0].rpartition(":")
    if not stamp.isdigit():
        return True
    return (time.time() if now is None else now) - int(stamp) > STALE_AFTER_S
