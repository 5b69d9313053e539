"""Pruning that knows the schedule: no decision inside a trial's own unstable window.

Why: a trial's IoU says little while its learning rate ramps up, while its encoder is frozen, and
for a while after the encoder joins (the IoU dips, then recovers). Those epochs differ per trial
when the space searches ``optim.freeze_epochs`` or ``optim.warmup_epochs``, so no single
``n_warmup_steps`` fits them all: a slow starter with a long frozen stage was pruned for where it
stood in its stage 1. The pruners here are Optuna's, asked only after the trial's own window:
:func:`~edgesearch.trainer.schedule.unstable_epochs` of its resolved config (stored as the
``config`` user attribute before training starts).

The median pruner also compares like with like: at epoch ``s`` a trial's best value since its
window is set against the median, at epoch ``s``, of the complete trials that were themselves past
their window by then. A peer still in its frozen stage at that epoch would pull the median down and
let a poor trial run on (or, read the other way, a trial would be ranked against stage-1 numbers).
Comparing at the same epoch, not the same number of stable epochs, keeps the comparison at equal
compute, which is what the pruner saves.

Optuna's successive-halving and hyperband pruners catch up on the rungs a trial passed inside its
window at the first step they are asked about, so a skipped rung is judged then, with the value of
that step. They rank trials that reached a rung, which are past their window by construction once
the rung lies beyond every window, so they keep Optuna's comparison.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from edgesearch.searcher.storage._optuna.handles import complete_curves
from edgesearch.searcher.storage._optuna.queries import Curve
from edgesearch.trainer.config import OptimConfig
from edgesearch.trainer.schedule import unstable_epochs

__all__ = [
    "StageAwareHyperbandPruner",
    "StageAwareMedianPruner",
    "StageAwareSuccessiveHalvingPruner",
    "trial_window",
]


def trial_window(trial: FrozenTrial) -> int:
    """The last reported step (epoch) inside the trial's unstable window; 0 when it has none or its
    config is not stored (a trial made outside edgesearch)."""
    return config_window(trial.user_attrs.get("config"))


def config_window(config: Any) -> int:
    """:func:`trial_window` from the trial's stored ``config`` user attribute."""
    optim = config.get("optim") if isinstance(config, dict) else None
    if not isinstance(optim, dict):
        return 0
    return unstable_epochs(OptimConfig.model_validate(optim))


class _StageAware(optuna.pruners.BasePruner):
    """The mixin: asks the Optuna pruner it is mixed into only after the trial's unstable window.

    A mixin rather than a wrapper: Optuna treats a study whose pruner *is* a ``HyperbandPruner``
    specially (its samplers see only the trials of the current trial's bracket).
    """

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step <= trial_window(trial):
            return False
        return bool(super().prune(study, trial))  # type: ignore[safe-super]  # mixed before a concrete pruner


class StageAwareMedianPruner(optuna.pruners.BasePruner):
    """Optuna's ``MedianPruner`` rule (``PercentilePruner`` with another ``percentile``), judged only after the
    trial's window and against peers past theirs.

    At each judged epoch ``s`` (after ``n_warmup_steps`` and the trial's own window, every
    ``interval_steps``, once ``n_startup_trials`` trials are complete) the trial is pruned when its
    best value since its window is below the ``percentile``-th percentile (linear interpolation, as
    ``numpy.percentile``; 50 is the median) of ``value at s`` over the complete trials whose window
    ended before ``s``; with fewer than ``n_min_trials`` such peers it runs on.
    Maximising studies only (edgesearch's metrics all are).
    """

    def __init__(
        self,
        *,
        n_startup_trials: int = 5,
        n_warmup_steps: int = 0,
        interval_steps: int = 1,
        n_min_trials: int = 1,
        percentile: float = 50.0,
    ) -> None:
        if not 0.0 < percentile < 100.0:
            raise ValueError(f"percentile must be in (0, 100), got {percentile}")
        self.percentile = percentile
        for name, value, least in (
            ("n_startup_trials", n_startup_trials, 0),
            ("n_warmup_steps", n_warmup_steps, 0),
            ("interval_steps", interval_steps, 1),
            ("n_min_trials", n_min_trials, 1),
        ):
            if value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.interval_steps = interval_steps
        self.n_min_trials = n_min_trials
        self._windows: dict[int, int] = {}

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        window = trial_window(trial)
        if step is None or step <= window or step < self.n_warmup_steps:
            return False
        if (step - max(window + 1, self.n_warmup_steps)) % self.interval_steps:
            return False
        complete = complete_curves(study)
        if not complete or len(complete) < self.n_startup_trials:
            return False
        stable = [v for s, v in trial.intermediate_values.items() if s > window and not math.isnan(v)]
        if not stable:
            return True  # only NaN since the window: nothing will recover it (Optuna prunes these too)
        peers = [
            t.intermediate_values[step]
            for t in complete
            if step in t.intermediate_values and self._window(t) < step and not math.isnan(t.intermediate_values[step])
        ]
        if len(peers) < self.n_min_trials:
            return False
        return max(stable) < _percentile(peers, self.percentile)

    def _window(self, trial: Curve) -> int:
        """The window of a complete trial, worked out once (it validates its config)."""
        window = self._windows.get(trial.number)
        if window is None:
            window = self._windows[trial.number] = config_window(trial.config)
        return window


def _percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` by linear interpolation between the nearest ranks (numpy's
    default): rank ``(n - 1) q / 100`` of the sorted values; ``q = 50`` is the median."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class StageAwareSuccessiveHalvingPruner(_StageAware, optuna.pruners.SuccessiveHalvingPruner):
    """``SuccessiveHalvingPruner`` that leaves each trial's unstable window alone."""


class StageAwareHyperbandPruner(_StageAware, optuna.pruners.HyperbandPruner):
    """``HyperbandPruner`` that leaves each trial's unstable window alone."""
