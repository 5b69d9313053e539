"""Stage-aware pruning: no decision inside a trial's own unstable window, Optuna's decision after it."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.pruning import (
    StageAwareHyperbandPruner,
    StageAwareMedianPruner,
    StageAwareSuccessiveHalvingPruner,
    trial_window,
)
from edgesearch.searcher.study.studies import make_pruner
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


@pytest.mark.parametrize("kind", ["median", "percentile", "successive_halving"])
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
    expected = {
        "median": StageAwareMedianPruner,
        "percentile": StageAwareMedianPruner,
        "successive_halving": StageAwareSuccessiveHalvingPruner,
    }[kind]
    pruner = make_pruner(config)
    assert isinstance(pruner, expected)
    if isinstance(pruner, StageAwareMedianPruner):
        assert pruner.percentile == {"median": 50.0, "percentile": 10.0}[kind]  # the percentile kind's default


def test_the_window_is_read_from_the_resolved_config_the_trial_stored() -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("config", {"optim": {"freeze_epochs": 3, "warmup_epochs": 1}})
    assert trial_window(study.trials[0]) == 5
    other = study.ask()
    assert trial_window(study.trials[1]) == 0  # nothing stored
    study.tell(trial, 0.5)
    study.tell(other, 0.5)


def _complete(study: optuna.Study, optim: dict[str, Any], values: list[float]) -> None:
    trial = study.ask()
    trial.set_user_attr("config", {"optim": optim})
    for step, value in enumerate(values, start=1):
        trial.report(value, step)
    study.tell(trial, max(values))


def _judged_at(study: optuna.Study, optim: dict[str, Any], values: list[float]) -> bool:
    """should_prune at the last of ``values`` for a trial with ``optim``'s window."""
    trial = study.ask()
    trial.set_user_attr("config", {"optim": optim})
    decision = False
    for step, value in enumerate(values, start=1):
        trial.report(value, step)
        decision = trial.should_prune()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return decision


NO_WINDOW = {"freeze_epochs": 0, "warmup_epochs": 0}
LONG_WINDOW = {"freeze_epochs": 3, "warmup_epochs": 0}  # window 4: stage 1 and a settling epoch


def test_the_median_compares_only_with_peers_past_their_own_window_at_that_epoch() -> None:
    # At epoch 2 two peers are still in their frozen stage (0.1) and one is past its window (0.9).
    # Counting every peer the median would be 0.1 and a 0.5 trial would run on; against the one
    # comparable peer it is below the median.
    study = _study(StageAwareMedianPruner(n_startup_trials=0))
    for _ in range(2):
        _complete(study, LONG_WINDOW, [0.1, 0.1, 0.1, 0.1, 0.9, 0.9])
    _complete(study, NO_WINDOW, [0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert _judged_at(study, NO_WINDOW, [0.5, 0.5]) is True


def test_without_a_peer_past_its_window_at_that_epoch_the_trial_runs_on() -> None:
    study = _study(StageAwareMedianPruner(n_startup_trials=0))
    for _ in range(3):
        _complete(study, LONG_WINDOW, [0.1, 0.1, 0.1, 0.1, 0.9, 0.9])
    assert _judged_at(study, NO_WINDOW, [0.05, 0.05]) is False  # at epoch 2 nobody is comparable yet
    assert _judged_at(study, NO_WINDOW, [0.05] * 5) is True  # at epoch 5 all three are


def test_a_value_inside_the_window_does_not_save_a_trial_from_the_median() -> None:
    # Optuna's own median pruner keeps the best value of all epochs: a high stage-1 number would
    # keep this trial forever. Only the epochs after the window count.
    study = _study(StageAwareMedianPruner(n_startup_trials=0))
    _complete(study, NO_WINDOW, [0.8] * 6)
    window_3 = {"freeze_epochs": 1, "warmup_epochs": 1}
    assert _judged_at(study, window_3, [0.95, 0.95, 0.95, 0.5]) is True


@pytest.mark.parametrize(("startup", "pruned"), [(2, False), (1, True)])
def test_the_median_waits_for_its_start_up_trials(startup: int, pruned: bool) -> None:
    study = _study(StageAwareMedianPruner(n_startup_trials=startup))
    _complete(study, NO_WINDOW, [0.9] * 3)
    assert _judged_at(study, NO_WINDOW, [0.1, 0.1]) is pruned


@pytest.mark.parametrize(("interval", "judged"), [(1, [True, True, True]), (2, [True, False, True])])
def test_the_median_judges_every_interval_steps_from_the_first_epoch_after_the_window(
    interval: int, judged: list[bool]
) -> None:
    study = _study(StageAwareMedianPruner(n_startup_trials=0, interval_steps=interval))
    _complete(study, NO_WINDOW, [0.9] * 6)
    window_2 = {"freeze_epochs": 0, "warmup_epochs": 2}
    assert [_judged_at(study, window_2, [0.1] * epochs) for epochs in (3, 4, 5)] == judged


@pytest.mark.parametrize(
    ("percentile", "pruned"),
    # Peers at epoch 2: 0.2, 0.4, 0.6, 0.8. The 25th percentile is rank 0.75: 0.2 + 0.75 x 0.2 = 0.35; the
    # median 0.5; the 10th percentile rank 0.3: 0.26. A trial at 0.3 is below the first two only.
    [(50.0, True), (25.0, True), (10.0, False)],
)
def test_the_percentile_rule_prunes_only_below_that_percentile_of_the_peers(percentile: float, pruned: bool) -> None:
    study = _study(StageAwareMedianPruner(n_startup_trials=0, percentile=percentile))
    for value in (0.2, 0.4, 0.6, 0.8):
        _complete(study, NO_WINDOW, [value] * 3)
    assert _judged_at(study, NO_WINDOW, [0.3, 0.3]) is pruned


@pytest.mark.parametrize("q", [1.0, 10.0, 25.0, 50.0, 62.5, 99.0])
@pytest.mark.parametrize("values", [[0.7], [0.3, 0.9], [0.5, 0.1, 0.9, 0.4, 0.45], [0.2] * 4 + [0.8]])
def test_the_percentile_is_numpys_linear_one(q: float, values: list[float]) -> None:
    import numpy as np

    from edgesearch.searcher.study.pruning import _percentile

    assert _percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_the_median_refuses_settings_optuna_would_refuse() -> None:
    with pytest.raises(ValueError, match="interval_steps must be >= 1"):
        StageAwareMedianPruner(interval_steps=0)
    with pytest.raises(ValueError, match="percentile must be in"):
        StageAwareMedianPruner(percentile=100.0)


def test_the_window_of_a_pretrained_trial_follows_the_schedule_defaults_of_its_weights() -> None:
    from edgesearch.searcher.study.space import sample
    from edgesearch.trainer.config import PRETRAINED_SCHEDULE, SCRATCH_SCHEDULE

    config = StudyConfig.from_dict(
        {
            "name": "weights",
            "n_trials": 2,
            "trainer": {"model": {"encoder": "mobilenet_v2"}},
            "space": {"model.encoder_weights": {"choices": [None, "packaged"]}},
        },
        source="test",
    )
    study = optuna.create_study()
    windows = {}
    for weights in (None, "packaged"):
        study.enqueue_trial({"model.encoder_weights": weights})
        trial = study.ask()
        train_config = sample(trial, config.space, config.base_config)
        trial.set_user_attr("config", train_config.model_dump(mode="json"))  # as the worker stores it
        windows[weights] = trial_window(study.trials[-1])
        study.tell(trial, 0.5)
    assert windows == {
        None: unstable_epochs(OptimConfig(**SCRATCH_SCHEDULE)),
        "packaged": unstable_epochs(OptimConfig(**PRETRAINED_SCHEDULE)),
    }
    assert windows["packaged"] > windows[None]
