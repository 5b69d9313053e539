"""The report's findings, on made-up outcomes whose groups, means and spreads are computed by hand."""

from __future__ import annotations

import pytest

from edgesearch.searcher.results.findings import Outcome, findings, group_summary, last_epoch_finding


def _o(number: int, value: float, lam: float | None = 0.15, kind: str | None = "bce", width: int | None = 2) -> Outcome:
    return Outcome(number=number, value=value, edge_lambda=lam, loss_kind=kind, edge_width=width)


def test_a_study_without_complete_trials_says_so() -> None:
    assert findings([], metric="val_iou") == ["No complete trial yet: nothing to conclude."]


def test_the_first_finding_names_the_best_trial_and_the_spread_of_all() -> None:
    lines = findings([_o(0, 0.7), _o(1, 0.9), _o(2, 0.8)], metric="val_iou")
    # mean 0.8, sample standard deviation 0.1
    assert lines == ["Best val_iou 0.9 (trial 1) of 3 complete trials; all of them: n=3, mean 0.8 ± 0.1, best 0.9."]


def test_the_choice_of_the_best_trial_and_how_sure_it_is_ends_the_first_finding() -> None:
    chosen = "Chosen by the highest value: trial 1, 0.9 over 1 run(s); no runner-up to compare with"
    lines = findings([_o(0, 0.7), _o(1, 0.9), _o(2, 0.8)], metric="val_iou", chosen=chosen)
    assert lines[0] == (
        "Best val_iou 0.9 (trial 1) of 3 complete trials; all of them: n=3, mean 0.8 ± 0.1, best 0.9. "
        "Chosen by the highest value: trial 1, 0.9 over 1 run(s); no runner-up to compare with."
    )


def test_groups_of_two_or_fewer_are_too_few_to_tell_with_every_range_listed_by_mean() -> None:
    outcomes = [_o(0, 0.70, 0.05), _o(1, 0.72, 0.08), _o(2, 0.80, 0.15), _o(3, 0.82, 0.18), _o(4, 0.60, 0.35)]
    (line,) = [line for line in findings(outcomes, metric="val_iou") if line.startswith("Edge lambda")]
    # 0.1-0.2: [0.80, 0.82], mean 0.81, sd 0.01414; 0-0.1: [0.70, 0.72], mean 0.71; 0.3-0.5: [0.60]
    assert line == (
        "Edge lambda: too few trials to tell (a group needs 3 or more); 0.1-0.2 has the highest mean val_iou so far "
        "(0.1-0.2: n=2, mean 0.81 ± 0.01414, best 0.82 (too few to tell); "
        "0-0.1: n=2, mean 0.71 ± 0.01414, best 0.72 (too few to tell); "
        "0.3-0.5: n=1, mean 0.6, best 0.6 (too few to tell))."
    )


def test_a_lead_larger_than_the_spread_inside_the_groups_is_clear_and_a_small_third_group_is_flagged() -> None:
    outcomes = [_o(0, 0.80, 0.15), _o(1, 0.82, 0.12), _o(2, 0.84, 0.18)]
    outcomes += [_o(3, 0.70, 0.05), _o(4, 0.72, 0.02), _o(5, 0.74, 0.08), _o(6, 0.95, 0.45)]
    (line,) = [line for line in findings(outcomes, metric="val_iou") if line.startswith("Edge lambda")]
    # 0.3-0.5: [0.95] leads by mean, but alone: too few to tell.
    assert line.startswith("Edge lambda: too few trials to tell (a group needs 3 or more); 0.3-0.5 has the highest")
    outcomes.pop()
    (line,) = [line for line in findings(outcomes, metric="val_iou") if line.startswith("Edge lambda")]
    # 0.1-0.2: mean 0.82, sd 0.02; 0-0.1: mean 0.72, sd 0.02; the lead 0.1 is larger than 0.02
    assert line == (
        "Edge lambda: 0.1-0.2 leads by mean val_iou by 0.1 over 0-0.1, more than the spread inside either group "
        "(sd up to 0.02) (0.1-0.2: n=3, mean 0.82 ± 0.02, best 0.84; 0-0.1: n=3, mean 0.72 ± 0.02, best 0.74)."
    )
    outcomes.append(_o(6, 0.60, 0.45))
    (line,) = [line for line in findings(outcomes, metric="val_iou") if line.startswith("Edge lambda")]
    assert line.startswith("Edge lambda: 0.1-0.2 leads by mean val_iou by 0.1 over 0-0.1, more than the spread")
    assert line.endswith("; 0.3-0.5: n=1, mean 0.6, best 0.6 (too few to tell)).")


def test_a_lead_inside_the_spread_is_not_a_clear_lead() -> None:
    # bce: [0.70, 0.80, 0.90], mean 0.8, sd 0.1; focal: [0.72, 0.76, 0.80], mean 0.76, sd 0.04; lead 0.04 < 0.1
    outcomes = [_o(i, v, kind="bce") for i, v in enumerate((0.70, 0.80, 0.90))]
    outcomes += [_o(3 + i, v, kind="focal") for i, v in enumerate((0.72, 0.76, 0.80))]
    (line,) = [line for line in findings(outcomes, metric="val_iou") if line.startswith("Loss kind")]
    assert line == (
        "Loss kind: bce leads by mean val_iou by only 0.04 over focal, less than the spread inside the groups "
        "(sd up to 0.1): not a clear lead (bce: n=3, mean 0.8 ± 0.1, best 0.9; focal: n=3, mean 0.76 ± 0.04, best 0.8)."
    )


@pytest.mark.parametrize(("lam", "expected"), [(0.1, "0.1-0.2"), (0.0, "0-0.1"), (0.5, "0.5-1"), (1.0, "0.5-1")])
def test_a_lambda_on_a_range_boundary_belongs_to_the_range_it_starts(lam: float, expected: str) -> None:
    lines = findings([_o(0, 0.9, lam), _o(1, 0.1, 0.25)], metric="val_iou")
    assert f"; {expected} has the highest mean val_iou so far ({expected}: n=1" in lines[1]


def test_questions_the_study_did_not_vary_get_no_sentence() -> None:
    lines = findings([_o(0, 0.8), _o(1, 0.7)], metric="val_iou")  # one lambda range, one kind, one width
    assert len(lines) == 1


def test_bce_against_focal_and_widths_are_compared_by_mean_not_by_the_best_point() -> None:
    # focal has the single best trial (0.9) but the lower mean (0.6 against 0.75)
    outcomes = [_o(0, 0.9, kind="focal", width=1), _o(1, 0.3, kind="focal", width=1)]
    outcomes += [_o(2, 0.75, kind="bce", width=2), _o(3, 0.75, kind="bce", width=3)]
    lines = findings(outcomes, metric="val_boundary_iou")
    kind = next(line for line in lines if line.startswith("Loss kind"))
    assert kind.startswith(
        "Loss kind: too few trials to tell (a group needs 3 or more); bce has the highest mean val_boundary_iou so far "
        "(bce: n=2, mean 0.75 ± 0, best 0.75 (too few to tell); focal:"
    )
    width = next(line for line in lines if line.startswith("Edge width"))
    assert "; 2 px has the highest" in width or "; 3 px has the highest" in width
    assert "1 px: n=2, mean 0.6 ± 0.4243, best 0.9 (too few to tell)" in width


def test_importances_are_named_most_important_first_at_most_three() -> None:
    outcomes = [_o(i, 0.8) for i in range(10)]
    lines = findings(
        outcomes, metric="val_iou", importances={"loss.kind": 0.1, "loss.edge_lambda": 0.7, "a": 0.15, "b": 0.05}
    )
    assert lines[-1] == (
        "Importance (share of the variation in val_iou Optuna attributes to each; from 10 complete trials): "
        "loss.edge_lambda (0.7), then a (0.15), then loss.kind (0.1)."
    )


def test_importances_from_fewer_than_ten_complete_trials_are_rough() -> None:
    lines = findings([_o(i, 0.8) for i in range(9)], metric="val_iou", importances={"a": 0.6, "b": 0.4})
    assert lines[-1] == (
        "Importance (share of the variation in val_iou Optuna attributes to each; rough: from only 9 complete "
        "trial(s), and fewer than 10 say little): a (0.6), then b (0.4)."
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
        "Edge profile: too few trials to tell (a group needs 3 or more); soft has the highest mean val_iou so far "
        "(soft: n=2, mean 0.82 ± 0.02828, best 0.84 (too few to tell); "
        "hard: n=2, mean 0.8 ± 0.07071, best 0.85 (too few to tell))."
    )


@pytest.mark.parametrize(
    ("series", "warned"),
    [
        pytest.param({1: 0.5, 2: 0.6, 3: 0.7}, True, id="best-at-the-last"),
        pytest.param({1: 0.5, 2: 0.7, 3: 0.6}, False, id="best-before-the-last"),
        pytest.param({1: 0.5, 2: 0.7, 3: 0.7}, False, id="a-tie-is-the-earlier-epoch"),
        pytest.param({1: 0.5}, False, id="one-epoch-says-nothing"),
    ],
)
def test_the_best_trial_still_improving_at_its_last_epoch_is_warned_of(series: dict[int, float], warned: bool) -> None:
    line = last_epoch_finding(4, series, metric="val_iou")
    if warned:
        assert line == (
            "Trial 4 (the best) was still improving at the last epoch: more epochs may help "
            "(its best val_iou, 0.7, came at epoch 3, its last)."
        )
    else:
        assert line is None
