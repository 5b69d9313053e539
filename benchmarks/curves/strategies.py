"""The searches compared on the table: what a user would otherwise run, and edgesearch's own.

Each strategy makes a fresh in-memory study for one replay (sampler seeded by the replay), except "one epoch,
then the top K", which is a schedule rather than a pruner: rounds of :data:`FIRST` random configurations
trained one epoch each, then the :data:`TOP_K` best of the round trained to the end, round after round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna

from . import configs

__all__ = ["FIRST", "STRATEGIES", "TOP_K", "make_study", "study_config"]

FIRST = 24
TOP_K = 3

EDGESEARCH_DEFAULT: dict[str, Any] = {}
"""edgesearch's defaults: the study file says no sampler and no pruner (``StudyConfig``'s defaults)."""

STRATEGIES: dict[str, dict[str, Any]] = {
    "random, no pruning": {"sampler": {"kind": "random"}, "pruner": {"kind": "none"}},
    "Optuna defaults (TPE + MedianPruner)": {"optuna": ("tpe", "median")},
    "TPE + Optuna's Hyperband": {"optuna": ("tpe", "hyperband")},
    "one epoch, then the top K": {"top_k": True},
    "edgesearch default": EDGESEARCH_DEFAULT,
}


CANDIDATES: dict[str, dict[str, Any]] = {
    "median, 5 start-up (the previous default)": {"pruner": {"kind": "median"}},
    "median, 10 warm-up epochs": {"pruner": {"kind": "median", "n_warmup_steps": 10}},
    "median, 15 warm-up epochs": {"pruner": {"kind": "median", "n_warmup_steps": 15}},
    "percentile 25, 10 warm-up epochs": {"pruner": {"kind": "percentile", "percentile": 25}},
    "percentile 10, no warm-up": {"pruner": {"kind": "percentile", "percentile": 10, "n_warmup_steps": 0}},
    "hyperband (r=1, eta=3)": {"pruner": {"kind": "hyperband", "min_resource": 1, "reduction_factor": 3}},
    "random sampler, the default pruner": {"sampler": {"kind": "random"}},
    "TPE, no pruning": {"pruner": {"kind": "none"}},
}
"""edgesearch settings tried as its default (``search.py --candidates``): the stage-aware pruners' settings and
the sampler; each is a study file's ``sampler``/``pruner`` blocks."""


def study_config(name: str, settings: Mapping[str, Any], *, seed: int) -> Any:
    """The StudyConfig of a replayed study: the table's trainer and space, the strategy's sampler and pruner."""
    from edgesearch.searcher.study.config import StudyConfig

    trainer = configs.trainer_config(configs.BASE, root="", seed=0)
    trainer["data"] = {k: v for k, v in trainer["data"].items() if k != "root"}  # never read: no data to check
    raw: dict[str, Any] = {"name": name, "n_trials": 100_000, "trainer": trainer, "space": configs.SPACE}
    sampler = dict(settings.get("sampler", {"kind": "tpe"}))
    raw["sampler"] = {**sampler, "seed": seed}
    if "pruner" in settings:
        raw["pruner"] = settings["pruner"]
    return StudyConfig.from_dict(raw, source=name)


_OPTUNA_PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}


def make_study(name: str, settings: Mapping[str, Any], config: Any, *, seed: int) -> optuna.Study:
    """An in-memory study with the strategy's sampler and pruner: Optuna's own classes at their defaults for
    ``optuna`` strategies, else edgesearch's ``make_sampler``/``make_pruner`` of ``config``."""
    from edgesearch.searcher.study.studies import make_pruner, make_sampler

    if "optuna" in settings:
        sampler_kind, pruner_kind = settings["optuna"]
        sampler: optuna.samplers.BaseSampler = (
            optuna.samplers.TPESampler(seed=seed) if sampler_kind == "tpe" else optuna.samplers.RandomSampler(seed=seed)
        )
        pruner = _OPTUNA_PRUNERS[pruner_kind]()
    else:
        sampler, pruner = make_sampler(config), make_pruner(config)
    return optuna.create_study(study_name=name, direction="maximize", sampler=sampler, pruner=pruner)
