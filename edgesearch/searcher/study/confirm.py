"""Confirming a study's best configurations: re-train the top K with N fresh seeds each.

Why: one lucky seed can put a configuration at the top of a search ("once I got 0.9 IoU, but I
couldn't reproduce that"). Re-training the K best configurations with N new seeds turns the search's
winner into a mean, a spread and a worst case, and shows whether the search's ranking survives.

The re-trainings are *jobs*: trials of a companion Optuna study in the same storage, named
``confirm:<study>`` (a name no user study can have, so no command lists it). Each job is enqueued
with the configuration it re-trains (the source trial's resolved TrainConfig), the source trial's
number and its seed, so the study's own workers take jobs like trials: under a heartbeat, retried
from their last checkpoint when a worker dies, never pruned. Jobs are taken before new trials.

The seeds are the source trial's seed plus 1..N: new, reproducible, and a second ``confirm`` with
more seeds only adds the missing ones. The statistics use the fresh seeds only: the original run
was selected for being high, so counting it would bias the mean upward.

Importing this module is cheap (``study list`` uses :func:`is_companion`): Optuna and the trainer
are imported where they are used.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgesearch.errors import UserError

if TYPE_CHECKING:
    import optuna

    from edgesearch.searcher.study.config import StudyConfig

__all__ = [
    "CONFIRM_ATTR",
    "PREFIX",
    "ConfirmPlan",
    "Confirmed",
    "best_confirmed",
    "companion_name",
    "confirmation_job",
    "confirmed",
    "is_companion",
    "load_companion",
    "ranking_holds",
    "request",
    "summarize",
]

PREFIX = "confirm:"
CONFIRM_ATTR = "confirm"
"""A job's user attribute: ``{"trial": source trial number, "seed": int, "config": TrainConfig dict}``."""
MAX_TOP = 50
MAX_SEEDS = 50


def companion_name(name: str) -> str:
    return f"{PREFIX}{name}"


def is_companion(study_name: str) -> bool:
    """Whether ``study_name`` is a study's confirmation jobs (hidden from every listing)."""
    return study_name.startswith(PREFIX)


def confirmation_job(trial: optuna.Trial | optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    """The job a trial of a companion study runs, or None for an ordinary trial."""
    job = trial.user_attrs.get(CONFIRM_ATTR)
    return job if isinstance(job, dict) else None


@dataclass(frozen=True)
class Confirmed:
    """One configuration's re-trainings: its source trial, the search's value and the fresh seeds' values."""

    trial: int
    original: float
    values: tuple[float, ...]
    """Values of the finished re-trainings, in seed order."""
    seeds: int
    """Re-trainings asked for (finished or not)."""

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def sd(self) -> float | None:
        """Sample standard deviation; None below two values."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def min(self) -> float | None:
        return min(self.values) if self.values else None


def summarize(jobs: Sequence[tuple[int, int, float | None]], originals: dict[int, float]) -> list[Confirmed]:
    """Per source trial, from ``(source trial, seed, value or None)`` rows: ordered as the search ranked them.

    A job without a value (waiting, running, failed) counts as asked, not as finished.
    """
    values: dict[int, dict[int, float]] = {}
    asked: dict[int, set[int]] = {}
    for source, seed, value in jobs:
        asked.setdefault(source, set()).add(seed)
        if value is not None and math.isfinite(value):
            values.setdefault(source, {})[seed] = value  # a job's attempts (a retry) finish at most once
    rows = [
        Confirmed(
            trial=source,
            original=originals[source],
            values=tuple(v for _, v in sorted(values.get(source, {}).items())),
            seeds=len(seeds),
        )
        for source, seeds in asked.items()
        if source in originals
    ]
    return sorted(rows, key=lambda c: (-c.original, c.trial))


def ranking_holds(rows: Sequence[Confirmed]) -> bool | None:
    """Whether ranking by the confirmed mean keeps the search's order; None until every row has a mean
    and there are two rows to order."""
    if len(rows) < 2 or any(r.mean is None for r in rows):
        return None
    by_search = [r.trial for r in sorted(rows, key=lambda r: (-r.original, r.trial))]
    by_mean = [r.trial for r in sorted(rows, key=lambda r: (-(r.mean or 0.0), r.trial))]
    return by_search == by_mean


@dataclass(frozen=True)
class ConfirmPlan:
    """What ``study confirm`` queued: the source trials, the seeds, and how many jobs were new."""

    trials: tuple[int, ...]
    seeds: int
    queued: int
    already: int


def _check_counts(top: int, seeds: int) -> None:
    for option, value, most in (("--top", top, MAX_TOP), ("--seeds", seeds, MAX_SEEDS)):
        if not 1 <= value <= most:
            raise UserError(f"{option} {value} is not allowed; allowed: a whole number 1..{most}")


def load_companion(study: optuna.Study, *, create: bool = False) -> optuna.Study | None:
    """The companion study of ``study`` through the same storage (so with its heartbeat and retry
    settings), created when ``create``; None when there is none."""
    import optuna

    from edgesearch.searcher.storage._optuna.handles import study_storage
    from edgesearch.searcher.study.run_folders import RUN_ID_ATTR

    storage = study_storage(study)
    name = companion_name(study.study_name)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        if not create:
            return None
    companion = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    # The jobs' run folders live beside the study's trials, in the study's namespace.
    companion.set_user_attr(RUN_ID_ATTR, study.user_attrs.get(RUN_ID_ATTR))
    return companion


def request(study: optuna.Study, config: StudyConfig, *, top: int, seeds: int) -> ConfirmPlan:
    """Queue the re-trainings of ``study``'s ``top`` best COMPLETE trials with ``seeds`` fresh seeds each.

    UserError: a study of two objectives (no single ranking to confirm), no completed trial, counts
    outside 1..50.
    """
    from optuna.trial import TrialState

    from edgesearch.searcher.storage.reconnecting import admitted
    from edgesearch.trainer.config import MAX_SEED

    _check_counts(top, seeds)
    name = study.study_name
    if config.multi_objective:
        raise UserError(
            f"study {name!r} maximises {' and '.join(config.objectives)} together: confirm re-trains the top "
            "trials of one metric; confirm a study of one metric"
        )
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value) and isinstance(t.user_attrs.get("config"), dict)
    ]
    if not complete:
        raise UserError(f"study {name!r} has no completed trial yet: nothing to confirm")
    best = sorted(complete, key=lambda t: (-float(t.value or 0.0), t.number))[:top]
    companion = load_companion(study, create=True)
    if companion is None:  # create=True always gives one; this keeps the type checker honest
        raise UserError(f"study {name!r}: could not create its confirmation jobs")
    wanted: list[tuple[int, int, dict[str, Any]]] = []
    for trial in best:
        source: dict[str, Any] = trial.user_attrs["config"]
        for i in range(1, seeds + 1):
            seed = (int(source.get("seed", 0)) + i) % (MAX_SEED + 1)
            wanted.append((trial.number, seed, {**source, "seed": seed}))

    def enqueue_missing(locked: bool) -> tuple[int, int]:
        # Read and added to under the companion's admission lock: two `confirm` commands at once
        # would otherwise both find a pair missing and queue it twice (a whole re-training each).
        # A job whose every attempt failed (retries used up) is queued again; one still alive is not.
        existing = {
            (job["trial"], job["seed"])
            for t in companion.get_trials(deepcopy=False)
            if (job := confirmation_job(t)) is not None and t.state != TrialState.FAIL
        }
        queued = already = 0
        for number, seed, config in wanted:
            if (number, seed) in existing:
                already += 1
                continue
            job = {"trial": number, "seed": seed, "config": config}
            companion.enqueue_trial({}, user_attrs={CONFIRM_ATTR: job})
            queued += 1
        return queued, already

    queued, already = admitted(companion, enqueue_missing)
    return ConfirmPlan(trials=tuple(t.number for t in best), seeds=seeds, queued=queued, already=already)


def confirmed(study: optuna.Study) -> list[Confirmed]:
    """The study's confirmations so far (empty when none were asked for), in the search's order."""
    from optuna.trial import TrialState

    companion = load_companion(study)
    if companion is None:
        return []
    originals = {
        t.number: float(t.value)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
    }
    rows: list[tuple[int, int, float | None]] = []
    for t in companion.get_trials(deepcopy=False):
        job = confirmation_job(t)
        if job is None:
            continue
        value = float(t.value) if t.state == TrialState.COMPLETE and t.value is not None else None
        rows.append((int(job["trial"]), int(job["seed"]), value))
    return summarize(rows, originals)


def best_confirmed(study: optuna.Study) -> Confirmed:
    """The configuration with the highest confirmed mean (ties: the search's order).

    UserError: no confirmation was asked for, or none of its re-trainings has finished yet.
    """
    rows = confirmed(study)
    name = study.study_name
    if not rows:
        raise UserError(
            f"study {name!r} has no confirmed results: queue them with "
            f"`edgesearch study confirm {name} --top 3 --seeds 3` and run its workers"
        )
    done = [r for r in rows if r.mean is not None]
    if not done:
        asked = sum(r.seeds for r in rows)
        raise UserError(f"study {name!r}: none of its {asked} confirmation re-training(s) has finished yet")
    return max(done, key=lambda r: (r.mean or 0.0, -rows.index(r)))
