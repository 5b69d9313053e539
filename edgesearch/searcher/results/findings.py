"""The report's "Findings": what a study's complete trials say about the training report's questions.

Each finding is a sentence with counts and spread, not only the best point, so that one lucky
trial does not read as a rule: the best edge-lambda range, BCE against focal, the edge width, the
edge profile (hard band against soft tent), and the parameter importances in words. A question the
study did not vary (one loss kind, one width) gets no sentence. Each sentence says how sure it is:
a comparison whose leading two groups hold :data:`MIN_GROUP` trials or more says whether the lead
is larger than the spread within them, one with a smaller group says it is too few to tell, and
importances from fewer than :data:`MIN_FOR_IMPORTANCE` complete trials are called rough. Pure
functions of plain rows (:class:`Outcome`), so they are tested on numbers made up for the purpose,
without a study.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgesearch.formatting import format_value

if TYPE_CHECKING:
    from edgesearch.searcher.study.confirm import Confirmed

__all__ = [
    "LAMBDA_RANGES",
    "MIN_FOR_IMPORTANCE",
    "MIN_GROUP",
    "Outcome",
    "confirmed_finding",
    "findings",
    "group_summary",
    "last_epoch_finding",
]

LAMBDA_RANGES: tuple[tuple[float, float], ...] = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.5), (0.5, 1.0))
"""Edge-lambda ranges, low end included (the last one also its high end): the report's 0-0.5 in steps of
0.1 (0.3-0.5 merged: few studies search there densely), and beyond."""

MIN_GROUP = 3
"""Trials a group needs before its mean is weighed against another's: the mean of one or two trials is
mostly the luck of their seeds, and with one there is no spread to weigh it by."""

MIN_FOR_IMPORTANCE = 10
"""Complete trials below which the importances are called rough: Optuna's evaluator fits a forest to
the trials, and a handful of points lets one lucky trial decide the ranking."""


@dataclass(frozen=True)
class Outcome:
    """One complete trial: its number, its metric value and the settings the findings read."""

    number: int
    value: float
    edge_lambda: float | None
    loss_kind: str | None
    edge_width: int | None
    edge_profile: str | None = None


def group_summary(values: Sequence[float]) -> str:
    """``n=5, mean 0.8123 ± 0.0101, best 0.8234`` (the ± is the sample standard deviation; none for n=1)."""
    spread = f" ± {format_value(statistics.stdev(values))}" if len(values) > 1 else ""
    return f"n={len(values)}, mean {format_value(statistics.fmean(values))}{spread}, best {format_value(max(values))}"


def _groups(outcomes: Sequence[Outcome], key: Callable[[Outcome], Any]) -> dict[Any, list[float]]:
    groups: dict[Any, list[float]] = {}
    for outcome in outcomes:
        label = key(outcome)
        if label is not None:
            groups.setdefault(label, []).append(outcome.value)
    return groups


def _lambda_range(value: float | None) -> tuple[float, float] | None:
    if value is None:
        return None
    for low, high in LAMBDA_RANGES:
        if low <= value < high or (high == LAMBDA_RANGES[-1][1] and value == high):
            return (low, high)
    return None


def _ranked(groups: dict[Any, list[float]]) -> list[Any]:
    """The groups by mean, highest first (ties: the larger group first)."""
    return sorted(groups, key=lambda label: (-statistics.fmean(groups[label]), -len(groups[label])))


def _comparison(topic: str, groups: dict[Any, list[float]], name: Callable[[Any], str], metric: str) -> str:
    """``Topic: X leads by mean metric, ...`` with how sure that is, then every group's count and spread.

    Sure enough to say only when the leading two groups hold :data:`MIN_GROUP` trials each; then the
    lead is called clear when it is larger than the standard deviation within either group.
    """
    ordered = _ranked(groups)
    listing = "; ".join(
        f"{name(label)}: {group_summary(groups[label])}{' (too few to tell)' if len(groups[label]) < MIN_GROUP else ''}"
        for label in ordered
    )
    first, second = groups[ordered[0]], groups[ordered[1]]
    if len(first) < MIN_GROUP or len(second) < MIN_GROUP:
        return (
            f"{topic}: too few trials to tell (a group needs {MIN_GROUP} or more); {name(ordered[0])} has the "
            f"highest mean {metric} so far ({listing})."
        )
    margin = statistics.fmean(first) - statistics.fmean(second)
    spread = max(statistics.stdev(first), statistics.stdev(second))
    sd = f"sd up to {format_value(spread)}"
    if margin > spread:
        how = f"by {format_value(margin)} over {name(ordered[1])}, more than the spread inside either group ({sd})"
    else:
        how = (
            f"by only {format_value(margin)} over {name(ordered[1])}, less than the spread inside the groups "
            f"({sd}): not a clear lead"
        )
    return f"{topic}: {name(ordered[0])} leads by mean {metric} {how} ({listing})."


def findings(
    outcomes: Sequence[Outcome],
    *,
    metric: str,
    importances: dict[str, float] | None = None,
    chosen: str | None = None,
) -> list[str]:
    """Sentences for the report, in the order the training report asks its questions; ``chosen``, the choice of
    the best trial and how sure it is (:func:`~edgesearch.searcher.study.choice.describe`), ends the first."""
    if not outcomes:
        return ["No complete trial yet: nothing to conclude."]
    best = max(outcomes, key=lambda o: (o.value, -o.number))
    lines = [
        f"Best {metric} {format_value(best.value)} (trial {best.number}) of {len(outcomes)} complete trials; "
        f"all of them: {group_summary([o.value for o in outcomes])}." + (f" {chosen}." if chosen else "")
    ]
    questions: list[tuple[str, Callable[[Outcome], Any], Callable[[Any], str]]] = [
        ("Edge lambda", lambda o: _lambda_range(o.edge_lambda), lambda r: f"{format_value(r[0])}-{format_value(r[1])}"),
        ("Loss kind", lambda o: o.loss_kind, str),
        ("Edge width", lambda o: o.edge_width, lambda w: f"{w} px"),
        ("Edge profile", lambda o: o.edge_profile, str),
    ]
    for topic, key, name in questions:
        groups = _groups(outcomes, key)
        if len(groups) > 1:
            lines.append(_comparison(topic, groups, name, metric))
    if importances:
        ranked = sorted(importances.items(), key=lambda item: -item[1])
        words = ", then ".join(f"{name} ({format_value(share)})" for name, share in ranked[:3])
        n = len(outcomes)
        basis = f"from {n} complete trials"
        if n < MIN_FOR_IMPORTANCE:
            basis = f"rough: from only {n} complete trial(s), and fewer than {MIN_FOR_IMPORTANCE} say little"
        lines.append(f"Importance (share of the variation in {metric} Optuna attributes to each; {basis}): {words}.")
    return lines


def last_epoch_finding(number: int, series: dict[int, float], *, metric: str) -> str | None:
    """A warning when trial ``number``'s best ``metric`` (epoch -> value) came at its last epoch, of two
    or more: it was still improving, and more epochs may help. None otherwise (a tie goes to the
    earlier epoch, as the trainer keeps its first best)."""
    if len(series) < 2:
        return None
    last = max(series)
    best = max(sorted(series), key=lambda epoch: series[epoch])
    if best != last:
        return None
    return (
        f"Trial {number} (the best) was still improving at the last epoch: more epochs may help "
        f"(its best {metric}, {format_value(series[last])}, came at epoch {last}, its last)."
    )


def confirmed_finding(rows: Sequence[Confirmed], *, metric: str, holds: bool | None) -> str | None:
    """The confirmed result: the configuration with the best mean over its fresh seeds, and whether the
    search's ranking held. None before any re-training finished."""
    done = [r for r in rows if r.mean is not None]
    if not done:
        return None
    best = max(done, key=lambda r: (r.mean or 0.0, -rows.index(r)))
    spread = f" ± {format_value(best.sd)}" if best.sd is not None else ""
    ranking = {
        True: f"the search's ranking of the top {len(rows)} holds",
        False: f"the search's ranking of the top {len(rows)} does not hold",
        None: "the ranking is not settled until every re-training has finished",
    }[holds]
    return (
        f"Confirmed: trial {best.trial}'s configuration has the best mean {metric} over fresh seeds, "
        f"{format_value(best.mean)}{spread} (min {format_value(best.min)}, {best.n} of {best.seeds} seeds done; "
        f"{format_value(best.original)} in the search); {ranking}."
    )
