"""Pruning that knows the schedule: no decision inside a trial's own unstable window.

Why: a trial's IoU says little while its learning rate ramps up, while its encoder is frozen, and
for a while after the encoder joins (the IoU dips, then recovers). Those epochs differ per trial
when the space searches ``optim.freeze_epochs`` or ``optim.warmup_epochs``, so no single
``n_warmup_steps`` fits them all: a slow starter with a long frozen stage was pruned for where it
stood in its stage 1. The pruners here are Optuna's, asked only after the trial's own window:
:func:`~edgesearch.trainer.schedule.unstable_epochs` of its resolved config (stored as the
``config`` user attribute before training starts).

Optuna's successive-halving and hyperband pruners catch up on the rungs a trial passed inside its
window at the first step they are asked about, so a skipped rung is judged then, with the value of
that step.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

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
    config: Any = trial.user_attrs.get("config")
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


class StageAwareMedianPruner(_StageAware, optuna.pruners.MedianPruner):
    """``MedianPruner`` that leaves each trial's unstable window alone."""


class StageAwareSuccessiveHalvingPruner(_StageAware, optuna.pruners.SuccessiveHalvingPruner):
    """``SuccessiveHalvingPruner`` that leaves each trial's unstable window alone."""


class StageAwareHyperbandPruner(_StageAware, optuna.pruners.HyperbandPruner):
    """``HyperbandPruner`` that leaves each trial's unstable window alone."""
