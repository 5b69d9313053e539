"""The studies of a SQLite file read with the standard library's :mod:`sqlite3`, for ``study list``'s fast path.

Why: opening a storage through Optuna imports SQLAlchemy and alembic and checks the schema, about two
seconds before the first row, for a listing that needs a handful of small queries. The file is opened
read-only (a typo cannot create a database, and nothing is ever written to it), in one read transaction
(counts and best values from the same moment, even while workers write).

The reader trusts the file's layout only when its Optuna schema is one this module was written for: the
alembic revision and schema version are pinned below, and a test compares them with the installed Optuna,
so an Optuna upgrade fails that test instead of silently misreading a new layout. Anything unexpected
(another revision, missing tables, a locked or corrupt file, a study with several objectives) gives
``None``: the caller reads the storage through Optuna instead.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KNOWN_ALEMBIC_REVISIONS", "KNOWN_SCHEMA_VERSIONS", "StudySummary", "read_sqlite_summaries"]


KNOWN_ALEMBIC_REVISIONS = frozenset({"v3.2.0.a"})
"""Optuna's alembic head revision(s) whose tables the fast path reads (``alembic_version.version_num``)."""


KNOWN_SCHEMA_VERSIONS = frozenset({12})
"""Optuna's ``models.SCHEMA_VERSION`` value(s) that go with them (``version_info.schema_version``)."""


READ_TIMEOUT_S = 5
"""How long the fast path waits for a writer's lock before leaving the file to Optuna (which waits longer)."""


# How Optuna stores a trial value (``TrialValueModel``): +-inf as NULL plus a type, the rest as a number.
_INFINITIES = {"INF_POS": math.inf, "INF_NEG": -math.inf}


_DIRECTIONS = frozenset({"MINIMIZE", "MAXIMIZE"})


@dataclass(frozen=True)
class StudySummary:
    """What ``study list`` shows of one study."""

    name: str
    n_trials: int
    """Trials in any state (waiting, running, complete, pruned, failed), as Optuna counts them."""
    best_value: float | None
    """The best COMPLETE trial's value in the study's direction; ``None`` without one (or with several objectives)."""


def read_sqlite_summaries(path: Path) -> list[StudySummary] | None:
    """The studies in the Optuna SQLite file at ``path``, or ``None`` when it is not one this module can read.

    ``None`` means "ask Optuna": an unknown schema revision, a missing table, a locked or corrupt file,
    a study with several objectives or anything else this reader was not written for.
    """
    # mode=ro: SQLite refuses to create the file or write to it; a WAL database still gets the
    # -wal/-shm side files that every reader of it shares.
    uri = f"{path.absolute().as_uri()}?mode=ro"
    try:
        with contextlib.closing(
            sqlite3.connect(uri, uri=True, timeout=READ_TIMEOUT_S, isolation_level=None)
        ) as connection:
            connection.execute("BEGIN")  # one snapshot for every query below; closing rolls it back
            return _read(connection)
    except sqlite3.Error:
        return None


def _read(connection: sqlite3.Connection) -> list[StudySummary] | None:
    revisions = [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
    schemas = [row[0] for row in connection.execute("SELECT schema_version FROM version_info")]
    if len(revisions) != 1 or revisions[0] not in KNOWN_ALEMBIC_REVISIONS:
        return None
    if len(schemas) != 1 or schemas[0] not in KNOWN_SCHEMA_VERSIONS:
        return None

    directions: dict[int, list[str]] = defaultdict(list)
    for study_id, direction in connection.execute("SELECT study_id, direction FROM study_directions"):
        directions[study_id].append(direction)
    studies: list[tuple[int, str]] = list(
        connection.execute("SELECT study_id, study_name FROM studies ORDER BY study_id")
    )
    direction_of: dict[int, str] = {}
    for study_id, _ in studies:
        if len(directions[study_id]) != 1 or directions[study_id][0] not in _DIRECTIONS:
            return None  # several objectives (Optuna shows no best trial for them) or a direction not set
        direction_of[study_id] = directions[study_id][0]

    n_trials = dict(connection.execute("SELECT study_id, COUNT(*) FROM trials GROUP BY study_id"))
    best: dict[int, float] = {}
    complete_values = connection.execute(
        "SELECT t.study_id, v.value, v.value_type FROM trials AS t "
        "LEFT JOIN trial_values AS v ON v.trial_id = t.trial_id AND v.objective = 0 "
        "WHERE t.state = 'COMPLETE'"
    )
    for study_id, stored, value_type in complete_values:
        if study_id not in direction_of:
            continue  # a trial of no listed study, which Optuna does not count either
        value = _value(stored, value_type)
        if value is None:
            return None  # a COMPLETE trial without a readable value: Optuna knows what to make of it
        if study_id not in best:
            best[study_id] = value
        elif direction_of[study_id] == "MAXIMIZE":
            best[study_id] = max(best[study_id], value)
        else:
            best[study_id] = min(best[study_id], value)
    return [StudySummary(name, n_trials.get(study_id, 0), best.get(study_id)) for study_id, name in studies]


def _value(stored: object, value_type: object) -> float | None:
    """A trial value as Optuna reads it back, or ``None`` for a row that does not follow Optuna's rules."""
    if value_type in _INFINITIES:
        return _INFINITIES[str(value_type)] if stored is None else None
    if value_type == "FINITE" and isinstance(stored, (int, float)):
        return float(stored)
    return None
