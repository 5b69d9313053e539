"""Storage URLs and opening them: precedence, password hiding, checks, SQLite/PostgreSQL, heartbeat, many workers."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import random
import sqlite3
import time
import warnings
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy.engine import make_url

from edgesearch.errors import ConfigError, UserError
from edgesearch.searcher.storage.opening import OPTUNA_HEAD_REVISION, open_storage
from edgesearch.searcher.storage.urls import (
    _PLAIN_SQLITE,
    DEFAULT_STORAGE,
    ENV_VAR,
    check_url,
    normalize_url,
    plain_sqlite_path,
    redact,
    resolve_storage_url,
    storage_hint,
    storage_option,
)
from edgesearch.searcher.storage.urls import sqlite_file as sqlalchemy_sqlite_path
from tests.helpers import tiny_study


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn: a SQLite file, then a fresh database on the PostgreSQL test server."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


# --- which URL -------------------------------------------------------------------------------------------------


def test_resolve_storage_url_prefers_cli_over_env_and_study_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "sqlite:///env.db")
    assert resolve_storage_url("sqlite:///cli.db", "sqlite:///file.db") == "sqlite:///cli.db"


def test_resolve_storage_url_prefers_env_over_study_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "sqlite:///env.db")
    assert resolve_storage_url(None, "sqlite:///file.db") == "sqlite:///env.db"


def test_resolve_storage_url_uses_study_file_without_cli_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_storage_url(None, "sqlite:///file.db") == "sqlite:///file.db"


def test_resolve_storage_url_defaults_to_local_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_storage_url(None) == DEFAULT_STORAGE == "sqlite:///edgesearch.db"


def test_resolve_storage_url_treats_blank_values_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "  ")
    assert resolve_storage_url("", "sqlite:///file.db") == "sqlite:///file.db"


# --- printing and checking URLs ----------------------------------------------------------------------------------


def test_redact_hides_password_and_keeps_host_and_port() -> None:
    shown = redact("postgresql+psycopg://alice:s3cret@db.example.org:5433/edge")
    assert shown == "postgresql+psycopg://alice:***@db.example.org:5433/edge"


def test_redact_hides_password_given_as_query_parameter() -> None:
    shown = redact("postgresql+psycopg://alice@db:5432/edge?password=s3cret&sslmode=require")
    assert "s3cret" not in shown
    assert "sslmode=require" in shown


@pytest.mark.parametrize("url", ["postgresql://u:s3cret@host:notaport/db", "garbage u:s3cret@host"])
def test_redact_never_shows_an_unparsable_url_that_may_hold_a_password(url: str) -> None:
    assert "s3cret" not in redact(url)


def test_redact_shows_an_unparsable_url_without_secrets_as_is() -> None:
    assert redact("nonsense") == "nonsense"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_normalize_url_rewrites_plain_postgresql_to_psycopg3(scheme: str) -> None:
    url = normalize_url(f"{scheme}://u:p%40ss@h:5432/db")
    assert url == "postgresql+psycopg://u:p%40ss@h:5432/db"
    assert make_url(url).password == "p@ss"


@pytest.mark.parametrize("url", ["sqlite:///x.db", "postgresql+psycopg://u:p@h/db", "nonsense"])
def test_normalize_url_leaves_other_urls_unchanged(url: str) -> None:
    assert normalize_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///study.db",
        "sqlite://",
        "postgresql+psycopg://u:p@127.0.0.1:5432/db",
        "postgresql://u:p@127.0.0.1:5432/db",
        "postgresql+psycopg:///db",
    ],
)
def test_check_url_accepts_sqlite_and_postgresql(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:s3cret@h/db",
        "http://x",
        "nonsense",
        "postgresql+psycopg2://u:s3cret@h/db",
        "postgresql://u:s3cret@h:x/d",
    ],
)
def test_check_url_rejects_unsupported_urls_naming_what_is_allowed(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_url(url)
    message = str(info.value)
    assert "sqlite:///PATH" in message
    assert "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB" in message
    assert "s3cret" not in message
    assert "\n" not in message


def test_check_url_rejects_sqlite_file_in_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"folder .*missing.* does not exist"):
        check_url(f"sqlite:///{tmp_path}/missing/study.db")


def test_check_url_rejects_sqlite_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        check_url(f"sqlite:///{tmp_path}")


PLAIN_SQLITE_URLS = [
    "sqlite:///study.db",
    "sqlite:////tmp/runs/study.db",
    "sqlite+pysqlite:///study.db",
    "sqlite:///~/studies/s.db",
    "sqlite:///~nosuchuser/s.db",
    "sqlite:///a b+c~d-e_f.0.db",
    "sqlite:///dir/../x.db",
]


def _agrees_with_sqlalchemy(url: str) -> None:
    assert make_url(url).render_as_string(hide_password=True) == url == redact(url)
    path = plain_sqlite_path(url)
    if path is None:  # "~name" of no known user: SQLAlchemy's path fails on it as before
        with pytest.raises(RuntimeError):
            sqlalchemy_sqlite_path(make_url(url))
    else:
        assert path == sqlalchemy_sqlite_path(make_url(url))


@pytest.mark.parametrize("url", PLAIN_SQLITE_URLS)
def test_plain_sqlite_path_is_the_file_sqlalchemy_opens_and_the_url_prints_unchanged(url: str) -> None:
    _agrees_with_sqlalchemy(url)


def test_plain_sqlite_path_agrees_with_sqlalchemy_on_random_paths() -> None:
    rng = random.Random(0)
    alphabet = "ab/._-~+ %:@?#é\\"
    accepted = 0
    for _ in range(2000):
        url = "sqlite:///" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        if _PLAIN_SQLITE.fullmatch(url):
            accepted += 1
            _agrees_with_sqlalchemy(url)
    assert accepted > 50  # the alphabet leaves enough plain paths to mean something


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///x.db?timeout=5",
        "sqlite:///a%20b.db",
        "sqlite:///caf\u00e9.db",
        "sqlite://host/x.db",
        "sqlite:///user@x.db",
        "SQLITE:///x.db",
        "postgresql+psycopg://u@h/db",
    ],
)
def test_plain_sqlite_path_leaves_other_urls_to_sqlalchemy(url: str) -> None:
    assert plain_sqlite_path(url) is None


# --- opening ----------------------------------------------------------------------------------------------------


ASK_TELL_WITH_HEARTBEAT = pytest.mark.filterwarnings(
    "ignore:Heartbeat of storage is supposed to be used with Study.optimize:UserWarning"
)


@ASK_TELL_WITH_HEARTBEAT
def test_open_storage_creates_a_study_that_a_second_open_reloads(storage_url: str) -> None:
    study = optuna.create_study(storage=open_storage(storage_url), study_name="s", direction="maximize")
    trial = study.ask()
    trial.suggest_float("edge_lambda", 0.0, 0.5)
    study.tell(trial, 0.75)

    reloaded = optuna.load_study(study_name="s", storage=open_storage(storage_url))
    assert [t.state for t in reloaded.trials] == [optuna.trial.TrialState.COMPLETE]
    assert reloaded.best_value == 0.75
    assert "edge_lambda" in reloaded.best_params


def test_open_storage_enables_heartbeat_with_retry(storage_url: str) -> None:
    storage = open_storage(storage_url, heartbeat_interval=30, grace_period=90, max_retries=2)
    assert optuna.storages._heartbeat.is_heartbeat_enabled(storage)
    assert storage.get_heartbeat_interval() == 30
    assert storage.grace_period == 90
    assert isinstance(storage.get_heartbeat_stale_trial_callback(), optuna.storages.RetryHeartbeatStaleTrialCallback)


def test_open_storage_heartbeat_interval_none_turns_heartbeat_off(sqlite_url: str) -> None:
    storage = open_storage(sqlite_url, heartbeat_interval=None)
    assert not optuna.storages._heartbeat.is_heartbeat_enabled(storage)
    assert storage.get_heartbeat_stale_trial_callback() is None


@pytest.mark.slow
@ASK_TELL_WITH_HEARTBEAT
@pytest.mark.filterwarnings("ignore:optuna.storages._heartbeat.fail_stale_trials is experimental")
def test_open_storage_stale_trial_fails_and_is_requeued(storage_url: str) -> None:
    storage = open_storage(storage_url, heartbeat_interval=1, grace_period=1, max_retries=2)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()  # a worker takes a trial, beats once, then is killed
    storage.record_heartbeat(trial._trial_id)
    time.sleep(3)  # SQLite's CURRENT_TIMESTAMP has one-second resolution

    optuna.storages.fail_stale_trials(study)

    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert study.trials[1].system_attrs["failed_trial"] == 0


def test_open_storage_emits_no_experimental_warning(sqlite_url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_storage(sqlite_url)


def test_the_pinned_head_revision_is_the_installed_optunas(sqlite_url: str) -> None:
    # Fails after an Optuna upgrade whose schema changed: pin the new head (open_storage trusts the pin).
    storage = open_storage(sqlite_url)
    assert storage.get_head_version() == OPTUNA_HEAD_REVISION == storage.get_current_version()


@pytest.mark.parametrize(("option", "value"), [("heartbeat_interval", 0), ("grace_period", -1), ("max_retries", -1)])
def test_open_storage_rejects_non_positive_fault_tolerance_settings(sqlite_url: str, option: str, value: int) -> None:
    kwargs: dict[str, Any] = {option: value}
    with pytest.raises(ConfigError, match=option):
        open_storage(sqlite_url, **kwargs)


def test_open_storage_unreachable_postgres_is_one_line_user_error_without_password() -> None:
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        open_storage("postgresql+psycopg://u:s3cret@127.0.0.1:1/db")
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert message == (
        "storage postgresql+psycopg://u:***@127.0.0.1:1/db: cannot connect (connection refused); is the server running?"
    )
    assert "s3cret" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_open_storage_accepts_braces_in_password_and_path(tmp_path: Path) -> None:
    folder = tmp_path / "run{1}"
    folder.mkdir()
    assert open_storage(f"sqlite:///{folder}/study.db").get_all_studies() == []
    with pytest.raises(UserError, match="connection refused") as info:
        open_storage("postgresql+psycopg://u:a{b}c@127.0.0.1:1/db")
    assert "a{b}c" not in str(info.value)


def test_open_storage_missing_postgres_database_is_named(postgres_url: str) -> None:
    url = make_url(postgres_url).set(database="no_such_db", password="s3cret").render_as_string(hide_password=False)
    with pytest.raises(UserError, match=r'database "no_such_db" does not exist') as info:
        open_storage(url)
    assert "s3cret" not in str(info.value)


def test_open_storage_rejects_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("this is not a database\n" * 100)
    with pytest.raises(UserError, match="not a SQLite database"):
        open_storage(f"sqlite:///{path}")


def test_open_storage_switches_sqlite_file_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    open_storage(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


@pytest.mark.slow
def test_a_sqlite_file_locked_by_another_program_is_one_line_naming_it_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program holding the file's write lock past the busy timeout (1 s here, from the URL) and the
    outage retries (2 s here): one line naming the lock and the file, exit 1, nothing written."""
    import yaml
    from typer.testing import CliRunner

    from edgesearch.cli import app
    from edgesearch.searcher.storage.reconnecting import ReconnectingRDBStorage

    path, url = tmp_path / "study.db", f"sqlite:///{tmp_path / 'study.db'}?timeout=1"
    for name in ("first", "second"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(tiny_study(name)))
    runner = CliRunner()
    assert runner.invoke(app, ["study", "create", str(tmp_path / "first.yaml"), "--storage", url]).exit_code == 0
    monkeypatch.setattr(ReconnectingRDBStorage, "outage_seconds", 2.0)

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = runner.invoke(app, ["study", "create", str(tmp_path / "second.yaml"), "--storage", url])
    finally:
        holder.rollback()
        holder.close()

    shown = f"exit {result.exit_code}, {result.exception!r}\n{result.stdout}{result.stderr}"
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, shown  # no traceback
    assert result.stderr.splitlines()[-1].startswith(
        f"failed: the SQLite database {path} is locked by another process"
    ), shown
    assert optuna.get_all_study_names(storage=f"sqlite:///{path}") == ["first"]


# --- many workers ------------------------------------------------------------------------------------------------

N_PROCESSES = 4
TRIALS_PER_PROCESS = 25


def _ask_tell_worker(url: str, barrier: Barrier, errors: Queue[str]) -> None:
    """One worker process: open the (possibly brand-new) storage at the same moment as the others, then ask/tell."""
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used", UserWarning)
        barrier.wait(timeout=120)
        storage = open_storage(url)
        study = optuna.create_study(storage=storage, study_name="shared", load_if_exists=True)
        for _ in range(TRIALS_PER_PROCESS):
            trial = study.ask()
            study.tell(trial, 0.5)
    except BaseException as exc:
        errors.put(f"{type(exc).__name__}: {exc}")
        raise


@pytest.mark.slow
def test_open_storage_many_processes_share_one_new_study(storage_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_PROCESSES)
    errors: Queue[str] = ctx.Queue()
    processes = [ctx.Process(target=_ask_tell_worker, args=(storage_url, barrier, errors)) for _ in range(N_PROCESSES)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    problems = []
    with contextlib.suppress(queue.Empty):
        while True:
            problems.append(errors.get(timeout=1))
    for process in processes:
        if process.is_alive():
            process.kill()
    assert problems == []
    assert [process.exitcode for process in processes] == [0] * N_PROCESSES

    storage = open_storage(storage_url)
    assert optuna.get_all_study_names(storage=storage) == ["shared"]
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials(deepcopy=False)
    assert len(trials) == N_PROCESSES * TRIALS_PER_PROCESS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(N_PROCESSES * TRIALS_PER_PROCESS))


def test_open_storage_without_create_refuses_a_missing_sqlite_file_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(UserError, match="no database file"):
        open_storage(f"sqlite:///{path}", create=False)
    assert not path.exists()
    open_storage(f"sqlite:///{path}")
    assert open_storage(f"sqlite:///{path}", create=False).get_all_studies() == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://edge:r3t@PW@db:5432/x", "postgresql://edge:***@db:5432/x"),
        ("postgresql://edge:a/b@PW@db/x", "postgresql://edge:***@db/x"),
        (
            "postgresql://edge@db/x?sslpassword=r3tPW&sslmode=require",
            "postgresql://edge@db/x?sslmode=require&sslpassword=***",
        ),
        ("postgresql://edge:r3tPW@db/x?PASSWORD=r3tPW", "postgresql://edge:***@db/x?PASSWORD=***"),
    ],
    ids=["raw-at", "raw-at-and-slash", "sslpassword", "password-param"],
)
def test_redact_hides_every_part_of_a_password_and_secret_parameters(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "r3t" not in redact(url) and "PW" not in redact(url)


def test_a_password_with_a_raw_at_sign_is_refused_before_connecting_without_showing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        check_url("postgresql://edge:r3t@PW@db:5432/x")
    message = str(caught.value)
    assert "%40" in message and "r3t" not in message and "PW" not in message


def test_printed_commands_name_the_storage_only_when_it_holds_no_secret() -> None:
    assert storage_option("sqlite:///study.db") == " --storage 'sqlite:///study.db'"
    assert storage_hint("sqlite:///study.db") is None
    # A URL that SQLAlchemy prints otherwise (quoted braces) but that holds no secret is printed as given.
    assert storage_option("sqlite:////tmp/{x}.db") == " --storage 'sqlite:////tmp/{x}.db'"
    assert storage_option("postgresql://u@h/db?sslpassword=s3cret") == ""
    secret = "postgresql+psycopg://edge:s3cret@db/x"
    assert storage_option(secret) == ""
    hint = storage_hint(secret)
    assert hint is not None and "EDGESEARCH_STORAGE" in hint and "s3cret" not in hint


@pytest.mark.slow
@ASK_TELL_WITH_HEARTBEAT
def test_a_failing_heartbeat_warns_in_one_line_without_a_traceback_and_keeps_beating(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A beat that fails (here its table is gone; in the field a study deleted under the worker, or
    an outage past the retries) is one line naming the cause, and the next beat is tried anyway."""
    import sqlalchemy

    from edgesearch.searcher.storage._optuna.handles import heartbeat

    storage = open_storage(postgres_url, heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    breaker = sqlalchemy.create_engine(postgres_url)
    with breaker.begin() as connection:
        connection.execute(sqlalchemy.text("DROP TABLE trial_heartbeats"))
    breaker.dispose()
    with caplog.at_level("WARNING", logger="edgesearch"), heartbeat(study, trial):
        time.sleep(1.5)  # two beats

    failed = [r for r in caplog.records if r.getMessage().startswith("heartbeat of trial 0 failed")]
    assert len(failed) >= 2, caplog.text
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in failed)
    assert "trial_heartbeats" in failed[0].getMessage()  # the cause, in the line
    assert "Traceback" not in caplog.text
