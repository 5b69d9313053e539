"""Studies of two objectives (``metric: [val_iou, val_boundary_iou]``): refused where Optuna cannot run
them, run by real workers, and read back by ``study best``/``predict --study`` through ``--pick``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner, Result

from edgesearch.cli import app
from edgesearch.cli.study_progress import format_counts
from edgesearch.errors import ConfigError
from edgesearch.searcher.run.trial import TrialOutcome
from edgesearch.searcher.run.worker import run_worker
from edgesearch.searcher.study.best import front_trials
from edgesearch.searcher.study.config import NoPrunerConfig, PercentilePrunerConfig, StudyConfig
from edgesearch.searcher.study.front import knee
from edgesearch.searcher.study.studies import create_study, load_study, trial_counts
from edgesearch.trainer.callbacks import Callback
from tests.helpers import TINY_TRAINER, merge, write_folder

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

runner = CliRunner()
PAIR = ["val_iou", "val_boundary_iou"]


def _raw(name: str = "pareto", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "metric": PAIR,
        "n_trials": 3,
        "sampler": {"kind": "random", "seed": 0},
        "trainer": merge(TINY_TRAINER, {"epochs": 2}),
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}, "loss.kind": {"choices": ["bce", "focal"]}},
    }
    return merge(base, extra)


def _invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(arg) for arg in args])


# --------------------------------------------------------------------------- the study file


def test_a_list_metric_makes_a_study_of_two_objectives_that_prunes_nothing_by_default() -> None:
    config = StudyConfig.from_dict(_raw(), source="test")
    assert config.objectives == ("val_iou", "val_boundary_iou") and config.multi_objective
    assert config.pruner == NoPrunerConfig()
    assert StudyConfig.from_dict(json.loads(json.dumps(config.to_dict())), source="stored") == config
    # One metric keeps the percentile pruner as its default.
    single = StudyConfig.from_dict({**_raw(), "metric": "val_boundary_iou"}, source="test")
    assert single.objectives == ("val_boundary_iou",) and not single.multi_objective
    assert single.pruner == PercentilePrunerConfig()


@pytest.mark.parametrize(
    ("extra", "field", "named"),
    [
        pytest.param({"metric": []}, "metric", ["[]", "[val_iou, val_boundary_iou]"], id="empty-list"),
        pytest.param({"metric": ["val_iou", "val_iou"]}, "metric", ["'val_iou', 'val_iou'"], id="twice"),
        pytest.param({"metric": ["val_iou", "accuracy"]}, "metric", ["'accuracy'"], id="unknown-name"),
        pytest.param({"metric": ["val_iou", "val_edge_corr"]}, "metric", ["'val_edge_corr'"], id="other-pair"),
        pytest.param({"metric": ["val_boundary_iou", "val_iou"]}, "metric", ["in this order"], id="reversed"),
        pytest.param({"metric": [["val_iou"]]}, "metric", ["[['val_iou']]"], id="nested"),
        pytest.param({"pruner": {"kind": "median"}}, "pruner.kind", ["'median'", "{kind: none}"], id="median"),
        pytest.param({"pruner": {"kind": "hyperband"}}, "pruner.kind", ["'hyperband'", "cannot prune"], id="hyperband"),
        pytest.param({"sampler": {"kind": "cmaes"}}, "sampler.kind", ["'cmaes'", "tpe, random, grid"], id="cmaes"),
    ],
)
def test_a_study_of_two_objectives_that_optuna_cannot_run_is_refused_in_one_line(
    tmp_path: Path, extra: dict[str, Any], field: str, named: list[str]
) -> None:
    raw = {**_raw(), **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as caught:
        StudyConfig.from_yaml(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: {field}: "), lines
    assert all(text in lines[0] for text in named), lines[0]
    assert "allowed:" in lines[0]


def test_creating_a_refused_study_exits_2_with_one_line_and_writes_no_database(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_raw(pruner={"kind": "median"})))
    db = tmp_path / "untouched.db"
    result = _invoke("study", "create", path, "--storage", f"sqlite:///{db}")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pruner.kind" in lines[0] and "Traceback" not in result.output, result.stderr
    assert not db.exists()


def test_the_study_is_created_with_two_maximised_objectives(sqlite_url: str) -> None:
    study, created = create_study(StudyConfig.from_dict(_raw(), source="test"), sqlite_url)
    assert created and study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MAXIMIZE]


# --------------------------------------------------------------------------- the samplers that take two objectives


def _trade_off(
    trial: optuna.Trial,
    config: StudyConfig,
    *,
    runs_dir: Path,
    artifact_store: object,
    callbacks: Sequence[Callback],
) -> TrialOutcome:
    """A stand-in trial: a higher edge lambda buys val_boundary_iou with val_iou."""
    from edgesearch.searcher.study.space import sample

    lam = sample(trial, config.space, config.base_config).loss.edge_lambda
    return TrialOutcome(trial.number, TrialState.COMPLETE, None, 1, values=(0.9 - lam / 2, 0.4 + lam))


def _run_trade_off(tmp_path: Path, url: str, name: str, kind: str, n_trials: int) -> None:
    space = {
        "loss.edge_lambda": {"choices": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]},
        "loss.kind": {"choices": ["bce", "focal"]},
    }
    raw = {**_raw(name, n_trials=n_trials, sampler={"kind": kind, "seed": 0}), "space": space}
    create_study(StudyConfig.from_dict(raw, source="test"), url)
    summary = run_worker(name, url, runs_dir=tmp_path / "runs", trial_runner=_trade_off)
    assert summary.count(TrialState.COMPLETE) == n_trials, summary.stopped_because
    study, _ = load_study(name, url)
    for trial in study.get_trials():
        lam = trial.params["loss.edge_lambda"]
        assert trial.values == pytest.approx([0.9 - lam / 2, 0.4 + lam])
    # Every trial trades one metric for the other, so every one is on the front.
    assert len(front_trials(study)) == n_trials


@pytest.mark.parametrize("kind", ["tpe", "random", "grid"])
def test_every_allowed_sampler_runs_a_study_of_two_objectives(tmp_path: Path, sqlite_url: str, kind: str) -> None:
    # TPE samples by itself only after its 10 random start-up trials: 12 trials reach its two-objective path.
    _run_trade_off(tmp_path, sqlite_url, f"sampler-{kind}", kind, 12)


def test_a_study_of_two_objectives_runs_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    _run_trade_off(tmp_path, postgres_url, "pg-pareto", "tpe", 3)


# --------------------------------------------------------------------------- a real study, end to end


@dataclass(frozen=True)
class Ran:
    url: str
    root: Path
    study: optuna.Study
    config: StudyConfig
    trials: list[FrozenTrial]

    def number_of(self, index: int) -> int:
        return self.trials[index].number


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """Three trials of a tiny two-objective study, trained by a real worker."""
    root = tmp_path_factory.mktemp("pareto")
    url = f"sqlite:///{root}/study.db"
    create_study(StudyConfig.from_dict(_raw(), source="test"), url)
    summary = run_worker("pareto", url, runs_dir=root / "runs")
    assert summary.stopped_because == "study complete"
    study, config = load_study("pareto", url)
    return Ran(url, root, study, config, sorted(study.get_trials(), key=lambda t: t.number))


@pytest.mark.slow
def test_each_trial_holds_both_metrics_of_the_epoch_its_best_checkpoint_holds(ran: Ran) -> None:
    assert [t.state for t in ran.trials] == [TrialState.COMPLETE] * 3
    for trial in ran.trials:
        history = trial.user_attrs["history"]
        assert [row["epoch"] for row in history] == [1, 2]
        # The trainer keeps the first epoch of the highest val_iou in best.pt.
        epoch = max(history, key=lambda row: (row["val_iou"], -row["epoch"]))
        assert trial.values == [epoch["val_iou"], epoch["val_boundary_iou"]]
        assert trial.intermediate_values == {}  # Optuna takes no reports from a trial of two objectives
        assert Path(trial.user_attrs["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_the_progress_counts_show_the_size_of_the_front_instead_of_a_best_value(ran: Ran) -> None:
    counts = trial_counts(ran.study)
    front = front_trials(ran.study)
    assert (counts.complete, counts.best, counts.front) == (3, None, len(front))
    assert format_counts(counts, 3).endswith(f"0 running; front {len(front)}")


@pytest.mark.slow
def test_study_best_picks_the_knee_of_the_front(ran: Ran) -> None:
    result = _invoke("study", "best", "pareto", "--storage", ran.url, "--pick", "knee", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    expected = ran.trials[knee([t.values for t in ran.trials])]
    assert record["trial"] == expected.number and record["pick"] == "knee"
    assert record["values"] == dict(zip(PAIR, expected.values, strict=True))
    assert record["checkpoint"] == expected.user_attrs["best_checkpoint"]
    text = _invoke("study", "best", "pareto", "--storage", ran.url, "--pick", "knee")
    assert text.exit_code == 0 and f"best trial {expected.number} (knee of the Pareto front): val_iou" in text.stdout


@pytest.mark.slow
def test_study_best_without_pick_names_the_choices_and_the_fronts_size_in_one_line(ran: Ran) -> None:
    result = _invoke("study", "best", "pareto", "--storage", ran.url)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    size = len(front_trials(ran.study))
    assert f"a Pareto front of {size} trial(s)" in lines[0] and "--pick val_iou|val_boundary_iou|knee" in lines[0]


@pytest.mark.slow
def test_predict_with_the_best_val_iou_point_uses_that_trials_checkpoint(ran: Ran, tmp_path: Path) -> None:
    images = write_folder(tmp_path / "data", n=2, size=32) / "images"
    out_dir = tmp_path / "masks"
    result = _invoke(
        "predict", "--study", "pareto", "--pick", "val_iou", "--storage", ran.url, images, "--out", out_dir
    )
    assert result.exit_code == 0, result.output
    top = max(ran.trials, key=lambda t: (t.values[0], t.values[1], -t.number))
    assert f"model: study pareto trial {top.number} (val_iou of the Pareto front, val_iou " in result.stdout
    assert top.user_attrs["best_checkpoint"] in result.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == ["img00.png", "img01.png"]


@pytest.mark.slow
def test_the_report_marks_the_knee_and_shows_it_as_the_best_trial(ran: Ran, tmp_path: Path) -> None:
    out_dir = tmp_path / "report"
    result = _invoke("study", "report", "pareto", "--storage", ran.url, "--out", out_dir)
    assert result.exit_code == 0, result.output
    data = json.loads((out_dir / "report.json").read_text())
    knee_number = ran.trials[knee([t.values for t in ran.trials])].number
    assert data["study"]["metric"] == PAIR
    assert data["pareto"]["knee"] == knee_number
    points = {p["number"]: (p["x"], p["y"]) for p in data["pareto"]["points"]}
    assert points == {t.number: tuple(t.values) for t in ran.trials}
    assert data["best_trial"]["number"] == knee_number and data["best_trial"]["values"]["val_iou"] is not None
    assert data["findings"][1].startswith("Pareto front of val_iou and val_boundary_iou: ")
    assert f"knee trial {knee_number} " in data["findings"][1]
    html = (out_dir / "report.html").read_text()
    assert f"knee: trial {knee_number}" in html and "the knee of the Pareto front" in html
    assert (out_dir / "pareto.png").is_file()


@pytest.mark.slow
def test_show_export_and_list_read_both_metrics(ran: Ran) -> None:
    shown = _invoke("study", "show", "pareto", "--storage", ran.url)
    assert shown.exit_code == 0, shown.output
    assert "val_boundary_iou" in shown.stdout and "front" in shown.stdout
    exported = _invoke("study", "export", "pareto", "--storage", ran.url)
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(float(r["values.val_iou"]), float(r["values.val_boundary_iou"])) for r in rows] == [
        tuple(t.values) for t in ran.trials
    ]
    assert [r["epochs"] for r in rows] == ["2"] * 3
    as_json = json.loads(_invoke("study", "export", "pareto", "--storage", ran.url, "--format", "json").stdout)
    assert as_json["metric"] == PAIR
    listed = _invoke("study", "list", "--storage", ran.url)
    assert listed.exit_code == 0 and listed.stdout.split() == ["pareto", "3", "trials", "best", "-"]
