"""Workers started any way never propose twins, and a seeded study is reproducible from its seed.

Workers started by hand know nothing of each other: each trial's sampler stream comes from the study's
seed and the trial's number (:mod:`edgesearch.searcher.study.sampling`), which the storage hands out once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.sampling import trial_seed
from edgesearch.searcher.study.space import sample
from edgesearch.searcher.study.studies import create_study, load_study
from tests.helpers import tiny_study

# The test asks trials itself, with the worker's heartbeat settings stored in the study.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

SPACES: dict[str, dict[str, Any]] = {
    "random": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}, "loss.kind": {"choices": ["bce", "focal"]}},
    "tpe": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}, "loss.kind": {"choices": ["bce", "focal"]}},
    "cmaes": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}, "optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    "grid": {"loss.edge_lambda": {"choices": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}, "loss.edge_width": {"choices": [1, 2]}},
}


def _create(name: str, url: str, kind: str, n_trials: int) -> None:
    raw = tiny_study(name, n_trials=n_trials, sampler={"kind": kind, "seed": 0})
    raw["space"] = SPACES[kind]
    create_study(StudyConfig.from_dict(raw, source="test"), url)


def _point(trial: optuna.Trial, config: StudyConfig) -> tuple[Any, ...]:
    """The trial's parameters, asked for as a real trial asks (:func:`~edgesearch.searcher.study.space.sample`)."""
    sample(trial, config.space, config.base_config)
    return tuple(sorted(trial.params.items()))


def _ask_in_turn(name: str, url: str, workers: int, n: int) -> list[tuple[Any, ...]]:
    """``workers`` loaded copies of the study (as that many workers would hold) take ``n`` trials in turn."""
    studies = [load_study(name, url) for _ in range(workers)]
    points = []
    for i in range(n):
        study, config = studies[i % workers]
        trial = study.ask()
        points.append(_point(trial, config))
        study.tell(trial, 0.5 + i / 100)
    return points


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def storage_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.mark.parametrize("kind", ["random", "tpe", "cmaes", "grid"])
@pytest.mark.parametrize("workers", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_workers_loaded_alike_propose_distinct_points_and_the_study_repeats_from_its_seed(
    storage_url: str, kind: str, workers: int, tmp_path: Path
) -> None:
    _create("twins", storage_url, kind, n_trials=8)
    points = _ask_in_turn("twins", storage_url, workers, 8)
    assert len(set(points)) == len(points), points
    # The same study asked by one worker: the same points, whichever worker asked for each.
    other = f"sqlite:///{tmp_path}/alone.db"
    _create("twins", other, kind, n_trials=8)
    assert _ask_in_turn("twins", other, 1, 8) == points


def test_trial_seeds_are_distinct_across_studies_and_numbers() -> None:
    # seed + number would give trial 1 of seed 0 the stream of trial 0 of seed 1.
    seeds = {trial_seed(seed, number) for seed in range(20) for number in range(200)}
    assert len(seeds) == 20 * 200
    assert trial_seed(0, 1) == trial_seed(0, 1)
    np.random.RandomState(trial_seed(2**31 - 1, 10**6))  # always a valid numpy seed


def _expected_lambda(number: int, distribution: optuna.distributions.BaseDistribution) -> float:
    """What Optuna's own RandomSampler seeded for trial ``number`` draws, in a study of its own."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=trial_seed(0, number)))
    value: float = study.ask({"loss.edge_lambda": distribution}).params["loss.edge_lambda"]
    return value


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_started_by_hand_run_no_twins(storage_url: str, workers: int, tmp_path: Path) -> None:
    """``edgesearch worker NAME`` typed in ``workers`` terminals at once: every trial's parameters
    differ, and trial n holds what a sampler seeded for trial n draws, whichever worker ran it."""
    n_trials = 2 * workers
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(tiny_study("by-hand", n_trials=n_trials)))
    env = {**os.environ, "EDGESEARCH_STORAGE": storage_url, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "edgesearch"]
    subprocess.run([*cli, "study", "create", str(study_file)], env=env, check=True, capture_output=True)
    procs = [
        subprocess.Popen(
            [*cli, "worker", "by-hand", "--runs-dir", str(tmp_path / "runs")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(workers)
    ]
    outputs = [proc.communicate(timeout=540)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * workers, outputs

    trials = optuna.load_study(study_name="by-hand", storage=storage_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n_trials, outputs
    values = [t.params["loss.edge_lambda"] for t in trials]
    assert len(set(values)) == n_trials, values
    for trial in trials:
        expected = _expected_lambda(trial.number, trial.distributions["loss.edge_lambda"])
        assert trial.params["loss.edge_lambda"] == expected, trial.number


def test_a_worker_covers_a_whole_grid_and_stops_at_n_trials(storage_url: str, tmp_path: Path) -> None:
    """Optuna's grid sampler calls ``study.stop()`` at the tell of the last point, which only works inside
    ``optimize()``; a worker's grid sampler leaves the end to ``n_trials``."""
    from edgesearch.searcher.run.trial import TrialOutcome
    from edgesearch.searcher.run.worker import run_worker

    raw = tiny_study("grid", n_trials=4, sampler={"kind": "grid", "seed": 0})
    raw["space"] = {"loss.edge_width": {"choices": [1, 2]}, "loss.kind": {"choices": ["bce", "focal"]}}
    create_study(StudyConfig.from_dict(raw, source="test"), storage_url)

    def stand_in(trial: optuna.Trial, config: StudyConfig, **_: Any) -> TrialOutcome:
        sample(trial, config.space, config.base_config)
        return TrialOutcome(trial.number, TrialState.COMPLETE, 0.5, 1)

    summary = run_worker("grid", storage_url, runs_dir=tmp_path, trial_runner=stand_in, poll_seconds=0.1)
    assert summary.stopped_because == "study complete"
    trials = optuna.load_study(study_name="grid", storage=storage_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
