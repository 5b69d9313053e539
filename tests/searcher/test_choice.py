"""A study's choice under a rule and how sure it is: on hand-made candidates, on a SQLite study with its
confirmations, and through ``study best --rule``."""

from __future__ import annotations

import json
import math
from html import escape as html_escape
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from edgesearch.cli import app
from edgesearch.cli.study_best import Rule
from edgesearch.errors import UserError
from edgesearch.searcher.results.report import build_report
from edgesearch.searcher.study import choosing
from edgesearch.searcher.study.choice import Noise, choose, describe, seed_noise, study_choice
from edgesearch.searcher.study.choosing import Candidate, shrunk, unit_point
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.confirm import load_companion, request
from edgesearch.searcher.study.studies import create_study
from tests.helpers import tiny_study

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def test_the_seed_noise_is_the_sd_pooled_over_configurations_of_two_fresh_values_or_more() -> None:
    # (0.80, 0.84, 0.76): variance 0.0016 over 2 degrees of freedom; (0.70, 0.72): 0.0002 over 1; (0.9,): none
    noise = seed_noise([(0.80, 0.84, 0.76), (0.70, 0.72), (0.9,)])
    assert noise is not None
    assert noise.sd == pytest.approx(math.sqrt((2 * 0.0016 + 1 * 0.0002) / 3))
    assert (noise.retrainings, noise.configurations) == (5, 2)


def test_the_seed_noise_is_unknown_without_a_configuration_of_two_fresh_values() -> None:
    assert seed_noise([(0.9,), ()]) is None


def test_the_highest_value_within_the_noise_of_a_difference_says_so() -> None:
    choice = choose([Candidate(0, 0.90), Candidate(1, 0.89), Candidate(2, 0.5)], "highest", Noise(0.01, 9, 3))
    # one run each: the noise of the difference is 0.01 * sqrt(1/1 + 1/1) = 0.01414 > the margin 0.01
    assert (choice.chosen.number, choice.runner_up and choice.runner_up.number) == (0, 1)
    assert choice.margin == pytest.approx(0.01) and choice.difference_noise == pytest.approx(0.01 * math.sqrt(2))
    assert choice.beyond_noise is False
    assert describe(choice) == (
        "Chosen by the highest value: trial 0, 0.9 over 1 run(s); runner-up trial 1 by 0.01; "
        "the seed noise of a difference is 0.01414 (from 9 re-trainings of 3 configuration(s)): within the noise"
    )


def test_the_confirmed_mean_weighs_its_margin_by_the_runs_behind_each_mean() -> None:
    candidates = [
        Candidate(0, 0.95, (0.70, 0.72)),
        Candidate(1, 0.90, (0.80, 0.82, 0.84)),
        Candidate(2, 0.99),  # never re-trained: not a candidate of this rule
    ]
    choice = choose(candidates, "confirmed", Noise(0.02, 5, 2))
    # 0.82 over 3 against 0.71 over 2: margin 0.11 > 0.02 * sqrt(1/3 + 1/2) = 0.01826
    assert (choice.chosen.number, choice.chosen.estimate, choice.chosen.sd) == (
        1,
        pytest.approx(0.82),
        pytest.approx(0.02),
    )
    assert choice.runner_up is not None and choice.runner_up.number == 0
    assert choice.difference_noise == pytest.approx(0.02 * math.sqrt(1 / 3 + 1 / 2)) and choice.beyond_noise is True
    assert describe(choice).endswith("(from 5 re-trainings of 2 configuration(s)): beyond the noise")


def test_without_the_seed_noise_shrinkage_falls_back_to_the_highest_value_and_says_so() -> None:
    choice = choose([Candidate(0, 0.7, (), (0.0,)), Candidate(1, 0.9, (), (1.0,))], "shrinkage", None)
    assert (choice.rule, choice.asked, choice.chosen.number, choice.beyond_noise) == ("highest", "shrinkage", 1, None)
    assert describe(choice) == (
        "Shrinkage needs the seed noise, unknown until `study confirm` re-trains with 2 seeds or more, so chosen by "
        "the highest value: trial 1, 0.9 over 1 run(s); runner-up trial 0 by 0.2; the seed noise is unknown "
        "(`study confirm` with 2 seeds or more measures it)"
    )


def test_the_confirmed_mean_without_a_confirmation_falls_back_to_the_highest_value_and_says_so() -> None:
    choice = choose([Candidate(0, 0.7), Candidate(1, 0.9)], "confirmed", None)
    assert (choice.rule, choice.chosen.number) == ("highest", 1)
    assert describe(choice).startswith("No trial is confirmed yet, so chosen by the highest value: trial 1, ")


def test_a_lone_trial_has_no_runner_up() -> None:
    choice = choose([Candidate(4, 0.8, (0.7, 0.9))], "confirmed", Noise(0.1, 2, 1))
    assert (choice.runner_up, choice.margin, choice.beyond_noise) == (None, None, None)
    assert describe(choice) == (
        "Chosen by the confirmed mean: trial 4, 0.8 over 2 run(s) (sd 0.1414); no runner-up to compare with; "
        "the seed noise is 0.1 (from 2 re-trainings of 1 configuration(s))"
    )


TIES = [
    Candidate(0, 0.8, (0.7, 0.7), (0.0,)),
    Candidate(1, 0.9, (0.7, 0.7), (0.3,)),
    Candidate(2, 0.9, (), (0.6,)),
    Candidate(3, 0.6, (), (1.0,)),
]


@pytest.mark.parametrize(
    ("rule", "pick"),
    [
        ("highest", choosing.highest),
        ("confirmed", choosing.confirmed_mean),
        ("shrinkage", lambda c: choosing.shrinkage(c, noise_sd=0.05)),
    ],
)
def test_a_choice_is_the_rule_of_choosing_of_the_same_name_ties_included(rule: str, pick: Any) -> None:
    assert choose(TIES, rule, Noise(0.05, 4, 2)).chosen.number == pick(TIES).number


def test_the_cli_offers_exactly_the_rules_of_choosing() -> None:
    assert tuple(r.value for r in Rule) == choosing.RULES


def test_an_unknown_rule_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(UserError, match="rule 'luck' is not allowed; allowed: highest, confirmed, shrinkage"):
        choose(TIES, "luck", None)


# --------------------------------------------------------------------------- a SQLite study with confirmations

NAME = "chosen"
SPACE = {"loss.edge_lambda": {"low": 0.0, "high": 0.5}, "loss.kind": {"choices": ["bce", "focal"]}}
DISTRIBUTIONS = {
    "loss.edge_lambda": FloatDistribution(0.0, 0.5),
    "loss.kind": CategoricalDistribution(["bce", "focal"]),
}
# (value, lambda, kind) of the complete trials 0-3; trial 4 failed
TRIALS = [(0.90, 0.10, "bce"), (0.89, 0.12, "bce"), (0.80, 0.40, "focal"), (0.60, 0.45, "focal")]
# What `study confirm --top 2 --seeds 3` measured: trial 0 (the search's best) and trial 1, three fresh seeds each
FRESH = {0: (0.78, 0.80, 0.82), 1: (0.83, 0.84, 0.85)}
# Pooled: variances 0.0004 (sd 0.02) and 0.0001 (sd 0.01), two degrees of freedom each: sqrt(0.001 / 4)
SIGMA = math.sqrt((2 * 0.0004 + 2 * 0.0001) / 4)


def _study(url: str, *, confirmations: bool = True) -> tuple[optuna.Study, StudyConfig]:
    """Study ``chosen`` of TRIALS added by hand, and its confirmations as `study confirm` and the workers make them."""
    config = StudyConfig.from_dict(tiny_study(NAME, space=SPACE), source="test")
    study, _ = create_study(config, url)
    for value, lam, kind in TRIALS:
        params = {"loss.edge_lambda": lam, "loss.kind": kind}
        attrs = {"config": {"seed": 0, "loss": {"edge_lambda": lam, "kind": kind}}}
        study.add_trial(create_trial(params=params, distributions=DISTRIBUTIONS, value=value, user_attrs=attrs))
    study.add_trial(create_trial(state=TrialState.FAIL, params={}, distributions={}))
    if confirmations:
        assert request(study, config, top=2, seeds=3).trials == (0, 1)
        companion = load_companion(study)
        assert companion is not None
        for value in (*FRESH[0], *FRESH[1]):  # the jobs in queue order: trial 0's seeds, then trial 1's
            companion.tell(companion.ask(), value)
    return study, config


def test_a_study_choice_reads_the_complete_trials_their_fresh_seeds_and_the_pooled_noise(sqlite_url: str) -> None:
    study, config = _study(sqlite_url)
    choice = study_choice(study, config, "confirmed")
    assert choice.noise is not None and choice.noise.sd == pytest.approx(SIGMA)
    assert (choice.noise.retrainings, choice.noise.configurations) == (6, 2)
    assert (choice.chosen.number, choice.chosen.runs, choice.chosen.sd) == (1, FRESH[1], pytest.approx(0.01))
    assert choice.runner_up is not None and choice.runner_up.runs == FRESH[0]
    # margin 0.84 - 0.80 = 0.04 against SIGMA * sqrt(1/3 + 1/3) = 0.01291
    assert choice.margin == pytest.approx(0.04) and choice.beyond_noise is True

    highest = study_choice(study, config, "highest")
    # 0.90 against 0.89, one run each: 0.01 within SIGMA * sqrt(2) = 0.02236
    assert (highest.chosen.number, highest.difference_noise, highest.beyond_noise) == (
        0,
        pytest.approx(SIGMA * math.sqrt(2)),
        False,
    )


def test_a_study_choice_by_shrinkage_pulls_each_trial_towards_its_neighbours_in_the_space(sqlite_url: str) -> None:
    study, config = _study(sqlite_url)
    by_hand = [
        Candidate(n, value, FRESH.get(n, ()), unit_point({"loss.edge_lambda": lam, "loss.kind": kind}, SPACE))
        for n, (value, lam, kind) in enumerate(TRIALS)
    ]
    estimates = shrunk(by_hand, noise_sd=SIGMA)
    choice = study_choice(study, config, "shrinkage")
    best = max(estimates, key=lambda n: estimates[n])
    assert best == 1  # trial 0's 0.90 is pulled towards its confirmations' 0.80 and falls behind
    assert (choice.rule, choice.chosen.number) == ("shrinkage", best)
    assert choice.chosen.estimate == pytest.approx(estimates[best])
    assert choice.chosen.runs == (TRIALS[best][0], *FRESH.get(best, ()))


def test_a_study_without_confirmations_has_no_known_noise_and_shrinkage_falls_back(sqlite_url: str) -> None:
    study, config = _study(sqlite_url, confirmations=False)
    choice = study_choice(study, config, "shrinkage")
    assert (choice.rule, choice.chosen.number, choice.noise, choice.beyond_noise) == ("highest", 0, None, None)


def _best(*args: str) -> Any:
    return CliRunner().invoke(app, ["study", "best", NAME, *args])


def test_study_best_rule_prints_the_choice_and_how_sure_it_is(sqlite_url: str) -> None:
    _study(sqlite_url)
    result = _best("--rule", "highest", "--storage", sqlite_url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "best trial 0: value 0.9000"
    assert lines[1] == (
        "Chosen by the highest value: trial 0, 0.9 over 1 run(s); runner-up trial 1 by 0.01; "
        "the seed noise of a difference is 0.02236 (from 6 re-trainings of 2 configuration(s)): within the noise"
    )
    default = json.loads(_best("--json", "--storage", sqlite_url).output)
    # The default rule is the confirmed mean: trial 1's confirmations beat trial 0's.
    assert (default["trial"], default["choice"]["rule"]) == (1, "confirmed")

    record = json.loads(_best("--rule", "confirmed", "--json", "--storage", sqlite_url).output)
    assert record["trial"] == 1 and record["confirmed"]["mean"] == pytest.approx(0.84)
    choice = record["choice"]
    assert (choice["rule"], choice["trial"], choice["n"], choice["runner_up"]["trial"]) == ("confirmed", 1, 3, 0)
    assert choice["noise"] == {"sd": pytest.approx(SIGMA), "retrainings": 6, "configurations": 2}
    assert choice["margin"] == pytest.approx(0.04) and choice["beyond_noise"] is True
    text = _best("--confirmed", "--storage", sqlite_url).output
    assert choice["says"] in text.splitlines()

    shrinkage = json.loads(_best("--rule", "shrinkage", "--json", "--storage", sqlite_url).output)
    assert shrinkage["choice"]["rule"] == "shrinkage" and shrinkage["trial"] == shrinkage["choice"]["trial"]
    assert shrinkage["value"] == TRIALS[shrinkage["trial"]][0]


def test_study_best_without_a_rule_chooses_by_the_default(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _study(sqlite_url)
    monkeypatch.setattr(choosing, "DEFAULT_RULE", "shrinkage")
    record = json.loads(_best("--json", "--storage", sqlite_url).output)
    assert (record["trial"], record["choice"]["rule"]) == (1, "shrinkage")  # the highest value is trial 0


def test_the_report_names_the_choice_of_the_default_rule_and_how_sure_it_is(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, config = _study(sqlite_url)
    for rule, number in (("highest", 0), ("shrinkage", 1)):
        monkeypatch.setattr(choosing, "DEFAULT_RULE", rule)
        build_report(study, config, tmp_path / rule)
        data = json.loads((tmp_path / rule / "report.json").read_text())
        says = describe(study_choice(study, config, rule))
        assert (data["choice"]["rule"], data["choice"]["trial"], data["choice"]["says"]) == (rule, number, says)
        assert data["findings"][0].endswith(f" {says}.")
        assert (data["best_trial"]["number"], data["best_trial"]["sure"]) == (number, says)
        html = (tmp_path / rule / "report.html").read_text()
        assert f"<tr><th>how sure</th><td>{html_escape(says)}</td></tr>" in html
        assert (tmp_path / rule / "best-config.yaml").read_text().startswith(f"# Study {NAME}, trial {number}: ")


def test_study_best_refuses_confirmed_with_another_rule(sqlite_url: str) -> None:
    _study(sqlite_url)
    result = _best("--confirmed", "--rule", "shrinkage", "--storage", sqlite_url)
    assert result.exit_code == 2
    assert "--confirmed is --rule confirmed: it does not go with --rule shrinkage" in result.output
