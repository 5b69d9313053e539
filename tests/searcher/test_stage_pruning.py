"""Stage-aware pruning: no decision inside a trial's own unstable window, Optuna's decision after it."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from edgesearch.searcher.config import StudyConfig
from edgesearch.searcher.stage_pruning import (
    StageAwareHyperbandPruner,
    StageAwareMedianPruner,
    StageAwareSuccessiveHalvingPruner,
    trial_window,
)
from edgesearch.searcher.study import make_pruner
from edgesearch.trainer.config import OptimConfig
from edgesearch.trainer.schedule import unstable_epochs
from tests.helpers import TINY_TRAINER

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    ("freeze", "warmup", "window"),
    [
        (0, 0, 0),  # trains everything from the start, no ramp: every epoch counts
        (0, 2, 2),  # only the ramp
        (3, 0, 4),  # stage 1, then one settling epoch after the encoder joins
        (3, 1, 5),  # stage 1, stage 2's warmup, one settling epoch
        (1, 1, 3),
    ],
)
def test_the_unstable_window_is_stage_1_the_warmup_after_it_and_one_settling_epoch(
    freeze: int, warmup: int, window: int
) -> None:
    assert unstable_epochs(OptimConfig(freeze_epochs=freeze, warmup_epochs=warmup)) == window


def _study(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    return optuna.create_study(direction="maximize", pruner=pruner)


def _finish_good_trials(study: optuna.Study, n: int, epochs: int = 6) -> None:
    for _ in range(n):
        trial = study.ask()
        for step in range(1, epochs + 1):
            trial.report(0.9, step)
            trial.should_prune()
        study.tell(trial, 0.9)


def _decisions(study: optuna.Study, optim: dict[str, Any] | None, epochs: int = 6) -> list[bool]:
    """should_prune after each epoch of a trial that reports 0.1 throughout (never stopped early here)."""
    trial = study.ask()
    if optim is not None:
        trial.set_user_attr("config", {"optim": optim})
    decisions = []
    for step in range(1, epochs + 1):
        trial.report(0.1, step)
        decisions.append(trial.should_prune())
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return decisions


@pytest.mark.parametrize(
    ("optim", "first_pruned_epoch"),
    [
        (None, 1),  # no stored config: no window
        ({"freeze_epochs": 0, "warmup_epochs": 0}, 1),
        ({"freeze_epochs": 0, "warmup_epochs": 2}, 3),
        ({"freeze_epochs": 2, "warmup_epochs": 1}, 5),
    ],
)
def test_the_median_pruner_decides_only_from_the_first_epoch_after_the_window(
    optim: dict[str, Any] | None, first_pruned_epoch: int
) -> None:
    study = _study(StageAwareMedianPruner(n_startup_trials=0, n_warmup_steps=0))
    _finish_good_trials(study, 2)
    decisions = _decisions(study, optim)
    assert decisions == [epoch >= first_pruned_epoch for epoch in range(1, 7)]


def test_successive_halving_judges_the_rungs_passed_inside_the_window_at_its_first_step_after_it() -> None:
    # Rung 0 is at epoch 1: the lagging trial reaches it inside its window (2 epochs), and is judged
    # at epoch 3 with the value it has then.
    study = _study(StageAwareSuccessiveHalvingPruner(min_resource=1, reduction_factor=2))
    _finish_good_trials(study, 3)
    decisions = _decisions(study, {"freeze_epochs": 0, "warmup_epochs": 2})
    assert decisions[:3] == [False, False, True]  # a pruned trial stops there


def test_hyperband_stays_a_hyperband_pruner_for_optunas_bracket_logic() -> None:
    config = StudyConfig.from_dict(
        {
            "name": "hb",
            "n_trials": 4,
            "pruner": {"kind": "hyperband", "min_resource": 1, "max_resource": 6},
            "trainer": TINY_TRAINER,
            "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
        },
        source="test",
    )
    pruner = make_pruner(config)
    assert isinstance(pruner, StageAwareHyperbandPruner)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)  # what optuna.pruners._filter_study checks


@pytest.mark.parametrize("kind", ["median", "successive_halving"])
def test_every_pruner_kind_of_a_study_is_stage_aware(kind: str) -> None:
    config = StudyConfig.from_dict(
        {
            "name": "p",
            "n_trials": 4,
            "pruner": {"kind": kind},
            "trainer": TINY_TRAINER,
            "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
        },
        source="test",
    )
    expected = {"median": StageAwareMedianPruner, "successive_halving": StageAwareSuccessiveHalvingPruner}[kind]
    assert isinstance(make_pruner(config), expected)


def test_the_window_is_read_from_the_resolved_config_the_trial_stored() -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("config", {"optim": {"freeze_epochs": 3, "warmup_epochs": 1}})
    assert trial_window(study.trials[0]) == 5
    other = study.ask()
    assert trial_window(study.trials[1]) == 0  # nothing stored
    study.tell(trial, 0.5)
    study.tell(other, 0.5)
