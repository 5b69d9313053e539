"""Confirmation maths on hand-computed rows, and the job queue on an in-memory storage."""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from edgesearch.errors import UserError
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.confirm import (
    CONFIRM_ATTR,
    Confirmed,
    companion_name,
    confirmed,
    is_companion,
    load_companion,
    ranking_holds,
    request,
    summarize,
)
from tests.helpers import TINY_TRAINER

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_configuration_reads_as_mean_sample_sd_and_min_of_its_fresh_seeds() -> None:
    (row,) = summarize([(3, 1, 0.80), (3, 2, 0.84), (3, 3, 0.76)], {3: 0.90})
    # mean (0.80 + 0.84 + 0.76) / 3 = 0.80; deviations 0, 0.04, -0.04: sd sqrt(0.0032 / 2) = 0.04
    assert (row.trial, row.original, row.n, row.seeds) == (3, 0.90, 3, 3)
    assert row.mean == pytest.approx(0.80) and row.sd == pytest.approx(0.04) and row.min == pytest.approx(0.76)


def test_unfinished_jobs_count_as_asked_not_as_values() -> None:
    (row,) = summarize([(0, 1, 0.7), (0, 2, None), (0, 3, math.nan)], {0: 0.75})
    assert (row.n, row.seeds, row.mean, row.sd) == (1, 3, 0.7, None)


def test_a_retried_job_is_counted_once() -> None:
    (row,) = summarize([(0, 1, None), (0, 1, 0.6), (0, 2, 0.8)], {0: 0.75})
    assert (row.seeds, row.values) == (2, (0.6, 0.8))


def test_rows_follow_the_searchs_ranking() -> None:
    rows = summarize([(5, 1, 0.5), (2, 1, 0.9), (7, 1, 0.7)], {5: 0.95, 2: 0.80, 7: 0.85})
    assert [r.trial for r in rows] == [5, 7, 2]


@pytest.mark.parametrize(
    ("means", "holds"),
    [
        ([0.9, 0.8, 0.7], True),
        ([0.7, 0.8, 0.9], False),  # the search's winner was the lucky one
        ([0.9, None, 0.7], None),  # not every configuration has a value yet
    ],
)
def test_the_ranking_holds_when_the_confirmed_means_keep_the_searchs_order(
    means: list[float | None], holds: bool | None
) -> None:
    rows = [
        Confirmed(trial=i, original=1.0 - i / 10, values=() if m is None else (m,), seeds=1)
        for i, m in enumerate(means)
    ]
    assert ranking_holds(rows) is holds


def test_one_configuration_has_no_ranking_to_hold() -> None:
    assert ranking_holds([Confirmed(trial=0, original=0.9, values=(0.8,), seeds=1)]) is None


def test_the_companion_study_has_a_name_no_user_study_can_have() -> None:
    assert companion_name("lambda-search") == "confirm:lambda-search"
    assert is_companion("confirm:lambda-search") and not is_companion("lambda-search")


def _config(**top: object) -> StudyConfig:
    raw = {
        "name": "c",
        "n_trials": 4,
        "trainer": TINY_TRAINER,
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
        **top,
    }
    return StudyConfig.from_dict(raw, source="test")


def _searched(values: list[float]) -> optuna.Study:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), study_name="c", direction="maximize")
    for i, value in enumerate(values):
        trial = study.ask()
        trial.set_user_attr("config", {"seed": 7, "loss": {"edge_lambda": i / 10}})
        study.tell(trial, value)
    return study


def _jobs(study: optuna.Study) -> list[dict[str, object]]:
    companion = load_companion(study)
    assert companion is not None
    return [t.user_attrs[CONFIRM_ATTR] for t in companion.get_trials(deepcopy=False)]


def test_request_queues_top_k_times_n_jobs_with_the_source_config_and_fresh_seeds() -> None:
    study = _searched([0.5, 0.9, 0.7])
    plan = request(study, _config(), top=2, seeds=3)
    assert (plan.trials, plan.queued, plan.already) == ((1, 2), 6, 0)
    jobs = _jobs(study)
    assert sorted((j["trial"], j["seed"]) for j in jobs) == [(t, s) for t in (1, 2) for s in (8, 9, 10)]
    job = next(j for j in jobs if j["trial"] == 1 and j["seed"] == 8)
    assert job["config"] == {"seed": 8, "loss": {"edge_lambda": 0.1}}


def test_asking_again_with_more_seeds_adds_only_the_missing_jobs() -> None:
    study = _searched([0.5, 0.9])
    request(study, _config(), top=1, seeds=2)
    plan = request(study, _config(), top=1, seeds=3)
    assert (plan.queued, plan.already) == (1, 2)
    assert len(_jobs(study)) == 3


def test_a_job_whose_attempts_all_failed_is_queued_again() -> None:
    study = _searched([0.9])
    request(study, _config(), top=1, seeds=1)
    companion = load_companion(study)
    assert companion is not None
    companion.tell(companion.ask(), state=TrialState.FAIL)
    assert request(study, _config(), top=1, seeds=1).queued == 1


def test_confirmed_reads_the_finished_jobs() -> None:
    study = _searched([0.5, 0.9])
    request(study, _config(), top=2, seeds=2)
    companion = load_companion(study)
    assert companion is not None
    for value in (0.8, 0.6, 0.55):  # jobs run in queue order: trial 1 seeds 8, 9, then trial 0 seed 8
        companion.tell(companion.ask(), value)
    rows = confirmed(study)
    assert [(r.trial, r.values, r.seeds) for r in rows] == [(1, (0.8, 0.6), 2), (0, (0.55,), 2)]


def test_a_study_without_confirmations_has_none() -> None:
    assert confirmed(_searched([0.9])) == []


@pytest.mark.parametrize(("top", "seeds", "option"), [(0, 1, "--top 0"), (1, 0, "--seeds 0"), (51, 1, "--top 51")])
def test_request_refuses_counts_outside_the_allowed_range(top: int, seeds: int, option: str) -> None:
    with pytest.raises(UserError, match=f"{option} is not allowed; allowed: a whole number 1..50"):
        request(_searched([0.9]), _config(), top=top, seeds=seeds)


def test_request_needs_a_completed_trial() -> None:
    with pytest.raises(UserError, match="no completed trial yet"):
        request(_searched([]), _config(), top=1, seeds=1)


@pytest.fixture(params=["sqlite_url", "postgres_url"])
def storage_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(request.param)
    return url


@pytest.mark.slow
def test_two_confirms_at_once_queue_each_job_once(storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ``confirm`` reads which jobs exist and queues the rest; two at once must not both find a
    job missing. The first enqueue of each waits (up to 5 s) until the other has read too: without
    the admission lock both read an empty queue and queue everything twice."""
    from edgesearch.searcher.study.studies import create_study, load_study

    url = storage_url
    create_study(_config(), url)
    searched = optuna.load_study(study_name="c", storage=url)
    for i, value in enumerate([0.5, 0.9, 0.7]):
        trial = searched.ask()
        trial.set_user_attr("config", {"seed": 7, "loss": {"edge_lambda": i / 10}})
        searched.tell(trial, value)

    both_read = threading.Barrier(2)
    waited = threading.local()
    enqueue = optuna.Study.enqueue_trial

    def enqueue_after_the_other_read(study: optuna.Study, *args: Any, **kwargs: Any) -> None:
        if not getattr(waited, "done", False):
            waited.done = True
            with contextlib.suppress(threading.BrokenBarrierError):  # the other cannot read: it waits for the lock
                both_read.wait(timeout=5)
        enqueue(study, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", enqueue_after_the_other_read)
    plans: list[Any] = []

    def confirm() -> None:
        study, config = load_study("c", url)
        plans.append(request(study, config, top=2, seeds=3))

    threads = [threading.Thread(target=confirm) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sorted((p.queued, p.already) for p in plans) == [(0, 6), (6, 0)]
    companion = optuna.load_study(study_name=companion_name("c"), storage=url)
    pairs = [(t.user_attrs[CONFIRM_ATTR]["trial"], t.user_attrs[CONFIRM_ATTR]["seed"]) for t in companion.get_trials()]
    assert sorted(pairs) == [(t, s) for t in (1, 2) for s in (8, 9, 10)]
