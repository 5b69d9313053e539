"""The ``study`` CLI: run end to end, inspect, export, enqueue, delete; bad study files exit 2."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from edgesearch.cli import app
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.studies import create_study, load_study
from tests.helpers import merge, tiny_study, write_folder

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def _raw(name: str = "cli", **extra: Any) -> dict[str, Any]:
    space = {"loss.kind": {"choices": ["bce", "focal"]}, "loss.edge_width": {"choices": [1, 2, 3]}}
    return tiny_study(name, **merge({"n_trials": 2, "space": space}, extra))


def _file(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def filled(sqlite_url: str) -> str:
    """A study with two finished trials told by hand (no training: these tests are about the CLI)."""
    study, _ = create_study(StudyConfig.from_dict(_raw(), source="test"), sqlite_url)
    for value, kind in ((0.7, "bce"), (0.8, "focal")):
        study.enqueue_trial({"loss.edge_lambda": 0.1, "loss.kind": kind, "loss.edge_width": 2})
        trial = study.ask()
        trial.suggest_float("loss.edge_lambda", 0.0, 0.5)
        trial.suggest_categorical("loss.kind", ["bce", "focal"])
        trial.suggest_categorical("loss.edge_width", [1, 2, 3])
        trial.report(value - 0.1, 1)
        trial.report(value, 2)
        trial.set_user_attr("history", [{"epoch": 1, "val_iou": value - 0.1}, {"epoch": 2, "val_iou": value}])
        trial.set_user_attr("run_dir", f"/runs/{kind}")
        study.tell(trial, value)
    return sqlite_url


@pytest.mark.slow
def test_study_run_trains_the_study_to_n_trials_and_prints_the_next_commands(tmp_path: Path, sqlite_url: str) -> None:
    path = _file(tmp_path, _raw("e2e"))
    result = runner.invoke(
        app, ["study", "run", str(path), "--storage", sqlite_url, "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 0, result.output
    assert "e2e: 2/2 finished" in result.output
    assert "edgesearch study report e2e" in result.output and "edgesearch dashboard" in result.output
    study, _ = load_study("e2e", sqlite_url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    # Each trial's pictures and weights are in the artifact store, as optuna-dashboard lists them.
    artifacts = tmp_path / "artifacts"
    for trial in trials:
        metas = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
        assert sorted(m.filename for m in metas) == ["best.pt", "curves.png", "edges.png"]
        assert all((artifacts / m.artifact_id).is_file() for m in metas)
    # Running it again finds the study complete and trains nothing more.
    again = runner.invoke(app, ["study", "run", str(path), "--storage", sqlite_url, "--runs-dir", str(tmp_path / "r2")])
    assert again.exit_code == 0, again.output
    assert "study complete" in again.output
    assert not (tmp_path / "r2").exists()


BAD_FILES = [
    pytest.param({"colour": "red"}, "colour", id="unknown-key"),
    pytest.param({"space": {"loss.nonsense": {"low": 0.0, "high": 1.0}}}, "loss.nonsense", id="not-a-field"),
    pytest.param({"space": {"loss.edge_lambda": {"low": 0.4, "high": 0.1}}}, "loss.edge_lambda", id="low-above-high"),
    pytest.param({"space": {"loss.edge_lambda": {"low": 0.0, "high": 1.5}}}, "1.0", id="lambda-outside-0-1"),
    pytest.param({"sampler": {"kind": "bayes"}}, "tpe", id="unknown-sampler"),
]


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize(("extra", "named"), BAD_FILES)
def test_a_bad_study_file_exits_2_with_one_clear_line_and_leaves_storage_untouched(
    tmp_path: Path, command: str, extra: dict[str, Any], named: str
) -> None:
    raw = _raw("bad")
    extra = dict(extra)  # the parameter is shared by both commands
    if "space" in extra:
        raw["space"] = extra.pop("space")
    raw = merge(raw, extra)
    path = _file(tmp_path, raw)
    db = tmp_path / "untouched.db"
    result = runner.invoke(app, ["study", command, str(path), "--storage", f"sqlite:///{db}"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and named in lines[0]
    assert "Traceback" not in result.output
    assert not db.exists()


def test_study_show_lists_trials_best_first(filled: str) -> None:
    result = runner.invoke(app, ["study", "show", "cli", "--storage", filled])
    assert result.exit_code == 0, result.output
    assert "2/2 finished" in result.output
    assert result.output.index("0.8000") < result.output.index("0.7000")


def _ask(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("loss.edge_lambda", 0.0, 0.5)
    trial.suggest_categorical("loss.kind", ["bce", "focal"])
    trial.suggest_categorical("loss.edge_width", [1, 2, 3])
    return trial


def test_study_show_says_where_each_running_trial_stands_and_the_studys_eta(sqlite_url: str) -> None:
    study, _ = create_study(StudyConfig.from_dict(_raw(n_trials=4), source="test"), sqlite_url)
    study.tell(_ask(study), 0.7)
    running = _ask(study)  # trial 1: two epochs of four reported
    running.set_user_attr("config", {"epochs": 4})
    running.report(0.6, 1)
    running.report(0.75, 2)
    _ask(study)  # trial 2: no epoch yet
    result = runner.invoke(app, ["study", "show", "cli", "--storage", sqlite_url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # Times depend on how fast this test runs: their form is checked, the rest exactly.
    duration = r"(\d+[dhm] )?\d+[dhms]"
    assert re.fullmatch(rf"study cli: 1/4 finished .*, 2 running; best 0\.7000; ETA {duration}", lines[0])
    assert re.fullmatch(
        rf"trial 1 running for {duration}, epoch 2/4 \(val_iou 0\.75\), \d+\.\d s/epoch, ETA {duration}", lines[1]
    )
    assert re.fullmatch(rf"trial 2 running for {duration}, no epoch finished yet", lines[2])


def test_study_show_says_why_it_has_no_eta(sqlite_url: str) -> None:
    study, _ = create_study(StudyConfig.from_dict(_raw(n_trials=4), source="test"), sqlite_url)
    _ask(study)
    shown = runner.invoke(app, ["study", "show", "cli", "--storage", sqlite_url])
    assert "; ETA -: no trial has finished yet to time the others by" in shown.output.splitlines()[0]


def test_study_best_json_gives_the_best_trial(filled: str) -> None:
    result = runner.invoke(app, ["study", "best", "cli", "--storage", filled, "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["value"] == 0.8 and record["run_dir"] == "/runs/focal" and record["params"]["loss.kind"] == "focal"


def test_study_list_names_every_study(filled: str) -> None:
    result = runner.invoke(app, ["study", "list", "--storage", filled])
    assert result.exit_code == 0 and "cli" in result.output and "best 0.8000" in result.output


def test_export_csv_has_one_row_per_trial_with_params(filled: str) -> None:
    result = runner.invoke(app, ["study", "export", "cli", "--storage", filled, "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["value"] for row in rows] == ["0.7", "0.8"]
    assert [row["params.loss.kind"] for row in rows] == ["bce", "focal"]
    assert [row["epochs"] for row in rows] == ["2", "2"] and rows[0]["state"] == "COMPLETE"


def test_export_json_to_a_file_includes_histories(tmp_path: Path, filled: str) -> None:
    target = tmp_path / "trials.json"
    result = runner.invoke(
        app, ["study", "export", "cli", "--storage", filled, "--format", "json", "--out", str(target)]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(target.read_text())
    assert payload["study"] == "cli" and len(payload["trials"]) == 2
    assert payload["trials"][1]["intermediate_values"] == {"1": pytest.approx(0.7), "2": 0.8}
    assert payload["trials"][1]["history"][-1]["val_iou"] == 0.8


def test_export_rejects_an_unknown_format(filled: str) -> None:
    result = runner.invoke(app, ["study", "export", "cli", "--storage", filled, "--format", "xml"])
    assert result.exit_code == 2 and "xml" in result.output


def test_enqueue_adds_a_waiting_trial_with_exactly_those_values(sqlite_url: str) -> None:
    create_study(StudyConfig.from_dict(_raw("enq"), source="test"), sqlite_url)
    args = ["study", "enqueue", "enq", "loss.edge_lambda=0.15", "loss.kind=focal", "loss.edge_width=2"]
    result = runner.invoke(app, [*args, "--storage", sqlite_url])
    assert result.exit_code == 0, result.output
    study, _ = load_study("enq", sqlite_url)
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.system_attrs["fixed_params"] == {
        "loss.edge_lambda": 0.15,
        "loss.kind": "focal",
        "loss.edge_width": 2,
    }


@pytest.mark.parametrize(
    ("assignment", "named"),
    [
        ("loss.edge_lambda=0.9", "loss.edge_lambda"),
        ("loss.kind=dice", "bce"),
        ("optim.lr=1e-3", "not a path of space"),
        ("loss.edge_lambda", "PATH=VALUE"),
    ],
)
def test_enqueue_rejects_points_outside_the_space(sqlite_url: str, assignment: str, named: str) -> None:
    create_study(StudyConfig.from_dict(_raw("enq"), source="test"), sqlite_url)
    result = runner.invoke(app, ["study", "enqueue", "enq", assignment, "--storage", sqlite_url])
    assert result.exit_code == 2, result.output
    assert named in result.stderr and "Traceback" not in result.output
    study, _ = load_study("enq", sqlite_url)
    assert study.get_trials() == []


def test_delete_needs_confirmation_and_removes_the_study(filled: str) -> None:
    declined = runner.invoke(app, ["study", "delete", "cli", "--storage", filled], input="n\n")
    assert declined.exit_code == 1
    assert "cli" in runner.invoke(app, ["study", "list", "--storage", filled]).output
    result = runner.invoke(app, ["study", "delete", "cli", "--storage", filled, "--yes"])
    assert result.exit_code == 0, result.output
    assert "deleted study cli (2 trials)" in result.output
    assert "no studies" in runner.invoke(app, ["study", "list", "--storage", filled]).output


def test_delete_of_a_missing_study_exits_2(sqlite_url: str) -> None:
    create_study(StudyConfig.from_dict(_raw("kept"), source="test"), sqlite_url)
    result = runner.invoke(app, ["study", "delete", "gone", "--storage", sqlite_url, "--yes"])
    assert result.exit_code == 2 and "kept" in result.stderr


def test_export_writes_through_a_symlink_and_into_a_stream_and_dash_is_stdout(tmp_path: Path, filled: str) -> None:
    args = ["study", "export", "cli", "--storage", filled, "--format", "csv", "--out"]
    dash = runner.invoke(app, [*args, "-"])
    assert dash.exit_code == 0 and dash.stdout.startswith("number,state,value")
    assert not (tmp_path / "-").exists()

    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert runner.invoke(app, [*args, str(link)]).exit_code == 0
    assert link.is_symlink() and real.read_text() == dash.stdout

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    assert runner.invoke(app, [*args, str(fifo)]).exit_code == 0
    reader.join(timeout=30)
    assert received == [dash.stdout] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_export_refuses_a_folder_and_names_the_option(tmp_path: Path, filled: str) -> None:
    result = runner.invoke(app, ["study", "export", "cli", "--storage", filled, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--out" in result.stderr and "is a folder" in result.stderr


@pytest.mark.slow
def test_two_studies_of_one_name_never_share_runs_and_predict_refuses_a_replaced_checkpoint(tmp_path: Path) -> None:
    runs, artifacts = tmp_path / "runs", tmp_path / "artifacts"
    urls = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    for seed, url in enumerate(urls):
        # Another training seed, so that the two studies' models differ (the same seed trains the same weights).
        study_file = _file(tmp_path, _raw("twin", n_trials=1, trainer={"seed": seed}))
        args = [
            "study",
            "run",
            str(study_file),
            "--storage",
            url,
            "--runs-dir",
            str(runs),
            "--artifacts",
            str(artifacts),
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    folders = sorted(path.name for path in runs.iterdir())
    assert len(folders) == 2 and all(name.startswith("twin-") for name in folders)
    checkpoints = []
    for url in urls:
        (trial,) = load_study("twin", url)[0].get_trials()
        checkpoints.append(Path(trial.user_attrs["best_checkpoint"]))
        assert json.loads((Path(trial.user_attrs["run_dir"]) / "trial.json").read_text())["study"] == "twin"
    assert checkpoints[0] != checkpoints[1]

    image = sorted((write_folder(tmp_path / "inputs", n=1, size=32) / "images").iterdir())[0]
    predict = ["predict", "--study", "twin", str(image), "--storage", urls[0], "--device", "cpu"]
    assert runner.invoke(app, [*predict, "--out", str(tmp_path / "ok")]).exit_code == 0
    checkpoints[0].write_bytes(checkpoints[1].read_bytes())  # the other study's weights at this path
    refused = runner.invoke(app, [*predict, "--out", str(tmp_path / "masks")])
    assert refused.exit_code == 2, refused.output
    assert "is not the checkpoint this trial recorded" in refused.stderr
    assert not (tmp_path / "masks").exists()


MARKUP = ("data/q[/b]", "data/[bold]x")
"""Data roots that rich would read as markup: a closing tag that opens nothing, and a style."""


def test_markup_in_values_names_and_paths_is_printed_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/study.db"
    raw = tiny_study("markup", n_trials=3, space={"data.root": {"choices": list(MARKUP)}})
    study, _ = create_study(StudyConfig.from_dict(raw, source="test"), url)
    for value, root in ((0.8, MARKUP[0]), (0.7, MARKUP[1])):
        study.enqueue_trial({"loss.edge_lambda": 0.1, "data.root": root})
        trial = study.ask()
        trial.suggest_float("loss.edge_lambda", 0.0, 0.5)
        trial.suggest_categorical("data.root", list(MARKUP))
        trial.set_user_attr("history", [{"epoch": 1, "val_iou": value}])
        trial.set_user_attr("best_checkpoint", f"{tmp_path}/runs[/b]/{root}/best.pt")
        study.tell(trial, value)
    storage = ["--storage", url]

    show = runner.invoke(app, ["study", "show", "markup", *storage])
    assert show.exit_code == 0, show.output
    assert all(root in show.stdout for root in MARKUP)
    best = runner.invoke(app, ["study", "best", "markup", *storage])
    assert best.exit_code == 0, best.output
    assert f"data.root = {MARKUP[0]}" in best.stdout
    assert f"checkpoint: {tmp_path}/runs[/b]/{MARKUP[0]}/best.pt" in best.stdout
    enqueue = runner.invoke(app, ["study", "enqueue", "markup", f"data.root={MARKUP[1]}", *storage])
    assert enqueue.exit_code == 0, enqueue.output
    assert f"data.root={MARKUP[1]}" in enqueue.stdout
    report = runner.invoke(app, ["study", "report", "markup", *storage, "--out", "rep[/b]"])
    assert report.exit_code == 0, report.output
    assert "report: rep[/b]/report.html" in report.stdout and (tmp_path / "rep[" / "b]" / "report.html").is_file()
    export = runner.invoke(app, ["study", "export", "markup", *storage, "--out", "e[bold]x.csv"])
    assert export.exit_code == 0, export.output
    assert "wrote 3 trials to e[bold]x.csv" in export.stderr


@pytest.mark.parametrize(
    "metric", ["val_boundary_iou", ["val_iou", "val_boundary_iou"]], ids=["one-objective", "two-objectives"]
)
def test_study_create_names_the_objectives_after_the_configured_metrics(
    tmp_path: Path, sqlite_url: str, metric: str | list[str]
) -> None:
    path = _file(tmp_path, _raw("named", metric=metric))
    created = runner.invoke(app, ["study", "create", str(path), "--storage", sqlite_url])
    assert created.exit_code == 0, created.output
    expected = [metric] if isinstance(metric, str) else metric
    assert optuna.load_study(study_name="named", storage=sqlite_url).metric_names == expected


def test_a_worker_names_the_objectives_of_a_study_created_without_names(tmp_path: Path, sqlite_url: str) -> None:
    import contextlib
    import sqlite3

    from edgesearch.searcher.run.trial import TrialOutcome
    from edgesearch.searcher.run.worker import run_worker

    create_study(StudyConfig.from_dict(_raw("older", n_trials=1), source="test"), sqlite_url)
    # As an older edgesearch left it: no metric names stored (Optuna keeps them under this system attribute).
    with contextlib.closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as connection:
        connection.execute("DELETE FROM study_system_attributes WHERE key = 'study:metric_names'")
        connection.commit()
    assert optuna.load_study(study_name="older", storage=sqlite_url).metric_names is None

    def stand_in(trial: optuna.Trial, config: StudyConfig, **kwargs: object) -> TrialOutcome:
        return TrialOutcome(trial.number, TrialState.COMPLETE, 0.5, 1)

    run_worker("older", sqlite_url, runs_dir=tmp_path / "runs", trial_runner=stand_in)
    assert optuna.load_study(study_name="older", storage=sqlite_url).metric_names == ["val_iou"]


def test_a_read_only_load_builds_no_sampler_and_a_worker_gets_the_studys(sqlite_url: str) -> None:
    # A grid sampler lists every point of its grid when it is built; a command that only looks never asks.
    raw = {**_raw("grid", sampler={"kind": "grid", "seed": 0}), "space": {"loss.kind": {"choices": ["bce", "focal"]}}}
    create_study(StudyConfig.from_dict(raw, source="test"), sqlite_url)
    looked, _ = load_study("grid", sqlite_url, read_only=True)
    assert not isinstance(looked.sampler, optuna.samplers.GridSampler)
    worked, _ = load_study("grid", sqlite_url)
    assert isinstance(worked.sampler, optuna.samplers.GridSampler)
