"""The learning-curve table read back: curves by configuration and seed, true means, the seed noise.

A configuration's **value** in one run is what a study records for a trial: its best val IoU over the epochs
(the epoch ``best.pt`` holds). Its **true mean** is the mean of that value over the table's seeds, and the
**seed sigma** is the pooled standard deviation of a run's value around its configuration's mean::

    sigma^2 = sum_c sum_s (v_cs - mean_c)^2 / sum_c (n_c - 1)

A sampled point of the search space is answered with the curve of the table's configuration **nearest** to it:
every range scaled to [0, 1] (log ranges in log space), a differing choice counting 1, Euclidean distance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = ["Curve", "Table", "load_table"]


@dataclass(frozen=True)
class Curve:
    """One recorded run: per epoch its val IoU, Boundary IoU and seconds."""

    seed: int
    val_iou: tuple[float, ...]
    val_boundary_iou: tuple[float, ...]
    seconds: tuple[float, ...]

    @property
    def value(self) -> float:
        """The run's value as a study records it: its best val IoU."""
        return max(self.val_iou)


@dataclass(frozen=True)
class Table:
    """Configurations (id -> parameters by space path), their curves (one per seed) and the search space."""

    configs: Mapping[str, Mapping[str, Any]]
    curves: Mapping[str, Sequence[Curve]]
    space: Mapping[str, Mapping[str, Any]]

    @cached_property
    def true_mean(self) -> dict[str, float]:
        return {cid: sum(c.value for c in runs) / len(runs) for cid, runs in self.curves.items()}

    @cached_property
    def seed_sigma(self) -> float:
        squares, dof = 0.0, 0
        for cid, runs in self.curves.items():
            mean = self.true_mean[cid]
            squares += sum((c.value - mean) ** 2 for c in runs)
            dof += len(runs) - 1
        return math.sqrt(squares / dof) if dof else 0.0

    @cached_property
    def best(self) -> str:
        """The configuration of the highest true mean."""
        return max(self.true_mean, key=lambda cid: self.true_mean[cid])

    @cached_property
    def good(self) -> frozenset[str]:
        """Configurations whose true mean is within one seed sigma of the best's."""
        floor = self.true_mean[self.best] - self.seed_sigma
        return frozenset(cid for cid, mean in self.true_mean.items() if mean >= floor)

    def top(self, k: int) -> frozenset[str]:
        """The ``k`` configurations of the highest true means: a stricter target than :attr:`good` where many
        configurations lie within one seed sigma of the best."""
        return frozenset(sorted(self.true_mean, key=lambda cid: -self.true_mean[cid])[:k])

    def regret(self, cid: str) -> float:
        return self.true_mean[self.best] - self.true_mean[cid]

    def _coordinates(self, params: Mapping[str, Any]) -> list[float | str | None]:
        out: list[float | str | None] = []
        for name, spec in self.space.items():
            value = params[name]
            if "choices" in spec:
                out.append(value)
            elif spec.get("log"):
                low, high = math.log(spec["low"]), math.log(spec["high"])
                out.append((math.log(value) - low) / (high - low))
            else:
                out.append((float(value) - spec["low"]) / (spec["high"] - spec["low"]))
        return out

    @cached_property
    def _points(self) -> list[tuple[str, list[float | str | None]]]:
        return [(cid, self._coordinates(params)) for cid, params in self.configs.items() if cid in self.curves]

    def nearest(self, params: Mapping[str, Any]) -> str:
        """The id of the recorded configuration nearest to ``params`` (ties: the first in table order)."""
        here = self._coordinates(params)

        def distance(point: list[float | str | None]) -> float:
            total = 0.0
            for a, b in zip(here, point, strict=True):
                if isinstance(a, float) and isinstance(b, float):
                    total += (a - b) ** 2
                else:
                    total += 0.0 if a == b else 1.0
            return total

        return min(self._points, key=lambda item: distance(item[1]))[0]

    def complete_only(self, seeds: int) -> Table:
        """The configurations recorded with at least ``seeds`` seeds (a table still being recorded)."""
        kept = {cid: runs for cid, runs in self.curves.items() if len(runs) >= seeds}
        return Table({cid: self.configs[cid] for cid in kept}, kept, self.space)


def load_table(path: Path, space: Mapping[str, Mapping[str, Any]]) -> Table:
    """The table of ``record.py``'s JSON lines at ``path`` over the search space ``space``."""
    configs: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[Curve]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        configs[row["id"]] = row["params"]
        curves.setdefault(row["id"], []).append(
            Curve(int(row["seed"]), tuple(row["val_iou"]), tuple(row["val_boundary_iou"]), tuple(row["seconds"]))
        )
    for runs in curves.values():
        runs.sort(key=lambda c: c.seed)
    return Table(configs, curves, space)
