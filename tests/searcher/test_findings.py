"""The report's findings, on made-up outcomes whose groups, means and spreads are computed by hand."""

from __future__ import annotations

import pytest

from edgesearch.searcher.findings import Outcome, findings, group_summary


def _o(number: int, value: float, lam: float | None = 0.15, kind: str | None = "bce", width: int | None = 2) -> Outcome:
    return Outcome(number=number, value=value, edge_lambda=lam, loss_kind=kind, edge_width=width)


def test_a_study_without_complete_trials_says_so() -> None:
    assert findings([], metric="val_iou") == ["No complete trial yet: nothing to conclude."]


def test_the_first_finding_names_the_best_trial_and_the_spread_of_all() -> None:
    lines = findings([_o(0, 0.7), _o(1, 0.9), _o(2, 0.8)], metric="val_iou")
    # mean 0.8, sample standard deviation 0.1
    assert lines == ["Best val_iou 0.9 (trial 1) of 3 complete trials; all of them: n=3, mean 0.8 ± 0.1, best 0.9."]


def test_the_best_lambda_range_is_the_one_with_the_highest_mean_with_every_range_listed() -> None:
    outcomes = [_o(0, 0.70, 0.05), _o(1, 0.72, 0.08), _o(2, 0.80, 0.15), _o(3, 0.82, 0.18), _o(4, 0.60, 0.35)]
    (line,) = [line for line in findings(outcomes, metric="val_iou") if line.startswith("Edge lambda")]
    # 0.1-0.2: [0.80, 0.82], mean 0.81, sd 0.01414; 0-0.1: [0.70, 0.72], mean 0.71; 0.3-0.5: [0.60]
    assert line == (
        "Edge lambda: the best range is 0.1-0.2 by mean val_iou (0.1-0.2: n=2, mean 0.81 ± 0.01414, best 0.82; "
        "0-0.1: n=2, mean 0.71 ± 0.01414, best 0.72; 0.3-0.5: n=1, mean 0.6, best 0.6)."
    )


@pytest.mark.parametrize(("lam", "expected"), [(0.1, "0.1-0.2"), (0.0, "0-0.1"), (0.5, "0.5-1"), (1.0, "0.5-1")])
def test_a_lambda_on_a_range_boundary_belongs_to_the_range_it_starts(lam: float, expected: str) -> None:
    lines = findings([_o(0, 0.9, lam), _o(1, 0.1, 0.25)], metric="val_iou")
    assert f"the best range is {expected} " in lines[1]


def test_questions_the_study_did_not_vary_get_no_sentence() -> None:
    lines = findings([_o(0, 0.8), _o(1, 0.7)], metric="val_iou")  # one lambda range, one kind, one width
    assert len(lines) == 1


def test_bce_against_focal_and_widths_are_compared_by_mean_not_by_the_best_point() -> None:
    # focal has the single best trial (0.9) but the lower mean (0.6 against 0.75)
    outcomes = [_o(0, 0.9, kind="focal", width=1), _o(1, 0.3, kind="focal", width=1)]
    outcomes += [_o(2, 0.75, kind="bce", width=2), _o(3, 0.75, kind="bce", width=3)]
    lines = findings(outcomes, metric="val_boundary_iou")
    kind = next(line for line in lines if line.startswith("Loss kind"))
    assert kind.startswith("Loss kind: bce leads by mean val_boundary_iou (bce: n=2, mean 0.75 ± 0, best 0.75; focal:")
    width = next(line for line in lines if line.startswith("Edge width"))
    assert width.startswith("Edge width: 2 px leads") or width.startswith("Edge width: 3 px leads")
    assert "1 px: n=2, mean 0.6 ± 0.4243, best 0.9" in width


def test_importances_are_named_most_important_first_at_most_three() -> None:
    lines = findings(
        [_o(0, 0.8)], metric="val_iou", importances={"loss.kind": 0.1, "loss.edge_lambda": 0.7, "a": 0.15, "b": 0.05}
    )
    assert lines[-1] == (
        "Importance (share of the variation in val_iou Optuna attributes to each): "
        "loss.edge_lambda (0.7), then a (0.15), then loss.kind (0.1)."
    )


def test_a_group_of_one_has_no_spread() -> None:
    assert group_summary([0.5]) == "n=1, mean 0.5, best 0.5"


def test_hard_against_soft_edges_is_compared_by_mean_with_counts_and_spread() -> None:
    outcomes = [
        Outcome(number=0, value=0.80, edge_lambda=0.15, loss_kind="bce", edge_width=2, edge_profile="soft"),
        Outcome(number=1, value=0.84, edge_lambda=0.15, loss_kind="bce", edge_width=2, edge_profile="soft"),
        Outcome(number=2, value=0.85, edge_lambda=0.15, loss_kind="bce", edge_width=2, edge_profile="hard"),
        Outcome(number=3, value=0.75, edge_lambda=0.15, loss_kind="bce", edge_width=2, edge_profile="hard"),
    ]
    (line,) = [line for line in findings(outcomes, metric="val_iou") if line.startswith("Edge profile")]
    # soft: [0.80, 0.84], mean 0.82, sd 0.02828; hard: [0.85, 0.75], mean 0.8, sd 0.07071
    assert line == (
        "Edge profile: soft leads by mean val_iou (soft: n=2, mean 0.82 ± 0.02828, best 0.84; "
        "hard: n=2, mean 0.8 ± 0.07071, best 0.85)."
    )
