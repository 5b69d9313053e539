"""The report's "Findings": what a study's complete trials say about the training report's questions.

Each finding is a sentence with counts and spread, not only the best point, so that one lucky
trial does not read as a rule: the best edge-lambda range, BCE against focal, the edge width, the
edge profile (hard band against soft tent), and the parameter importances in words. A question the
study did not vary (one loss kind, one width) gets no sentence. Pure functions of plain rows
(:class:`Outcome`), so they are tested on numbers made up for the purpose, without a study.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgesearch.formatting import format_value

if TYPE_CHECKING:
    from edgesearch.searcher.confirm import Confirmed

__all__ = ["LAMBDA_RANGES", "Outcome", "confirmed_finding", "findings", "group_summary"]

LAMBDA_RANGES: tuple[tuple[float, float], ...] = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.5), (0.5, 1.0))
"""Edge-lambda ranges, low end included (the last one also its high end): the report's 0-0.5 in steps of
0.1 (0.3-0.5 merged: few studies search there densely), and beyond."""


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


def _best_group(groups: dict[Any, list[float]]) -> Any:
    """The group with the highest mean (ties: the larger group)."""
    return max(groups, key=lambda label: (statistics.fmean(groups[label]), len(groups[label])))


def _compare(groups: dict[Any, list[float]], name: Callable[[Any], str]) -> str:
    ordered = sorted(groups, key=lambda label: -statistics.fmean(groups[label]))
    return "; ".join(f"{name(label)}: {group_summary(groups[label])}" for label in ordered)


def findings(outcomes: Sequence[Outcome], *, metric: str, importances: dict[str, float] | None = None) -> list[str]:
    """Sentences for the report, in the order the training report asks its questions."""
    if not outcomes:
        return ["No complete trial yet: nothing to conclude."]
    best = max(outcomes, key=lambda o: (o.value, -o.number))
    lines = [
        f"Best {metric} {format_value(best.value)} (trial {best.number}) of {len(outcomes)} complete trials; "
        f"all of them: {group_summary([o.value for o in outcomes])}."
    ]
    lambdas = _groups(outcomes, lambda o: _lambda_range(o.edge_lambda))
    if len(lambdas) > 1:
        low, high = _best_group(lambdas)
        lines.append(
            f"Edge lambda: the best range is {format_value(low)}-{format_value(high)} by mean {metric} "
            f"({_compare(lambdas, lambda r: f'{format_value(r[0])}-{format_value(r[1])}')})."
        )
    kinds = _groups(outcomes, lambda o: o.loss_kind)
    if len(kinds) > 1:
        lines.append(f"Loss kind: {_best_group(kinds)} leads by mean {metric} ({_compare(kinds, str)}).")
    widths = _groups(outcomes, lambda o: o.edge_width)
    if len(widths) > 1:
        lines.append(
            f"Edge width: {_best_group(widths)} px leads by mean {metric} ({_compare(widths, lambda w: f'{w} px')})."
        )
    profiles = _groups(outcomes, lambda o: o.edge_profile)
    if len(profiles) > 1:
        lines.append(f"Edge profile: {_best_group(profiles)} leads by mean {metric} ({_compare(profiles, str)}).")
    if importances:
        ranked = sorted(importances.items(), key=lambda item: -item[1])
        words = ", then ".join(f"{name} ({format_value(share)})" for name, share in ranked[:3])
        lines.append(f"Importance (share of the variation in {metric} Optuna attributes to each): {words}.")
    return lines


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
