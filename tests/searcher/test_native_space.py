"""Studies over the native-resolution settings: ``data.patch_size``, ``data.scale`` and
``data.foreground_fraction`` are space fields like any other, in one- and two-objective studies, with
the stage-aware median pruner, and in ``study confirm``'s re-trainings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from edgesearch.cli import app
from edgesearch.errors import ConfigError
from edgesearch.searcher.run.worker import run_worker
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.confirm import CONFIRM_ATTR, companion_name
from edgesearch.searcher.study.studies import create_study
from tests.helpers import tiny_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

NATIVE: dict[str, Any] = {
    "trainer": {
        "data": {"image_size": None, "patch_size": 32, "synthetic": {"n_images": 8, "size": 72}},
        "epochs": 2,
    },
    "space": {
        "data.patch_size": {"choices": [32, 64]},
        "data.scale": {"choices": [0.5, 1.0]},
        "data.foreground_fraction": {"low": 0.0, "high": 1.0},
    },
}


def _run(url: str, runs: Path, name: str, **extra: Any) -> list[optuna.trial.FrozenTrial]:
    config = StudyConfig.from_dict(tiny_study(name, **{**NATIVE, **extra}), source="test")
    create_study(config, url)
    run_worker(name, url, runs_dir=runs, poll_seconds=0.1)
    return optuna.load_study(study_name=name, storage=url).trials


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        {"pruner": {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0}},
        {"metric": ["val_iou", "val_boundary_iou"]},
    ],
    ids=["median-pruner", "two-objectives"],
)
def test_patch_settings_are_searched_and_each_trial_trains_with_its_own(
    tmp_path: Path, sqlite_url: str, extra: dict[str, Any]
) -> None:
    trials = _run(sqlite_url, tmp_path / "runs", "native", **extra)
    # the median pruner may stop a trial after its first epoch; it reported that epoch first
    assert trials[0].state == TrialState.COMPLETE
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for trial in trials:
        data = trial.user_attrs["config"]["data"]
        assert data["image_size"] is None
        assert (data["patch_size"], data["scale"]) == (trial.params["data.patch_size"], trial.params["data.scale"])
        assert data["foreground_fraction"] == trial.params["data.foreground_fraction"]
        values = trial.values if trial.state == TrialState.COMPLETE else list(trial.intermediate_values.values())
        assert values and all(0.0 <= v <= 1.0 for v in values)


@pytest.mark.slow
def test_a_confirmation_retrains_the_trials_patch_settings(tmp_path: Path, sqlite_url: str) -> None:
    runs = tmp_path / "runs"
    trials = _run(sqlite_url, runs, "conf")
    best = max(trials, key=lambda t: (t.value or 0.0, -t.number))
    queued = CliRunner().invoke(
        app, ["study", "confirm", "conf", "--top", "1", "--seeds", "1", "--storage", sqlite_url]
    )
    assert queued.exit_code == 0, queued.output
    run_worker("conf", sqlite_url, runs_dir=runs, poll_seconds=0.1)
    (job,) = optuna.load_study(study_name=companion_name("conf"), storage=sqlite_url).trials
    assert job.state == TrialState.COMPLETE and job.user_attrs[CONFIRM_ATTR]["trial"] == best.number
    data = job.user_attrs["config"]["data"]
    assert (data["patch_size"], data["scale"], data["foreground_fraction"]) == (
        best.params["data.patch_size"],
        best.params["data.scale"],
        best.params["data.foreground_fraction"],
    )


def test_a_patch_field_in_the_space_of_a_resizing_trainer_is_refused() -> None:
    raw = tiny_study("mixed", space={"data.patch_size": {"choices": [32, 64]}})  # TINY_TRAINER sets image_size
    with pytest.raises(ConfigError, match="exclude each other"):
        StudyConfig.from_dict(raw, source="study.yaml")
