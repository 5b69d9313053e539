"""Samplers whose random stream belongs to the trial, not to the worker that runs it.

A worker started by hand, by a scheduler or by the local fan-out knows nothing of the others, so
no worker-side number can keep two of them from drawing the same stream. The trial number can:
the storage hands each number out once. Trial ``n`` of a study seeded ``s`` draws from a sampler
seeded ``trial_seed(s, n)``, whichever worker and machine it runs on, so no two trials share a stream
and a study is reproducible from its seed (up to the order in which trials finish, which model-based
samplers such as TPE read).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial, TrialState

__all__ = ["PerTrialSampler", "WorkerGridSampler", "trial_seed"]


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s sampler in a study seeded ``seed``: a 32-bit word of numpy's
    ``SeedSequence([seed, number])``, whose streams are independent for distinct pairs (``seed + number``
    would give trial 1 of seed 0 the stream of trial 0 of seed 1)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class PerTrialSampler(BaseSampler):
    """Delegates each trial to a fresh sampler ``make(trial_seed(seed, trial.number))``.

    Safe for Optuna's stateless samplers (random, TPE) and for CMA-ES, which keeps its state in the
    trials' system attributes. Not for the grid sampler: its shuffled grid must be the same in every
    worker (it assigns grid point ``n`` to trial ``n``), so it keeps the study's seed.
    """

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self._make = make
        self._seed = seed
        self._number: int | None = None
        self._current: BaseSampler | None = None

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        if self._current is None or self._number != trial.number:
            # One trial at a time per worker: only the running trial's sampler is kept.
            self._current = self._make(trial_seed(self._seed, trial.number))
            self._number = trial.number
        return self._current

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        if trial.number == self._number and self._current is not None:
            self._current.after_trial(study, trial, state, values)
        else:  # another trial's end (told by this study object): the running trial keeps its stream
            self._make(trial_seed(self._seed, trial.number)).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to reseed: every trial's stream is fixed by the study's seed and its number."""


class WorkerGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` once the grid is covered.

    That call only works inside ``study.optimize()``, which a worker does not run (it raises a
    RuntimeError at the tell of the last grid point); a worker stops at ``n_trials`` instead.
    """

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """Nothing: the study's ``n_trials`` ends the search, not the sampler."""
