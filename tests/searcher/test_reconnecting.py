"""Which database errors a worker waits out, and that waiting really retries the failed call."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState

from edgesearch.searcher.storage.opening import open_storage
from edgesearch.searcher.storage.reconnecting import ReconnectingRDBStorage, is_connection_error


def _wrapped(cause: BaseException) -> StorageInternalError:
    try:
        raise StorageInternalError("An exception is raised during the commit.") from cause
    except StorageInternalError as exc:
        return exc


def test_connection_errors_are_recognised_also_when_optuna_wraps_them() -> None:
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    assert is_connection_error(lost)
    assert is_connection_error(_wrapped(lost))
    assert is_connection_error(sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")))


def test_genuine_errors_are_not_retried() -> None:
    duplicate = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key value"))
    assert not is_connection_error(duplicate)
    assert not is_connection_error(_wrapped(duplicate))
    assert not is_connection_error(ValueError("bad value"))


def test_a_call_that_fails_while_the_database_is_away_is_retried_until_it_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    assert isinstance(storage, ReconnectingRDBStorage)
    real = optuna.storages.RDBStorage.get_all_studies
    failures = iter([True, True, False])

    def flaky(self: ReconnectingRDBStorage) -> object:
        if next(failures):
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("could not connect to server"))
        return real(self)

    monkeypatch.setattr(optuna.storages.RDBStorage, "get_all_studies", flaky)
    monkeypatch.setattr("edgesearch.searcher.storage.reconnecting.time.sleep", lambda seconds: None)
    assert storage.get_all_studies() == []
    assert next(failures, "done") == "done"  # it took the three attempts


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_trials_are_counted_by_state_in_the_database(request: pytest.FixtureRequest, backend: str) -> None:
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url"))
    storage = open_storage(url)
    assert isinstance(storage, ReconnectingRDBStorage)
    study = optuna.create_study(study_name="counted", storage=storage)
    other = optuna.create_study(study_name="other", storage=storage)
    study.tell(study.ask(), 1.0)
    study.tell(study.ask(), 2.0)
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.ask()
    study.enqueue_trial({"x": 0.5})
    other.ask()

    assert storage.count_trials(study._study_id) == Counter(
        {TrialState.COMPLETE: 2, TrialState.PRUNED: 1, TrialState.RUNNING: 1, TrialState.WAITING: 1}
    )
    assert storage.count_trials(other._study_id) == Counter({TrialState.RUNNING: 1})


@pytest.mark.slow
def test_the_postgres_admission_lock_excludes_other_holders_and_dies_with_its_process(postgres_url: str) -> None:
    """Two storages (as two workers) never hold one key at once; a holder killed with SIGKILL frees it."""
    import multiprocessing
    import os
    import signal
    import threading
    import time

    first = open_storage(postgres_url)
    second = open_storage(postgres_url)
    assert isinstance(first, ReconnectingRDBStorage) and isinstance(second, ReconnectingRDBStorage)
    order: list[str] = []
    with first.exclusive("k") as locked:
        assert locked

        def take() -> None:
            with second.exclusive("k"):
                order.append("second")

        waiter = threading.Thread(target=take)
        waiter.start()
        time.sleep(0.5)
        order.append("first releases")
    waiter.join(timeout=10)
    assert order == ["first releases", "second"]
    with first.exclusive("other"), second.exclusive("k"):  # other keys do not wait
        pass

    ctx = multiprocessing.get_context("spawn")
    held = ctx.Event()
    holder = ctx.Process(target=_hold_lock_forever, args=(postgres_url, "k", held))
    holder.start()
    try:
        assert held.wait(60)
        took: list[float] = []
        grabber = threading.Thread(target=lambda: (second.exclusive("k").__enter__(), took.append(time.monotonic())))
        grabber.start()
        time.sleep(0.5)
        assert not took  # the live holder keeps it
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        grabber.join(timeout=30)
        assert took  # the server released the dead holder's lock
    finally:
        holder.kill()
        holder.join()


def _hold_lock_forever(url: str, key: str, held: object) -> None:
    import time

    storage = open_storage(url)
    assert isinstance(storage, ReconnectingRDBStorage)
    with storage.exclusive(key):
        held.set()  # type: ignore[attr-defined]
        time.sleep(3600)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_what_the_lock_holder_writes_is_one_transaction_on_the_locks_own_connection(postgres_url: str) -> None:
    """Behind a pooler the waiters pin server connections, so a holder must never need a second one;
    and its count, ask and writes land together when the lock is released, or not at all."""
    holder = open_storage(postgres_url)
    onlooker = open_storage(postgres_url)
    assert isinstance(holder, ReconnectingRDBStorage) and isinstance(onlooker, ReconnectingRDBStorage)
    study = optuna.create_study(study_name="t", storage=holder, direction="maximize")
    study_id = study._study_id
    holder.engine.dispose()
    with holder.exclusive("admission") as locked:
        assert locked
        trial = study.ask()
        trial.set_user_attr("run_dir", "runs/t/trial-00000")
        trial.report(0.5, step=1)
        assert holder.count_trials(study_id) == Counter({TrialState.RUNNING: 1})  # its own write, seen
        assert holder.engine.pool.checkedout() == 1  # the lock's connection, nothing else
        assert onlooker.count_trials(study_id) == Counter()  # nothing visible before the release
    assert onlooker.count_trials(study_id) == Counter({TrialState.RUNNING: 1})
    seen = optuna.load_study(study_name="t", storage=onlooker).trials[0]
    assert seen.user_attrs == {"run_dir": "runs/t/trial-00000"} and seen.intermediate_values == {1: 0.5}

    with pytest.raises(RuntimeError, match="changed its mind"), holder.exclusive("admission"):
        study.ask()
        raise RuntimeError("changed its mind")
    assert onlooker.count_trials(study_id) == Counter({TrialState.RUNNING: 1})  # the second ask left nothing
    with holder.exclusive("admission"):  # and the lock was released
        pass
