"""How far a study and its running trials have got, and how long they may still take, from its stored trials.

Read from what the storage already holds, so that no worker writes anything more for it: a trial's
start time, its reported values (one per epoch; a study of two objectives stores an ``epochs_done``
count instead) and the epochs its resolved config trains. Times are Optuna's, naive local time, so
``now`` is too. Pure functions of trials and a time: ``study show`` and the worker's bar call them
with ``datetime.now()``, tests with made-up trials and times.

A study's ETA is the work left divided among the workers running now:

- ``mean``: the mean duration of its finished (COMPLETE and PRUNED) trials, pruned ones included
  because the trials still to come will be pruned as often;
- each running trial still needs its own ETA (epochs left x its seconds per epoch), or before its
  first epoch ``mean`` less the time it has run (at least 0);
- each trial not started yet (``n_trials`` less the finished and running ones) needs ``mean``;
- ETA = that sum / the number of running trials (one per worker), and never less than the longest
  running trial's own remaining time.

None before any trial finished (nothing to measure by) and while no worker runs one (nobody to do the work).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from optuna.trial import TrialState

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["EPOCHS_DONE_ATTR", "RunningTrial", "epochs_done", "running_trial", "study_eta"]

EPOCHS_DONE_ATTR = "epochs_done"
"""User attribute: epochs done so far by a trial that reports no values (two objectives, a confirmation)."""


def epochs_done(trial: FrozenTrial) -> int:
    """Epochs a trial has done, live or finished: its reported steps, or its stored count or history."""
    history = trial.user_attrs.get("history") or []
    return max(len(trial.intermediate_values), int(trial.user_attrs.get(EPOCHS_DONE_ATTR, 0)), len(history))


_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class RunningTrial:
    """Where a RUNNING trial stands: what ``study show`` prints for it."""

    number: int
    elapsed_s: float
    """Seconds since it started (0 when its start lies ahead of ``now``: clocks of two machines)."""
    epoch: int | None
    """The last epoch it finished; None before its first."""
    epochs: int | None
    """The epochs its resolved config trains; None when the config is not stored yet."""
    latest: float | None
    """The value it reported at ``epoch``; None for a trial that reports none (two objectives)."""
    seconds_per_epoch: float | None
    """Seconds since its start / epochs trained since then (a resumed retry counts its own epochs only);
    the time to build the data and the model is spread over them. None before its first epoch."""

    @property
    def eta_s(self) -> float | None:
        """Epochs left x seconds per epoch; None while either is unknown."""
        if self.seconds_per_epoch is None or self.epoch is None or self.epochs is None:
            return None
        return max(self.epochs - self.epoch, 0) * self.seconds_per_epoch


def _elapsed(trial: FrozenTrial, now: datetime) -> float:
    if trial.datetime_start is None:
        return 0.0
    return max((now - trial.datetime_start).total_seconds(), 0.0)


def _configured_epochs(trial: FrozenTrial) -> int | None:
    config = trial.user_attrs.get("config")
    epochs = config.get("epochs") if isinstance(config, dict) else None
    return epochs if isinstance(epochs, int) else None


def running_trial(trial: FrozenTrial, now: datetime) -> RunningTrial:
    """What ``trial`` (RUNNING) has done by ``now``: its reported values, else its ``epochs_done`` count."""
    elapsed = _elapsed(trial, now)
    epoch: int | None = None
    latest: float | None = None
    trained = 0
    if trial.intermediate_values:
        # A retry does not inherit the values of the trial it retries: these are its own epochs.
        epoch = max(trial.intermediate_values)
        latest, trained = trial.intermediate_values[epoch], len(trial.intermediate_values)
    else:
        done = trial.user_attrs.get(EPOCHS_DONE_ATTR)
        if isinstance(done, int) and done > 0:
            resumed = trial.user_attrs.get("resumed_from_epoch", 0)
            epoch, trained = done, done - (resumed if isinstance(resumed, int) else 0)
    per_epoch = elapsed / trained if trained > 0 else None
    return RunningTrial(trial.number, elapsed, epoch, _configured_epochs(trial), latest, per_epoch)


def study_eta(trials: Sequence[FrozenTrial], n_trials: int, now: datetime) -> float | None:
    """Seconds until the study holds ``n_trials`` finished trials, as the module docstring computes it.

    0 once it does; None before any trial finished or while none runs.
    """
    finished = [t for t in trials if t.state in _FINISHED]
    if len(finished) >= n_trials:
        return 0.0
    durations = [t.duration.total_seconds() for t in finished if t.duration is not None]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if not durations or not running:
        return None
    mean = statistics.fmean(durations)
    left: list[float] = []
    for trial in running:
        own = running_trial(trial, now).eta_s
        left.append(own if own is not None else max(mean - _elapsed(trial, now), 0.0))
    not_started = max(n_trials - len(finished) - len(running), 0)
    return max((sum(left) + not_started * mean) / len(running), max(left))
