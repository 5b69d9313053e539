"""Choosing a study's best configuration knowing the seed noise: three rules, and how sure a choice is.

A trial's value is one seed's run, and the highest of many noisy values is the luckiest as much as the best.
The rules, over the complete trials (each a :class:`Candidate`):

- **highest**: the trial of the highest value (Optuna's ``best_trial``).
- **confirmed mean**: among the trials ``study confirm`` re-trained, the highest mean of the fresh seeds'
  values (the original value is left out: it was selected for being high); the highest when none is confirmed.
- **shrinkage**: every trial's value pulled towards what its neighbours in the search space scored, by how
  noisy a run is against how much the neighbourhood varies (an empirical-Bayes posterior mean)::

      prior    m_i, tau_i^2   the mean and the variance, less the seed noise, of the k nearest other trials' values
      estimate (m_i / tau_i^2 + n_i * x_i / sigma^2) / (1 / tau_i^2 + n_i / sigma^2)

  with x_i the trial's mean over its n_i runs (its own and its confirmations') and sigma the seed noise
  (what ``study confirm`` measured, else the default). A trial alone in a good region keeps less of its luck
  than one whose neighbours agree with it.

Distances: every range scaled to [0, 1] (log ranges in log space), a differing choice counting 1.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_RULE",
    "NEIGHBOURS",
    "RULES",
    "Candidate",
    "confirmed_mean",
    "highest",
    "shrinkage",
    "shrunk",
    "unit_point",
]

RULES = ("highest", "confirmed", "shrinkage")
"""The rules by name, as ``study best --rule`` takes them: :func:`highest`, :func:`confirmed_mean`, :func:`shrinkage`
(its estimates: :func:`shrunk`)."""
DEFAULT_RULE = "confirmed"
"""The rule ``study best``, ``predict --study`` and the report choose by unless told otherwise: the one
benchmarks/search.py finds picks a truly good configuration most often (the confirmed mean: 97% and 100% of
replayed studies at 1 and 16 workers, the highest value 94% and 97%, shrinkage 95% and 77%). Without
confirmations it is the highest value."""
NEIGHBOURS = 5
TAU_FLOOR = 1e-6
"""Smallest prior variance: a neighbourhood that agrees exactly still leaves the trial's own runs a say."""


@dataclass(frozen=True)
class Candidate:
    """A complete trial: its number, its value, its confirmations' values and its place in the search space."""

    number: int
    value: float
    confirmations: tuple[float, ...] = ()
    point: tuple[float, ...] = ()
    """Coordinates of :func:`unit_point`."""

    @property
    def runs(self) -> tuple[float, ...]:
        return (self.value, *self.confirmations)


def unit_point(params: Mapping[str, Any], space: Mapping[str, Any]) -> tuple[float, ...]:
    """``params`` as a point where Euclidean distance is this module's: a range in [0, 1] (log ranges in log
    space), a choice as one coordinate per allowed value at 1/sqrt(2) (two different choices: distance 1)."""
    out: list[float] = []
    for path, entry in space.items():
        value = params.get(path)
        choices = entry.get("choices") if isinstance(entry, Mapping) else getattr(entry, "choices", None)
        if choices is not None:
            out.extend(math.sqrt(0.5) if value == choice else 0.0 for choice in choices)
            continue
        low, high, log = (
            (entry["low"], entry["high"], entry.get("log", False))
            if isinstance(entry, Mapping)
            else (entry.low, entry.high, entry.log)
        )
        x = float(value) if value is not None else low
        if log:
            low, high, x = math.log(low), math.log(high), math.log(x)
        out.append(0.0 if high == low else (x - low) / (high - low))
    return tuple(out)


def highest(candidates: Sequence[Candidate]) -> Candidate:
    """The trial of the highest value (ties: the first)."""
    return max(candidates, key=lambda c: c.value)


def confirmed_mean(candidates: Sequence[Candidate]) -> Candidate:
    """The highest mean of the confirmations' values among confirmed trials; :func:`highest` when none is."""
    confirmed = [c for c in candidates if c.confirmations]
    if not confirmed:
        return highest(candidates)
    return max(confirmed, key=lambda c: statistics.fmean(c.confirmations))


def shrunk(candidates: Sequence[Candidate], *, noise_sd: float, k: int = NEIGHBOURS) -> dict[int, float]:
    """Each trial's shrinkage estimate by number (module docstring); its own mean when it has no neighbours."""
    noise = max(noise_sd, math.sqrt(TAU_FLOOR)) ** 2
    out: dict[int, float] = {}
    for c in candidates:
        own = statistics.fmean(c.runs)
        others = sorted(
            (math.dist(c.point, o.point), o.number, statistics.fmean(o.runs)) for o in candidates if o is not c
        )
        near = [mean for _, _, mean in others[:k]]
        if len(near) < 2:
            out[c.number] = own
            continue
        prior = statistics.fmean(near)
        tau2 = max(statistics.pvariance(near) - noise, TAU_FLOOR)
        precision = len(c.runs) / noise
        out[c.number] = (prior / tau2 + precision * own) / (1.0 / tau2 + precision)
    return out


def shrinkage(candidates: Sequence[Candidate], *, noise_sd: float, k: int = NEIGHBOURS) -> Candidate:
    """The trial of the highest shrinkage estimate (ties: the first)."""
    estimates = shrunk(candidates, noise_sd=noise_sd, k=k)
    return max(candidates, key=lambda c: estimates[c.number])
