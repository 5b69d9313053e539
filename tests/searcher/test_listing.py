"""``study list``'s fast path: reading SQLite directly equals Optuna's summaries, anything unknown goes to Optuna,
and the file is never written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.storages._rdb.models import SCHEMA_VERSION
from optuna.trial import TrialState
from typer.testing import CliRunner

from edgesearch.cli import app
from edgesearch.errors import UserError
from edgesearch.searcher.results import listing
from edgesearch.searcher.results.listing import study_summaries
from edgesearch.searcher.storage import sqlite_summaries
from edgesearch.searcher.storage.opening import open_storage
from edgesearch.searcher.storage.sqlite_summaries import (
    KNOWN_ALEMBIC_REVISIONS,
    KNOWN_SCHEMA_VERSIONS,
    StudySummary,
    read_sqlite_summaries,
)

runner = CliRunner()


@contextlib.contextmanager
def _rdb(url: str) -> Iterator[RDBStorage]:
    """Optuna's own storage on ``url``, its connections closed afterwards (so the file can be copied whole)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = RDBStorage(url)
    try:
        yield storage
    finally:
        storage.engine.dispose()


def _every_state(study: optuna.Study, values: list[float], *, pruned_value: float) -> None:
    """COMPLETE trials with ``values``, then PRUNED (at ``pruned_value``), FAIL, RUNNING and WAITING ones."""
    for value in values:
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, value)
    pruned = study.ask()
    pruned.report(pruned_value, 1)  # a PRUNED trial keeps its last report as its value: never the best
    study.tell(pruned, state=TrialState.PRUNED)
    study.tell(study.ask(), state=TrialState.FAIL)
    study.ask()  # left RUNNING
    study.enqueue_trial({"x": 0.5})  # WAITING


@pytest.fixture(scope="module")
def _studies_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file :func:`studies_db` copies: written once, since Optuna takes seconds to write it."""
    path = tmp_path_factory.mktemp("listing") / "studies.db"
    with _rdb(f"sqlite:///{path}") as storage:

        def study(name: str, direction: str = "minimize") -> optuna.Study:
            return optuna.create_study(study_name=name, storage=storage, direction=direction)

        inf = float("inf")
        _every_state(study("max", "maximize"), [0.3, 0.9, 0.5], pruned_value=2.0)
        _every_state(study("min"), [0.3, 0.1, 0.5], pruned_value=-1.0)
        study("empty")
        _every_state(study("no-complete"), [], pruned_value=0.4)
        _every_state(study("max-inf", "maximize"), [-inf, 2.0], pruned_value=9.0)
        _every_state(study("min-inf"), [inf, -inf], pruned_value=0.0)
    return path


@pytest.fixture
def studies_db(_studies_template: Path, tmp_path: Path) -> Path:
    """A SQLite file written by Optuna: both directions, every trial state, infinities, empty studies.

    The test's own copy, which it may change."""
    return Path(shutil.copyfile(_studies_template, tmp_path / "studies.db"))


def _optunas(path: Path) -> list[StudySummary]:
    with _rdb(f"sqlite:///{path}") as storage:
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    return [StudySummary(s.study_name, s.n_trials, s.best_trial.value if s.best_trial else None) for s in summaries]


def _rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()]


def _tamper(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        for statement in statements:
            connection.execute(statement)
        connection.commit()


# --- the pinned schema ------------------------------------------------------------------------------------------


def test_known_revision_is_the_installed_optunas_head(tmp_path: Path) -> None:
    # Fails after an Optuna upgrade: check that the tables the fast path reads are unchanged, then pin the new head.
    with _rdb(f"sqlite:///{tmp_path / 'head.db'}") as storage:
        assert storage.get_head_version() in KNOWN_ALEMBIC_REVISIONS
        assert storage.get_current_version() in KNOWN_ALEMBIC_REVISIONS
    assert SCHEMA_VERSION in KNOWN_SCHEMA_VERSIONS


# --- same answers as Optuna ----------------------------------------------------------------------------------------


def test_fast_path_summaries_equal_optunas_for_every_trial_state_and_direction(studies_db: Path) -> None:
    fast = read_sqlite_summaries(studies_db)
    assert fast is not None
    assert fast == _optunas(studies_db)
    by_name = {s.name: s for s in fast}
    assert by_name["max"] == StudySummary("max", 7, 0.9)  # 3 complete + pruned, failed, running, waiting
    assert by_name["min"] == StudySummary("min", 7, 0.1)
    assert by_name["empty"] == StudySummary("empty", 0, None)
    assert by_name["no-complete"] == StudySummary("no-complete", 4, None)
    assert by_name["max-inf"].best_value == 2.0
    assert by_name["min-inf"].best_value == -float("inf")


def test_fast_path_reads_a_live_wal_database_written_through_open_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    storage = open_storage(url, heartbeat_interval=None)  # WAL mode, connections left open as a worker's are
    _every_state(
        optuna.create_study(study_name="live", storage=storage, direction="maximize"), [0.2, 0.6], pruned_value=0.9
    )
    assert study_summaries(url) == [StudySummary("live", 6, 0.6)]
    assert read_sqlite_summaries(tmp_path / "wal.db") == _optunas(tmp_path / "wal.db")


# --- anything unknown goes to Optuna ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statements",
    [
        ["UPDATE alembic_version SET version_num = 'v9.9.9.z'"],
        ["UPDATE version_info SET schema_version = 99"],
        ["DROP TABLE alembic_version"],
        ["DROP TABLE trial_values"],
        ["INSERT INTO alembic_version (version_num) VALUES ('v3.0.0.a')"],
        ["UPDATE study_directions SET direction = 'NOT_SET'"],
        ["UPDATE trial_values SET value_type = 'SOMETHING'"],
    ],
    ids=[
        "unknown-revision",
        "unknown-schema-version",
        "no-alembic-table",
        "no-values-table",
        "two-revisions",
        "no-direction",
        "unknown-value-type",
    ],
)
def test_fast_path_declines_a_file_it_was_not_written_for(studies_db: Path, statements: list[str]) -> None:
    _tamper(studies_db, *statements)
    assert read_sqlite_summaries(studies_db) is None


def test_an_unknown_alembic_revision_falls_back_to_optuna(studies_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tamper(studies_db, "UPDATE alembic_version SET version_num = 'v9.9.9.z'")
    asked: list[str] = []
    monkeypatch.setattr(listing, "_optuna_summaries", lambda url: asked.append(url) or [])
    assert study_summaries(f"sqlite:///{studies_db}") == []
    assert asked == [f"sqlite:///{studies_db}"]
    monkeypatch.undo()
    # ... and Optuna reports such a file as every other command does.
    result = runner.invoke(app, ["study", "list", "--storage", f"sqlite:///{studies_db}"])
    assert result.exit_code == 2 and "incompatible Optuna version" in result.stderr


def test_a_multi_objective_study_is_listed_through_optuna(tmp_path: Path) -> None:
    path = tmp_path / "multi.db"
    with _rdb(f"sqlite:///{path}") as storage:
        study = optuna.create_study(study_name="pareto", storage=storage, directions=["maximize", "minimize"])
        study.tell(study.ask(), [1.0, 2.0])
    assert read_sqlite_summaries(path) is None
    assert study_summaries(f"sqlite:///{path}") == [StudySummary("pareto", 1, None)]


def test_a_postgresql_storage_is_listed_through_optuna(postgres_url: str) -> None:
    storage = open_storage(postgres_url, heartbeat_interval=None)
    _every_state(optuna.create_study(study_name="pg", storage=storage), [0.4, 0.2], pruned_value=0.1)
    assert study_summaries(postgres_url) == [StudySummary("pg", 6, 0.2)]


def test_a_locked_file_falls_back_instead_of_waiting(studies_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_summaries, "READ_TIMEOUT_S", 0.1)
    with contextlib.closing(sqlite3.connect(studies_db, isolation_level=None)) as writer:
        writer.execute("BEGIN EXCLUSIVE")  # rollback-journal mode: readers are locked out until it ends
        assert read_sqlite_summaries(studies_db) is None
        writer.execute("ROLLBACK")
    assert read_sqlite_summaries(studies_db) is not None


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100], ids=["empty-file", "garbage"])
def test_a_file_without_optuna_tables_falls_back(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(content)
    assert read_sqlite_summaries(path) is None


def test_a_non_sqlite_url_goes_to_optuna(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    monkeypatch.setattr(listing, "_optuna_summaries", lambda url: asked.append(url) or [])
    monkeypatch.setattr(listing, "read_sqlite_summaries", lambda path: pytest.fail("read a non-SQLite URL"))
    for url in ("postgresql+psycopg://u@localhost/db", "sqlite:///x.db?timeout=5", "sqlite://"):
        study_summaries(url)
    assert len(asked) == 3


# --- never writes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_fast_path_never_writes_and_reads_a_read_only_copy(studies_db: Path, tmp_path: Path, journal: str) -> None:
    copy = tmp_path / "copy" / "studies.db"
    copy.parent.mkdir()
    shutil.copyfile(studies_db, copy)
    _tamper(copy, f"PRAGMA journal_mode = {journal}")
    copy.chmod(0o444)
    before = (copy.read_bytes(), copy.stat().st_mtime_ns)

    assert read_sqlite_summaries(copy) == _optunas(studies_db)
    result = runner.invoke(app, ["study", "list", "--storage", f"sqlite:///{copy}"])

    assert result.exit_code == 0, result.output
    assert (copy.read_bytes(), copy.stat().st_mtime_ns) == before


def test_a_missing_file_is_never_created_and_named_as_open_storage_names_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    with pytest.raises(UserError) as expected:
        open_storage(url, create=False)
    with pytest.raises(UserError) as fast:
        study_summaries(url)
    assert str(fast.value) == str(expected.value)
    assert read_sqlite_summaries(tmp_path / "typo.db") is None
    result = runner.invoke(app, ["study", "list", "--storage", url])
    assert result.exit_code == 2 and str(expected.value) in result.stderr
    assert not (tmp_path / "typo.db").exists()


# --- the command ----------------------------------------------------------------------------------------------------


def test_study_list_output_is_identical_with_and_without_the_fast_path(
    studies_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["study", "list", "--storage", f"sqlite:///{studies_db}"]
    fast_reads: list[Path] = []
    real_read = listing.read_sqlite_summaries

    def counting_read(path: Path) -> list[StudySummary] | None:
        fast_reads.append(path)
        return real_read(path)

    monkeypatch.setattr(listing, "read_sqlite_summaries", counting_read)
    fast = runner.invoke(app, args)
    monkeypatch.setattr(listing, "read_sqlite_summaries", lambda path: None)
    slow = runner.invoke(app, args)

    assert fast.exit_code == slow.exit_code == 0, fast.output + slow.output
    assert fast_reads == [studies_db]
    assert fast.stdout == slow.stdout
    assert ["max", "7", "trials", "best", "0.9000"] in _rows(fast.stdout)
    assert ["empty", "0", "trials", "best", "-"] in _rows(fast.stdout)


# Runs the CLI in a fresh interpreter and reports which top-level packages it imported.
_PROBE = """
import json, sys
from edgesearch.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("\\n" + json.dumps({"code": code, "modules": sorted({name.split(".")[0] for name in sys.modules})}))
"""
_HEAVY = {"torch", "optuna", "sqlalchemy", "alembic", "psycopg", "segmentation_models_pytorch", "matplotlib", "numpy"}


def _probe(*args: str, cwd: Path) -> tuple[str, set[str]]:
    env = {k: v for k, v in os.environ.items() if k != "EDGESEARCH_STORAGE"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    output, _, report = done.stdout.rstrip().rpartition("\n")
    record = json.loads(report)
    assert record["code"] in (0, None), done.stdout + done.stderr
    return output, set(record["modules"])


@pytest.mark.slow
def test_help_and_study_list_on_sqlite_import_no_heavy_library(studies_db: Path, tmp_path: Path) -> None:
    _, modules = _probe("--help", cwd=tmp_path)
    assert not modules & (_HEAVY | {"pydantic", "yaml"})
    output, modules = _probe("study", "list", "--storage", f"sqlite:///{studies_db}", cwd=tmp_path)
    assert ["max", "7", "trials", "best", "0.9000"] in _rows(output)
    assert not modules & _HEAVY
    # The probe sees what a command imports: one that goes through Optuna shows it.
    output, modules = _probe("study", "list", "--storage", f"sqlite:///{studies_db}?timeout=5", cwd=tmp_path)
    assert ["max", "7", "trials", "best", "0.9000"] in _rows(output)
    assert {"optuna", "sqlalchemy"} <= modules
