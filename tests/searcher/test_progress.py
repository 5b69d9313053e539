"""Where running trials stand, a study's ETA and the worker's epoch lines, from made-up trials, times and
epochs computed by hand."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from edgesearch.cli.study_progress import EpochLines, StudyProgress, describe_eta
from edgesearch.searcher.study.progress import running_trial, study_eta
from edgesearch.searcher.study.studies import TrialCounts
from tests.helpers import epoch_record

NOW = datetime(2025, 1, 1, 12, 0, 0)


def _trial(
    number: int,
    state: TrialState,
    *,
    started_s_ago: float,
    duration_s: float | None = None,
    reported: dict[int, float] | None = None,
    epochs: int | None = 10,
    **user_attrs: Any,
) -> FrozenTrial:
    """A trial that started ``started_s_ago`` seconds before NOW (and took ``duration_s``, when finished)."""
    start = NOW - timedelta(seconds=started_s_ago)
    if epochs is not None:
        user_attrs["config"] = {"epochs": epochs}
    return FrozenTrial(
        number=number,
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        datetime_start=start,
        datetime_complete=start + timedelta(seconds=duration_s) if duration_s is not None else None,
        params={},
        distributions={},
        user_attrs=user_attrs,
        system_attrs={},
        intermediate_values=reported or {},
        trial_id=number,
    )


def test_a_running_trial_has_its_last_reported_epoch_and_value_and_elapsed_over_epochs_per_epoch() -> None:
    trial = _trial(2, TrialState.RUNNING, started_s_ago=300, reported={1: 0.5, 2: 0.6, 3: 0.65})
    r = running_trial(trial, NOW)
    # 300 s over 3 epochs: 100 s each; 7 epochs of 10 left: 700 s
    assert (r.number, r.elapsed_s, r.epoch, r.epochs, r.latest) == (2, 300.0, 3, 10, 0.65)
    assert r.seconds_per_epoch == 100.0 and r.eta_s == 700.0


def test_a_resumed_retry_counts_only_its_own_epochs() -> None:
    # A retry that resumed after epoch 2 reports epochs 3 and 4 itself: 200 s / 2 epochs.
    r = running_trial(_trial(5, TrialState.RUNNING, started_s_ago=200, reported={3: 0.6, 4: 0.7}), NOW)
    assert (r.epoch, r.latest, r.seconds_per_epoch, r.eta_s) == (4, 0.7, 100.0, 600.0)


def test_a_trial_of_two_objectives_is_read_from_its_epoch_count() -> None:
    # epochs_done 4 after resuming from epoch 2: 2 epochs in 300 s, 150 s each; 6 left: 900 s.
    trial = _trial(1, TrialState.RUNNING, started_s_ago=300, epochs_done=4, resumed_from_epoch=2)
    r = running_trial(trial, NOW)
    assert (r.epoch, r.latest, r.seconds_per_epoch, r.eta_s) == (4, None, 150.0, 900.0)


def test_before_its_first_epoch_a_trial_has_no_pace_and_no_eta() -> None:
    r = running_trial(_trial(0, TrialState.RUNNING, started_s_ago=30, epochs=None), NOW)
    assert (r.elapsed_s, r.epoch, r.epochs, r.seconds_per_epoch, r.eta_s) == (30.0, None, None, None, None)


def test_a_start_ahead_of_now_reads_as_just_started() -> None:
    # Another machine's clock runs ahead of this one.
    r = running_trial(_trial(0, TrialState.RUNNING, started_s_ago=-20, reported={1: 0.4}), NOW)
    assert (r.elapsed_s, r.seconds_per_epoch) == (0.0, 0.0)


def _mid_study() -> list[FrozenTrial]:
    return [
        _trial(0, TrialState.COMPLETE, started_s_ago=2000, duration_s=600),
        _trial(1, TrialState.PRUNED, started_s_ago=1000, duration_s=200),
        _trial(2, TrialState.RUNNING, started_s_ago=300, reported={1: 0.5, 2: 0.6, 3: 0.65}),
        _trial(3, TrialState.RUNNING, started_s_ago=100),
        _trial(4, TrialState.FAIL, started_s_ago=900, duration_s=5),
    ]


def test_the_study_eta_shares_the_work_left_among_the_running_trials() -> None:
    # Mean of the finished: (600 + 200) / 2 = 400 s. Trial 2 needs its own ETA, 700 s; trial 3, with no
    # epoch yet, 400 - 100 = 300 s; 6 - 2 finished - 2 running = 2 not started, 400 s each.
    # (700 + 300 + 800) / 2 workers = 900 s, more than the longest running trial's 700 s.
    assert study_eta(_mid_study(), 6, NOW) == 900.0


def test_the_study_eta_is_never_less_than_its_longest_running_trial() -> None:
    # None left to start: (700 + 300) / 2 = 500 s, but trial 2 alone needs 700 s.
    assert study_eta(_mid_study(), 4, NOW) == 700.0


def test_a_trial_running_past_the_mean_before_its_first_epoch_needs_no_more_than_zero() -> None:
    trials = [
        _trial(0, TrialState.COMPLETE, started_s_ago=2000, duration_s=100),
        _trial(1, TrialState.RUNNING, started_s_ago=150),
    ]
    # max(100 - 150, 0) = 0 for the running trial, 1 trial not started: 100 s / 1 worker.
    assert study_eta(trials, 3, NOW) == 100.0


@pytest.mark.parametrize(
    ("trials", "n_trials", "eta"),
    [
        pytest.param([_trial(0, TrialState.RUNNING, started_s_ago=10)], 3, None, id="nothing-finished"),
        pytest.param(
            [_trial(0, TrialState.COMPLETE, started_s_ago=100, duration_s=50)], 3, None, id="no-worker-running"
        ),
        pytest.param([_trial(0, TrialState.COMPLETE, started_s_ago=100, duration_s=50)], 1, 0.0, id="full"),
    ],
)
def test_the_study_eta_is_none_without_a_finished_or_a_running_trial_and_zero_when_full(
    trials: list[FrozenTrial], n_trials: int, eta: float | None
) -> None:
    assert study_eta(trials, n_trials, NOW) == eta


def test_the_workers_epoch_lines_give_seconds_per_epoch_and_the_trials_eta() -> None:
    console = Console(file=io.StringIO(), width=200)
    with StudyProgress("s", 3, console=console, live=False) as progress:
        lines = EpochLines(progress, "val_iou")
        lines.label = "trial 7"
        lines.on_train_start(epochs=4, start_epoch=0, steps_per_epoch=2)
        for epoch, seconds in ((1, 12.0), (2, 8.0), (3, 10.0), (4, 10.0)):
            lines.on_epoch_end(epoch_record(epoch, seconds))
    # ETA: epochs left x the mean epoch so far: 3 x 12 = 36 s; 2 x 10 = 20 s; 1 x 10 = 10 s; none after the last.
    assert console.file.getvalue().splitlines() == [
        "trial 7 epoch 1/4: val_iou 0.5000, boundary IoU 0.2000, loss 0.3000, 12.0 s/epoch, ETA 36s",
        "trial 7 epoch 2/4: val_iou 0.5000, boundary IoU 0.2000, loss 0.3000, 8.0 s/epoch, ETA 20s",
        "trial 7 epoch 3/4: val_iou 0.5000, boundary IoU 0.2000, loss 0.3000, 10.0 s/epoch, ETA 10s",
        "trial 7 epoch 4/4: val_iou 0.5000, boundary IoU 0.2000, loss 0.3000, 10.0 s/epoch",
    ]


def test_a_resumed_trials_eta_counts_the_epochs_it_has_left() -> None:
    console = Console(file=io.StringIO(), width=200)
    with StudyProgress("s", 3, console=console, live=False) as progress:
        lines = EpochLines(progress, "val_iou")
        lines.on_train_start(epochs=10, start_epoch=6, steps_per_epoch=2)
        lines.on_epoch_end(epoch_record(7, 30.0))
    assert console.file.getvalue().endswith(", 30.0 s/epoch, ETA 1m 30s\n")  # 3 epochs left x 30 s


@pytest.mark.parametrize(
    ("counts", "text"),
    [
        (TrialCounts(complete=2, running=1, eta_s=750.0), "ETA 12m 30s"),
        (TrialCounts(running=2), "ETA -: no trial has finished yet to time the others by"),
        (TrialCounts(complete=1, pruned=1), "ETA -: no worker is running a trial"),
        (TrialCounts(complete=4, pruned=2, eta_s=0.0), "ETA -: the study is full"),
    ],
)
def test_the_study_eta_or_why_there_is_none(counts: TrialCounts, text: str) -> None:
    assert describe_eta(counts, 6) == text


def test_reading_progress_imports_no_torch() -> None:
    # `study show` reads it, and a look at a study must not wait for torch to load.
    probe = (
        "import sys\nfrom edgesearch.searcher.study.progress import running_trial, study_eta\n"
        "from edgesearch.cli.study_progress import describe_eta\n"
        "print(sorted({'torch', 'segmentation_models_pytorch'} & sys.modules.keys()))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
