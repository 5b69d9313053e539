"""The rules of choosing a study's best configuration, on hand-made candidates whose estimates are worked out here."""

from __future__ import annotations

import math

import pytest

from edgesearch.searcher.study.choosing import Candidate, confirmed_mean, highest, shrinkage, shrunk, unit_point
from edgesearch.searcher.study.space import ChoicesSpec, RangeSpec


def _c(number: int, value: float, x: float, confirmations: tuple[float, ...] = ()) -> Candidate:
    """A candidate on a line: one coordinate, so that distances are plain differences."""
    return Candidate(number, value, confirmations, (x,))


def test_highest_is_the_trial_of_the_highest_value_and_the_first_of_a_tie() -> None:
    candidates = [_c(0, 0.7, 0.0), _c(1, 0.9, 0.5), _c(2, 0.9, 1.0)]
    assert highest(candidates).number == 1


def test_the_confirmed_mean_leaves_the_search_value_out_and_ranks_only_confirmed_trials() -> None:
    candidates = [
        _c(0, 0.99, 0.0, (0.78, 0.78)),  # with its search value its mean would be 0.85: the highest
        _c(1, 0.80, 0.5, (0.79, 0.79)),  # with its search value 0.7933
        _c(2, 1.00, 1.0),  # the highest value, never re-trained
    ]
    assert confirmed_mean(candidates).number == 1


def test_the_confirmed_mean_is_the_highest_value_while_nothing_is_confirmed() -> None:
    assert confirmed_mean([_c(0, 0.7, 0.0), _c(1, 0.9, 1.0)]).number == 1


# Three trials close together and one far away. With k = 2 and a seed sd of 0.02 (variance 0.0004), trial 0's
# neighbours are trials 1 and 2 (values 0.70 and 0.60):
#   prior mean m = (0.70 + 0.60) / 2 = 0.65
#   their variance (0.05^2 + 0.05^2) / 2 = 0.0025, less the seed noise: tau^2 = 0.0025 - 0.0004 = 0.0021
#   estimate (m / tau^2 + n x / sigma^2) / (1 / tau^2 + n / sigma^2) with x = 0.80, n = 1
#          = m + w (x - m), w = tau^2 / (tau^2 + sigma^2 / n) = 0.0021 / 0.0025 = 0.84
#          = 0.65 + 0.84 * 0.15 = 0.776
LINE = [_c(0, 0.80, 0.0), _c(1, 0.70, 0.1), _c(2, 0.60, 0.2), _c(3, 0.90, 1.0)]


def test_a_shrinkage_estimate_is_the_posterior_mean_worked_out_by_hand() -> None:
    estimates = shrunk(LINE, noise_sd=0.02, k=2)
    m, tau2, sigma2, x = 0.65, 0.0021, 0.0004, 0.80
    assert estimates[0] == pytest.approx((m / tau2 + x / sigma2) / (1 / tau2 + 1 / sigma2))
    assert estimates[0] == pytest.approx(0.776)


def test_more_runs_of_a_trial_pull_it_less_towards_its_neighbours() -> None:
    once = shrunk(LINE, noise_sd=0.02, k=2)[0]
    # Three confirmations of 0.80: x stays 0.80, n = 4, w = 0.0021 / (0.0021 + 0.0004 / 4) = 0.0021 / 0.0022
    confirmed = [_c(0, 0.80, 0.0, (0.80, 0.80, 0.80)), *LINE[1:]]
    again = shrunk(confirmed, noise_sd=0.02, k=2)[0]
    assert again == pytest.approx(0.65 + 0.0021 / 0.0022 * 0.15)
    assert once < again < 0.80


def test_a_lone_lucky_trial_among_poor_neighbours_is_pulled_below_a_lower_one_whose_neighbours_agree() -> None:
    lucky = [_c(0, 0.90, 0.00), _c(1, 0.60, 0.05), _c(2, 0.62, 0.10), _c(3, 0.58, 0.15)]
    steady = [_c(4, 0.86, 0.90), _c(5, 0.85, 0.85), _c(6, 0.84, 0.95), _c(7, 0.86, 1.00)]
    candidates = lucky + steady
    estimates = shrunk(candidates, noise_sd=0.03, k=3)
    # Each neighbourhood varies less than the seed noise (variance 0.0009): its prior mean takes nearly all,
    # 0.60 for trial 0 and (0.85 + 0.84 + 0.86) / 3 = 0.85 for trial 4.
    assert estimates[0] == pytest.approx(0.60, abs=1e-3)
    assert estimates[4] == pytest.approx(0.85, abs=1e-3)
    assert estimates[0] < estimates[4]
    assert highest(candidates).number == 0
    assert shrinkage(candidates, noise_sd=0.03, k=3) in steady


@pytest.mark.parametrize(
    "candidates",
    [[Candidate(0, 0.9, (0.8,))], [Candidate(0, 0.9, (0.8,), (0.0,)), Candidate(1, 0.1, (), (1.0,))]],
    ids=["alone", "one-neighbour"],
)
def test_with_fewer_than_two_neighbours_the_estimate_is_the_trials_own_mean(candidates: list[Candidate]) -> None:
    assert shrunk(candidates, noise_sd=0.02)[0] == pytest.approx(0.85)


SPACE = {
    "optim.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "loss.edge_lambda": {"low": 0.0, "high": 0.5},
    "loss.kind": {"choices": ["bce", "focal"]},
}


@pytest.mark.parametrize(
    "space",
    [
        SPACE,
        {
            "optim.lr": RangeSpec(low=1e-4, high=1e-2, log=True),
            "loss.edge_lambda": RangeSpec(low=0.0, high=0.5),
            "loss.kind": ChoicesSpec(choices=["bce", "focal"]),
        },
    ],
    ids=["mapping", "study-config"],
)
def test_a_unit_point_scales_log_and_linear_ranges_to_0_1_and_spreads_a_choice(space: dict[str, object]) -> None:
    point = unit_point({"optim.lr": 1e-3, "loss.edge_lambda": 0.125, "loss.kind": "focal"}, space)
    # lr: log(1e-3) is halfway between log(1e-4) and log(1e-2); lambda: 0.125 of 0.5; focal: the second choice
    assert point == pytest.approx((0.5, 0.25, 0.0, math.sqrt(0.5)))


def test_two_different_choices_are_at_distance_1() -> None:
    space = {"loss.kind": SPACE["loss.kind"]}
    assert math.dist(unit_point({"loss.kind": "bce"}, space), unit_point({"loss.kind": "focal"}, space)) == (
        pytest.approx(1.0)
    )
