"""Picking a point of a Pareto front: the best of one objective, or the knee, on fronts worked out by hand."""

from __future__ import annotations

import pytest

from edgesearch.searcher.study.front import PICKS, knee, pareto_front, pick_point

OBJECTIVES = ("val_iou", "val_boundary_iou")

# A front of four points. Over it val_iou spans 0.60..0.80 and val_boundary_iou 0.40..0.62, so the
# rescaled points are (1, 0), (0.9, 0.6818), (0.5, 0.9091), (0, 1), and their distances to the
# ideal point (1, 1) are 1, 0.3335, 0.5082, 1: the knee is the second point.
FRONT = [(0.80, 0.40), (0.78, 0.55), (0.70, 0.60), (0.60, 0.62)]


def test_the_knee_is_the_front_point_nearest_the_ideal_point_once_each_objective_is_rescaled() -> None:
    assert knee(FRONT) == 1
    assert pick_point(FRONT, OBJECTIVES, "knee") == 1


def test_the_knee_weighs_each_objective_by_its_spread_over_the_front_not_by_its_raw_numbers() -> None:
    # val_iou spans 0.01 and val_boundary_iou 0.32. In raw numbers the last point is nearest the
    # ideal (0.800, 0.62): 0.010 against 0.021 for the middle one. Rescaled, the ends are (0, 1) and
    # (1, 0), both at distance 1, and the middle one is (0.5, 0.9375), at 0.504: the knee.
    points = [(0.800, 0.30), (0.795, 0.60), (0.790, 0.62)]
    assert knee(points) == 1


def test_dominated_points_neither_become_the_knee_nor_stretch_the_rescaling() -> None:
    # (0.50, 0.10) would widen both ranges if it counted; (0.77, 0.50) is beaten by (0.78, 0.55).
    points = [(0.50, 0.10), *FRONT[:1], (0.77, 0.50), *FRONT[1:]]
    assert knee(points) == 3  # FRONT[1], shifted by the two points placed before it
    assert pareto_front(points) == [5, 4, 3, 1]


def test_a_front_of_one_point_or_of_equal_points_has_its_first_point_as_knee() -> None:
    assert knee([(0.7, 0.5)]) == 0
    assert knee([(0.7, 0.5), (0.6, 0.4)]) == 0
    assert knee([(0.6, 0.4), (0.7, 0.5), (0.7, 0.5)]) == 1  # equal points tie: the earlier one


def test_an_empty_front_has_no_knee() -> None:
    with pytest.raises(ValueError, match="empty"):
        knee([])
    with pytest.raises(ValueError, match="empty"):
        pick_point([], OBJECTIVES, "val_iou")


def test_picking_a_metric_gives_the_front_point_highest_in_it() -> None:
    assert pick_point(FRONT, OBJECTIVES, "val_iou") == 0
    assert pick_point(FRONT, OBJECTIVES, "val_boundary_iou") == 3


def test_a_tie_in_the_picked_metric_goes_to_the_higher_other_metric_then_to_the_earlier_point() -> None:
    assert pick_point([(0.8, 0.4), (0.8, 0.5), (0.7, 0.6)], OBJECTIVES, "val_iou") == 1
    assert pick_point([(0.6, 0.7), (0.8, 0.7), (0.9, 0.1)], OBJECTIVES, "val_boundary_iou") == 1
    assert pick_point([(0.8, 0.5), (0.8, 0.5)], OBJECTIVES, "val_iou") == 0


def test_an_unknown_pick_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="'middle'; allowed: val_iou, val_boundary_iou, knee"):
        pick_point(FRONT, OBJECTIVES, "middle")


def test_the_cli_offers_exactly_the_picks_the_front_module_knows() -> None:
    from edgesearch.cli.options import Pick

    assert [pick.value for pick in Pick] == list(PICKS)
