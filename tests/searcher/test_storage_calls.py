"""What a trial writes to and reads from the storage per epoch: the per-epoch calls are the ones a
study pays thousands of times, so each is kept to what pruning needs."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event

from edgesearch.searcher.run.trial import PruningCallback
from edgesearch.searcher.storage._optuna.handles import (
    ask,
    complete_curves,
    rdb_storage,
    stored_state,
    study_storage,
    tell,
)
from edgesearch.searcher.storage.opening import open_storage
from edgesearch.searcher.study.progress import EPOCHS_DONE_ATTR, epochs_done
from tests.helpers import tiny_study


def _record(epoch: int, iou: float = 0.5) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "stage": 2,
        "train_loss": 1.0,
        "val_iou": iou,
        "val_boundary_iou": 0.3,
        "val_edge_corr": 0.2,
    }


@contextmanager
def _statements(study: optuna.Study) -> Iterator[list[str]]:
    """The SQL statements the study's storage sends while the block runs."""
    storage = rdb_storage(study)
    assert storage is not None
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(storage.engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(storage.engine, "before_cursor_execute", seen)


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(backend, URL of a fresh database of it), for a test that runs on both."""
    backend: str = request.param
    return backend, request.getfixturevalue(f"{backend}_url")


@pytest.fixture
def study(sqlite_url: str) -> optuna.Study:
    return optuna.create_study(study_name="s", storage=open_storage(sqlite_url), direction="maximize")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_the_history_is_stored_once_when_the_trial_ends_and_reports_say_the_epochs_meanwhile(
    study: optuna.Study,
) -> None:
    trial = study.ask()
    pruning = PruningCallback(trial, metric="val_iou")
    for epoch in (1, 2, 3):
        pruning.on_epoch_end(_record(epoch))  # type: ignore[arg-type]
    live = study.get_trials(deepcopy=False)[0]
    assert "history" not in live.user_attrs
    assert live.intermediate_values == {1: 0.5, 2: 0.5, 3: 0.5}
    assert epochs_done(live) == 3
    pruning.store_history()
    stored = study.get_trials(deepcopy=False)[0].user_attrs["history"]
    assert [row["epoch"] for row in stored] == [1, 2, 3]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trial_that_reports_nothing_stores_its_epoch_count_each_epoch(study: optuna.Study) -> None:
    trial = study.ask()
    pruning = PruningCallback(trial, metric="val_iou", prune=False)
    pruning.on_epoch_end(_record(1))  # type: ignore[arg-type]
    pruning.on_epoch_end(_record(2))  # type: ignore[arg-type]
    live = study.get_trials(deepcopy=False)[0]
    assert live.intermediate_values == {}
    assert live.user_attrs[EPOCHS_DONE_ATTR] == 2 and "history" not in live.user_attrs
    assert epochs_done(live) == 2


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_complete_curves_are_read_once_each_and_agree_with_optuna(backend_url: tuple[str, str]) -> None:
    backend, url = backend_url
    study = optuna.create_study(study_name="c", storage=open_storage(url), direction="maximize")
    running = study.ask()
    for value in (0.1, 0.2):
        done = study.ask()
        done.suggest_float("lr", 1e-4, 1e-2, log=True)
        done.set_user_attr("config", {"optim": {"freeze_epochs": 1}, "seed": value})
        done.report(value, step=1)
        done.report(float("nan"), step=2)
        study.tell(done, value)
    study.tell(study.ask(), state=TrialState.PRUNED)

    first = complete_curves(study)
    assert [c.number for c in first] == [1, 2]
    assert [(c.intermediate_values[1], math.isnan(c.intermediate_values[2])) for c in first] == [
        (0.1, True),
        (0.2, True),
    ]
    assert [c.config for c in first] == [{"optim": {"freeze_epochs": 1}, "seed": v} for v in (0.1, 0.2)]
    with _statements(study) as sent:
        again = complete_curves(study)
    assert [c.number for c in again] == [1, 2]
    assert len(sent) == 1  # the list of complete ids; no trial is read again

    running.report(0.3, step=1)
    study.tell(running, 0.3)
    with _statements(study) as sent:
        latest = complete_curves(study)
    if backend == "postgres":
        assert len(sent) == 1 + 3  # the ids, then the new trial's number, reported values and config
    expected = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert [(c.number, c.config) for c in latest] == [(t.number, t.user_attrs.get("config")) for t in expected]
    assert [c.intermediate_values[1] for c in latest] == [t.intermediate_values[1] for t in expected]
    # Only the newly complete trial was read: the others are the very objects read before.
    assert latest[1] is first[0] and latest[2] is first[1]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_per_trial_writes_store_what_optuna_stores_and_refuse_a_finished_trial(backend_url: tuple[str, str]) -> None:
    """Parameters, intermediate values and user attributes (one statement each on PostgreSQL) read back
    as written, updates replace, and a finished trial refuses them with Optuna's own error."""
    backend, url = backend_url
    study = optuna.create_study(study_name="w", storage=open_storage(url), direction="maximize")
    study.ask().suggest_float("x", 0.0, 1.0)  # the first of its name: the study learns its distribution
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    kind = trial.suggest_categorical("kind", ["bce", "focal"])
    for step, value in [(1, 0.5), (2, float("nan")), (3, float("inf")), (4, float("-inf"))]:
        trial.report(value, step=step)
    storage = study_storage(study)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("w"), trial.number)
    storage.set_trial_intermediate_value(trial_id, 1, 0.25)  # a step written again replaces its value
    trial.set_user_attr("config", {"a": [1, 2]})
    trial.set_user_attr("config", {"a": [3]})
    with _statements(study) as sent:
        trial.report(0.75, step=5)
    if backend == "postgres":
        assert len(sent) == 1  # the whole write, in autocommit
    stored = study.get_trials(deepcopy=False)[1]
    assert stored.params == {"x": x, "kind": kind}
    values = stored.intermediate_values
    assert values[1] == 0.25 and values[3] == float("inf") and values[4] == float("-inf") and values[5] == 0.75
    assert values[2] != values[2]  # NaN
    assert stored.user_attrs == {"config": {"a": [3]}}
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(trial_id, 9, 0.1)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attr(trial_id, "late", 1)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_param(trial_id, "x", 0.5, optuna.distributions.FloatDistribution(0.0, 1.0))
    assert study.get_trials(deepcopy=False)[1].user_attrs == {"config": {"a": [3]}}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trials_state_is_read_in_one_statement(backend_url: tuple[str, str]) -> None:
    _, url = backend_url
    study = optuna.create_study(study_name="st", storage=open_storage(url), direction="maximize")
    trial = study.ask()
    with _statements(study) as sent:
        assert stored_state(study, trial) == TrialState.RUNNING
    assert len(sent) == 1
    study.tell(trial, 0.5)
    assert stored_state(study, trial) == TrialState.COMPLETE
    optuna.delete_study(study_name="st", storage=open_storage(url))
    with pytest.raises(KeyError):
        stored_state(study, trial)


_READS_OTHER_TRIALS = re.compile(r"\.trial_id (IN|>) ", re.IGNORECASE)
"""Optuna's trial-cache refresh: every unfinished trial by id, and every trial newer than the last finished."""


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_asking_with_none_waiting_reads_none_of_the_trials_running_elsewhere(backend_url: tuple[str, str]) -> None:
    _, url = backend_url
    study = optuna.create_study(study_name="a", storage=open_storage(url), direction="maximize")
    elsewhere = [study.ask() for _ in range(4)]  # other workers' trials, mid-training
    for trial in elsewhere:
        trial.report(0.5, step=1)

    with _statements(study) as sent:
        trial = ask(study, none_waiting=True)
    assert not [s for s in sent if _READS_OTHER_TRIALS.search(s)], sent
    assert trial.number == 4 and stored_state(study, trial) == TrialState.RUNNING
    assert study.get_trials(deepcopy=False)[4].datetime_start is not None

    with _statements(study) as sent:  # Optuna's own ask, for contrast: it reads them all
        study.ask()
    assert [s for s in sent if _READS_OTHER_TRIALS.search(s)], sent


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
@pytest.mark.parametrize("none_waiting", [True, False])
def test_a_waiting_trial_is_taken_before_a_new_one_unless_the_caller_counted_none(
    sqlite_url: str, none_waiting: bool
) -> None:
    study = optuna.create_study(study_name="q", storage=open_storage(sqlite_url), direction="maximize")
    study.enqueue_trial({"x": 0.25})
    trial = ask(study, none_waiting=none_waiting)
    # False is what a worker passes when its count saw a waiting trial: Optuna's ask takes it.
    assert trial.number == (1 if none_waiting else 0)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trials_end_is_stored_as_optuna_stores_it_and_a_finished_trial_refuses_another(
    backend_url: tuple[str, str],
) -> None:
    """COMPLETE with one or two values (infinite too), PRUNED with its last reported value, FAIL:
    read back through Optuna; one statement each on PostgreSQL; a second end raises Optuna's error."""
    backend, url = backend_url
    one = optuna.create_study(study_name="one", storage=open_storage(url), direction="maximize")
    two = optuna.create_study(study_name="two", storage=open_storage(url), directions=["maximize", "maximize"])
    ended: list[tuple[optuna.Study, optuna.Trial, Any, TrialState | None]] = []
    for study, values, state in [
        (one, 0.75, None),
        (one, float("inf"), None),
        (one, None, TrialState.PRUNED),
        (one, None, TrialState.FAIL),
        (two, [0.5, float("-inf")], None),
    ]:
        trial = study.ask()
        if study is one:
            trial.report(0.25, step=3)
        with _statements(study) as sent:
            tell(study, trial, values, state=state)
        if backend == "postgres":
            assert len(sent) == 1 + 2  # the end itself, after the read of the trial for Optuna's checks
        ended.append((study, trial, values, state))

    stored = [t for s in (one, two) for t in s.get_trials(deepcopy=False)]
    assert [t.state for t in stored] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED, TrialState.FAIL] + [
        TrialState.COMPLETE
    ]
    assert [t.values for t in stored] == [[0.75], [float("inf")], [0.25], None, [0.5, float("-inf")]]
    assert all(t.datetime_complete is not None and t.datetime_complete >= t.datetime_start for t in stored)

    storage = study_storage(one)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("one"), 0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    assert one.get_trials(deepcopy=False)[0].values == [0.75]


def _comparable(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's fields, NaN made comparable (FrozenTrial's own == says NaN != NaN)."""

    def plain(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    fields = ("number", "state", "values", "datetime_start", "datetime_complete", "params", "distributions")
    fields += ("user_attrs", "system_attrs", "intermediate_values", "_trial_id")
    return {name: plain(getattr(trial, name)) for name in fields}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trial_read_whole_is_the_trial_optuna_reads_in_two_statements(backend_url: tuple[str, str]) -> None:
    _, url = backend_url
    storage = open_storage(url)
    one = optuna.create_study(study_name="one", storage=storage, direction="maximize")
    two = optuna.create_study(study_name="two", storage=storage, directions=["maximize", "minimize"])
    full = one.ask()
    full.suggest_float("lr", 1e-5, 1e-1, log=True)
    full.suggest_int("width", 1, 9, step=2)
    full.suggest_float("lambda", 0.0, 0.5, step=0.05)
    full.suggest_categorical("kind", ["bce", None, 3, True, 2.5])
    for step, value in [(1, 0.25), (2, float("nan")), (3, float("inf")), (4, float("-inf")), (5, 0.5)]:
        full.report(value, step=step)
    full.set_user_attr("config", {"optim": {"lr": 0.01}, "tags": ["a", None]})
    full.storage.set_trial_system_attr(full._trial_id, "failed_trial", 7)
    one.tell(full, 0.875)
    pruned = one.ask()
    pruned.suggest_categorical("kind", ["bce", None, 3, True, 2.5])
    pruned.report(0.125, step=1)
    one.tell(pruned, state=TrialState.PRUNED)
    one.tell(one.ask(), state=TrialState.FAIL)
    one.tell(one.ask(), float("inf"))
    one.enqueue_trial({"lr": 0.001, "kind": None})
    running = one.ask()  # the enqueued one, with its fixed_params
    running.suggest_float("lr", 1e-5, 1e-1, log=True)
    one.enqueue_trial({"lr": 0.002})  # WAITING
    two.tell(two.ask(), [float("-inf"), 1.5])

    ids = [t._trial_id for s in (one, two) for t in s.get_trials(deepcopy=False)]
    assert len(ids) == 7
    for trial_id in ids:
        with _statements(one) as sent:
            ours = storage.get_trial(trial_id)
        assert len(sent) == 2
        assert _comparable(ours) == _comparable(optuna.storages.RDBStorage.get_trial(storage, trial_id))
    assert list(storage.get_trial(ids[0]).params) == ["lr", "width", "lambda", "kind"]  # Optuna's order
    with pytest.raises(KeyError):
        storage.get_trial(max(ids) + 100)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_worker_loading_its_study_reads_no_trial_of_any_study(sqlite_url: str) -> None:
    """Every worker loads the study when it starts: reading trials there (Optuna's study summaries
    count them, of every study in the database) made a worker's start grow with the database."""
    from sqlalchemy.engine import Engine

    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.studies import create_study, load_study

    for name in ("mine", "other"):
        study, _ = create_study(StudyConfig.from_dict(tiny_study(name), source="test"), sqlite_url)
        for _ in range(3):
            trial = study.ask()
            trial.report(0.5, step=1)
            study.tell(trial, 0.5)
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        load_study("mine", sqlite_url)
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert sent and not [s for s in sent if re.search(r"\bFROM trial", s)], sent


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_stale_trials_are_found_in_one_statement_as_optuna_finds_them_and_a_beat_is_one_on_postgres(
    backend_url: tuple[str, str],
) -> None:
    import sqlalchemy

    backend, url = backend_url
    storage = open_storage(url, heartbeat_interval=10, grace_period=30)
    study = optuna.create_study(study_name="h", storage=storage, direction="maximize")
    trials = [study.ask() for _ in range(4)]
    study.tell(study.ask(), 0.5)  # finished: never stale
    for trial in trials[:3]:
        with _statements(study) as sent:
            storage.record_heartbeat(trial._trial_id)
        if backend == "postgres":
            assert len(sent) == 1
    storage.record_heartbeat(trials[0]._trial_id)  # a second beat updates the first
    with storage.engine.begin() as connection:  # trial 1 went silent a minute ago; trial 3 never beat
        connection.execute(
            sqlalchemy.text(
                "UPDATE trial_heartbeats SET heartbeat = heartbeat - INTERVAL '60 seconds' WHERE trial_id = :t"
            )
            if backend == "postgres"
            else sqlalchemy.text(
                "UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-60 seconds') WHERE trial_id = :t"
            ),
            {"t": trials[1]._trial_id},
        )
    with _statements(study) as sent:
        ours = storage._get_stale_trial_ids(study._study_id)
    assert len(sent) == 1
    assert sorted(ours) == sorted(optuna.storages.RDBStorage._get_stale_trial_ids(storage, study._study_id))
    assert ours == [trials[1]._trial_id]
