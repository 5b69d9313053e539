"""The Pareto front of maximised objectives, and picking one point of it.

A study of two objectives (``metric: [val_iou, val_boundary_iou]``) has no single best trial: its
result is the Pareto front, the complete trials that no other trial beats in one objective without
losing in another (the trials of Optuna's ``study.best_trials``). ``study best`` and
``predict --study`` need one model, so the user picks a point of the front (:data:`PICKS`):

* a metric's name: the front's highest value of that metric. A tie is broken by the other
  objectives in their order, then by the earlier point (the lower trial number).
* ``knee``: the balanced point. Each objective ``k`` is rescaled over the front,
  ``u_k = (v_k - min_k) / (max_k - min_k)``, so that the front spans [0, 1] in every objective and
  the ideal point (the best of each objective) is ``(1, ..., 1)``; an objective in which every front
  point has the same value gives ``u_k = 1``. The knee is the point nearest the ideal point,
  minimising ``sqrt(sum_k (1 - u_k)^2)``; a tie goes to the earlier point. Rescaling makes the choice
  independent of the objectives' units and spreads: a front whose val_iou varies over 0.01 and
  whose val_boundary_iou varies over 0.2 is weighed by where each point stands in each range.

Pure functions of plain tuples, ordered as the caller lists them (by trial number): no Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["KNEE", "PICKS", "knee", "pareto_front", "pick_point"]

KNEE = "knee"
PICKS: tuple[str, ...] = ("val_iou", "val_boundary_iou", KNEE)
"""What ``--pick`` accepts: the best point of either objective of a two-objective study, or the knee."""


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices, in ascending order of the points, of the points no other point dominates.

    ``b`` dominates ``a`` when ``b >= a`` in every coordinate and ``b != a``: equal points are all on
    the front, since neither dominates the other. Quadratic, plainly: a study holds at most a few
    thousand trials.
    """

    def dominated(a: Sequence[float]) -> bool:
        return any(all(y >= x for x, y in zip(a, b, strict=True)) and tuple(b) != tuple(a) for b in points)

    return sorted((i for i, point in enumerate(points) if not dominated(point)), key=lambda i: tuple(points[i]))


def knee(points: Sequence[Sequence[float]]) -> int:
    """Index of the knee of ``points``' Pareto front (see the module's docstring); ValueError when empty."""
    front = sorted(pareto_front(points))
    if not front:
        raise ValueError("no points: an empty front has no knee")
    dims = range(len(points[front[0]]))
    low = [min(points[i][k] for i in front) for k in dims]
    high = [max(points[i][k] for i in front) for k in dims]

    def distance(index: int) -> float:
        # An objective flat over the front separates no point: every point is at its ideal there.
        gaps = [0.0 if high[k] == low[k] else 1.0 - (points[index][k] - low[k]) / (high[k] - low[k]) for k in dims]
        return math.sqrt(sum(gap * gap for gap in gaps))

    return min(front, key=lambda index: (distance(index), index))


def pick_point(points: Sequence[Sequence[float]], objectives: Sequence[str], pick: str) -> int:
    """Index of the point of ``points``' Pareto front that ``pick`` names: a name of ``objectives``
    (the coordinates' metrics, in order) or :data:`KNEE`. ValueError for an empty list or an unknown pick.
    """
    if pick == KNEE:
        return knee(points)
    if pick not in objectives:
        raise ValueError(f"unknown pick {pick!r}; allowed: {', '.join([*objectives, KNEE])}")
    first = list(objectives).index(pick)
    order = [first, *(k for k in range(len(objectives)) if k != first)]
    front = pareto_front(points)
    if not front:
        raise ValueError("no points: an empty front has no best point")
    return max(front, key=lambda index: (*(points[index][k] for k in order), -index))
