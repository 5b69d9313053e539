"""A study's best configuration chosen by a rule of :mod:`~edgesearch.searcher.study.choosing`, and how sure it is.

The candidates are the study's COMPLETE trials: each trial's value, its parameters as a point of the search
space, and the fresh seeds' values of its confirmations (``study confirm``; the search's own run is not one).
The seed noise is what the confirmations measured, the standard deviation pooled over the configurations
re-trained with two fresh seeds or more::

    sigma = sqrt(sum (n_i - 1) sd_i^2 / sum (n_i - 1))

and unknown before. The chosen trial is set against the runner-up under the same rule: the choice stands
out of the noise when the margin between their estimates exceeds the noise of a difference of two means,
``sigma * sqrt(1/n_a + 1/n_b)`` with ``n`` the runs behind each estimate. Shrinkage cannot run without the
seed noise and the confirmed mean without a confirmation: both fall back to the highest value, and say so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgesearch.errors import UserError
from edgesearch.formatting import format_value
from edgesearch.searcher.study import choosing
from edgesearch.searcher.study.choosing import RULES, Candidate, shrunk, unit_point

if TYPE_CHECKING:
    import optuna

    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.confirm import Confirmed

__all__ = ["LABELS", "Choice", "Noise", "Ranked", "choice_record", "choose", "describe", "seed_noise", "study_choice"]

LABELS = {"highest": "the highest value", "confirmed": "the confirmed mean", "shrinkage": "the shrinkage estimate"}
"""Each rule in words, as a sentence names what chose."""


@dataclass(frozen=True)
class Noise:
    """The seed noise: a standard deviation pooled over ``retrainings`` fresh values of ``configurations``."""

    sd: float
    retrainings: int
    configurations: int


def seed_noise(groups: Iterable[Sequence[float]]) -> Noise | None:
    """The pooled standard deviation of the groups of two values or more (module docstring); None without one."""
    pooled = [group for group in groups if len(group) > 1]
    if not pooled:
        return None
    squares = sum((len(group) - 1) * statistics.variance(group) for group in pooled)
    freedom = sum(len(group) - 1 for group in pooled)
    return Noise(math.sqrt(squares / freedom), sum(len(group) for group in pooled), len(pooled))


@dataclass(frozen=True)
class Ranked:
    """A trial as a rule ranks it: its estimate and the runs behind it."""

    number: int
    estimate: float
    runs: tuple[float, ...]

    @property
    def sd(self) -> float | None:
        """The sample standard deviation of the runs; None below two."""
        return statistics.stdev(self.runs) if len(self.runs) > 1 else None


@dataclass(frozen=True)
class Choice:
    """The trial a rule chose, the runner-up under the same rule, and the seed noise to weigh their margin by."""

    rule: str
    """The rule that chose: the one asked for, or ``highest`` when that one could not run (``fallback`` says why)."""
    asked: str
    chosen: Ranked
    runner_up: Ranked | None
    noise: Noise | None
    fallback: str | None = None

    @property
    def margin(self) -> float | None:
        return None if self.runner_up is None else self.chosen.estimate - self.runner_up.estimate

    @property
    def difference_noise(self) -> float | None:
        """The seed noise of the difference between the two estimates; None when either is unknown."""
        if self.noise is None or self.runner_up is None:
            return None
        return self.noise.sd * math.sqrt(1 / len(self.chosen.runs) + 1 / len(self.runner_up.runs))

    @property
    def beyond_noise(self) -> bool | None:
        """Whether the margin exceeds :attr:`difference_noise`; None when that is unknown."""
        margin, noise = self.margin, self.difference_noise
        return None if margin is None or noise is None else margin > noise


def _ranking(candidates: Sequence[Candidate], rule: str, noise: Noise | None) -> list[Ranked]:
    """The candidates a rule ranks, best first (ties: the earlier candidate, as the rules of choosing break them)."""
    if rule == "confirmed":
        ranked = [
            Ranked(c.number, statistics.fmean(c.confirmations), c.confirmations) for c in candidates if c.confirmations
        ]
    elif rule == "shrinkage" and noise is not None:
        estimates = shrunk(candidates, noise_sd=noise.sd)
        ranked = [Ranked(c.number, estimates[c.number], c.runs) for c in candidates]
    else:
        ranked = [Ranked(c.number, c.value, (c.value,)) for c in candidates]
    return sorted(ranked, key=lambda r: -r.estimate)


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise UserError(f"rule {rule!r} is not allowed; allowed: {', '.join(RULES)}")


def choose(candidates: Sequence[Candidate], rule: str, noise: Noise | None) -> Choice:
    """The choice of ``rule`` among ``candidates`` (at least one) with what weighs it (module docstring)."""
    _check_rule(rule)
    used, fallback = rule, None
    if rule == "shrinkage" and noise is None:
        used = "highest"
        fallback = "Shrinkage needs the seed noise, unknown until `study confirm` re-trains with 2 seeds or more"
    elif rule == "confirmed" and not any(c.confirmations for c in candidates):
        used, fallback = "highest", "No trial is confirmed yet"
    ranked = _ranking(candidates, used, noise)
    return Choice(used, rule, ranked[0], ranked[1] if len(ranked) > 1 else None, noise, fallback)


def describe(choice: Choice) -> str:
    """The choice and how sure it is, in one line: what chose, the estimate over how many runs, the runner-up's
    margin and whether it exceeds the seed noise of a difference."""
    chosen, runner_up, noise = choice.chosen, choice.runner_up, choice.noise
    spread = f" (sd {format_value(chosen.sd)})" if chosen.sd is not None else ""
    parts = [f"trial {chosen.number}, {format_value(chosen.estimate)} over {len(chosen.runs)} run(s){spread}"]
    if runner_up is None:
        parts.append("no runner-up to compare with")
    else:
        parts.append(f"runner-up trial {runner_up.number} by {format_value(choice.margin)}")
    if noise is None:
        parts.append("the seed noise is unknown (`study confirm` with 2 seeds or more measures it)")
    else:
        source = f"from {noise.retrainings} re-trainings of {noise.configurations} configuration(s)"
        if choice.difference_noise is None:
            parts.append(f"the seed noise is {format_value(noise.sd)} ({source})")
        else:
            verdict = "beyond the noise" if choice.beyond_noise else "within the noise"
            parts.append(
                f"the seed noise of a difference is {format_value(choice.difference_noise)} ({source}): {verdict}"
            )
    head = f"{choice.fallback}, so chosen by" if choice.fallback else "Chosen by"
    return f"{head} {LABELS[choice.rule]}: " + "; ".join(parts)


def choice_record(choice: Choice) -> dict[str, Any]:
    """The choice as plain JSON-able data (``study best --json``, report.json), its line under ``says``."""
    chosen, runner_up, noise = choice.chosen, choice.runner_up, choice.noise
    return {
        "rule": choice.rule,
        "asked": choice.asked,
        "fallback": choice.fallback,
        "trial": chosen.number,
        "estimate": chosen.estimate,
        "n": len(chosen.runs),
        "sd": chosen.sd,
        "runner_up": None
        if runner_up is None
        else {"trial": runner_up.number, "estimate": runner_up.estimate, "n": len(runner_up.runs)},
        "margin": choice.margin,
        "noise": None
        if noise is None
        else {"sd": noise.sd, "retrainings": noise.retrainings, "configurations": noise.configurations},
        "difference_noise": choice.difference_noise,
        "beyond_noise": choice.beyond_noise,
        "says": describe(choice),
    }


def study_choice(
    study: optuna.Study, config: StudyConfig, rule: str | None = None, *, rows: Sequence[Confirmed] | None = None
) -> Choice:
    """The choice of ``rule`` (None: :data:`~edgesearch.searcher.study.choosing.DEFAULT_RULE`) among ``study``'s
    COMPLETE trials; ``rows`` its confirmations when already read.

    UserError: an unknown rule, a study of two objectives (no one value to rank), no completed trial yet.
    """
    from optuna.trial import TrialState

    from edgesearch.searcher.study.confirm import confirmed

    rule = choosing.DEFAULT_RULE if rule is None else rule  # read at each call: that one constant decides everywhere
    _check_rule(rule)
    name = study.study_name
    if config.multi_objective:
        raise UserError(
            f"study {name!r} maximises {' and '.join(config.objectives)} together: a rule of choosing ranks one "
            "metric; choose a point of its front with --pick"
        )
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    if not complete:
        raise UserError(f"study {name!r} has no completed trial yet")
    rows = confirmed(study) if rows is None else rows
    fresh = {row.trial: row.values for row in rows}
    # In the search's order, so that a tie goes where `study confirm` ranks it: the higher value, then the lower number.
    complete.sort(key=lambda t: (-float(t.value or 0.0), t.number))
    candidates = [
        Candidate(t.number, float(t.value or 0.0), fresh.get(t.number, ()), unit_point(t.params, config.space))
        for t in complete
    ]
    return choose(candidates, rule, seed_noise(row.values for row in rows))
