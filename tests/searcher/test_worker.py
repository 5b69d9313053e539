"""Workers against real storages: enqueued points, pruning, many processes, exact trial counts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from edgesearch.cli import app
from edgesearch.searcher.run.trial import TrialOutcome
from edgesearch.searcher.run.worker import run_worker
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.studies import create_study, load_study
from edgesearch.trainer.callbacks import Callback
from tests.helpers import merge, tiny_study, write_folder

runner = CliRunner()


def _study(name: str, **extra: Any) -> dict[str, Any]:
    return tiny_study(name, **merge({"space": {"loss.kind": {"choices": ["bce", "focal"]}}}, extra))


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_a_worker_runs_enqueued_points_first_and_stops_at_n_trials(tmp_path: Path, sqlite_url: str) -> None:
    raw = _study("enq", enqueue=[{"loss.edge_lambda": 0.15, "loss.kind": "focal"}])
    config = StudyConfig.from_dict(raw, source="test")
    create_study(config, sqlite_url)
    summary = run_worker("enq", sqlite_url, runs_dir=tmp_path / "runs")
    assert summary.stopped_because == "study complete"
    study, _ = load_study("enq", sqlite_url)
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[0].params == {"loss.edge_lambda": 0.15, "loss.kind": "focal"}
    first = trials[0].user_attrs
    assert first["config"]["loss"]["edge_lambda"] == 0.15 and first["config"]["loss"]["kind"] == "focal"
    assert Path(first["run_dir"], "best.pt").is_file()
    assert [row["epoch"] for row in first["history"]] == [1]
    assert trials[0].value == first["history"][0]["val_iou"]


@pytest.mark.slow
def test_hopeless_trials_are_pruned_before_their_last_epoch(tmp_path: Path, sqlite_url: str) -> None:
    good = {"optim.lr": 3.0e-3}
    raw = _study(
        "prune",
        n_trials=4,
        trainer={"epochs": 4, "data": {"image_size": 64, "synthetic": {"n_images": 48}}},
        pruner={"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
        space={"optim.lr": {"low": 1.0e-7, "high": 1.0e-2, "log": True}},
        enqueue=[good, good, {"optim.lr": 1.0e-7}, {"optim.lr": 1.0e-7}],
    )
    raw["space"] = {"optim.lr": {"low": 1.0e-7, "high": 1.0e-2, "log": True}}
    config = StudyConfig.from_dict(raw, source="test")
    create_study(config, sqlite_url)
    run_worker("prune", sqlite_url, runs_dir=tmp_path / "runs")
    study, _ = load_study("prune", sqlite_url)
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.intermediate_values) for t in trials]
    for t in pruned:
        assert 1 <= len(t.intermediate_values) < 4  # stopped early, its reports are in storage


def test_a_worker_runs_its_trials_through_the_given_trial_runner(tmp_path: Path, sqlite_url: str) -> None:
    create_study(StudyConfig.from_dict(_study("runner", n_trials=2), source="test"), sqlite_url)
    seen: list[tuple[int, Path, list[str]]] = []

    def runner(
        trial: optuna.Trial,
        config: StudyConfig,
        *,
        runs_dir: Path,
        artifact_store: object,
        callbacks: Sequence[Callback],
    ) -> TrialOutcome:
        seen.append((trial.number, runs_dir, [type(c).__name__ for c in callbacks]))
        trial.report(0.25, step=1)
        return TrialOutcome(trial.number, TrialState.COMPLETE, 0.25, 1)

    summary = run_worker("runner", sqlite_url, runs_dir=tmp_path / "runs", trial_runner=runner)

    assert summary.stopped_because == "study complete" and summary.count(TrialState.COMPLETE) == 2
    assert [number for number, _, _ in seen] == [0, 1]
    assert all(runs_dir == tmp_path / "runs" and "StopOnRequest" in names for _, runs_dir, names in seen)
    study, _ = load_study("runner", sqlite_url)
    assert [(t.state, t.value, t.intermediate_values) for t in study.get_trials()] == [
        (TrialState.COMPLETE, 0.25, {1: 0.25})
    ] * 2


def _run_three_processes(tmp_path: Path, url: str, name: str) -> subprocess.CompletedProcess[str]:
    path = _write(tmp_path, _study(name, n_trials=6))
    created = runner.invoke(app, ["study", "create", str(path), "--storage", url])
    assert created.exit_code == 0, created.output
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "edgesearch",
            "worker",
            name,
            "--storage",
            url,
            "--processes",
            "3",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )


def _assert_exactly_six(url: str, name: str) -> None:
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6, [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.FAIL, TrialState.RUNNING)]
    run_dirs = [t.user_attrs["run_dir"] for t in finished]
    assert len(set(run_dirs)) == 6  # no trial ran twice


@pytest.mark.slow
def test_three_processes_on_sqlite_finish_exactly_n_trials(tmp_path: Path, sqlite_url: str) -> None:
    proc = _run_three_processes(tmp_path, sqlite_url, "sq")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "database is locked" not in proc.stdout + proc.stderr
    _assert_exactly_six(sqlite_url, "sq")


@pytest.mark.slow
def test_three_processes_on_postgres_finish_exactly_n_trials(tmp_path: Path, postgres_url: str) -> None:
    proc = _run_three_processes(tmp_path, postgres_url, "pg")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_exactly_six(postgres_url, "pg")
    # Our studies are plain Optuna studies: Optuna's own CLI lists the trials.
    listed = subprocess.run(
        [
            str(Path(sys.executable).parent / "optuna"),
            "trials",
            "--study-name",
            "pg",
            "--storage",
            postgres_url,
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(listed.stdout)
    assert sum(1 for row in rows if row["state"] in ("COMPLETE", "PRUNED")) == 6


@pytest.mark.slow
def test_the_live_bar_counts_the_workers_own_trial_and_shows_the_trial_and_study_eta(
    tmp_path: Path, sqlite_url: str
) -> None:
    create_study(StudyConfig.from_dict(_study("bar", n_trials=2, trainer={"epochs": 2}), source="test"), sqlite_url)
    # What a terminal would get: rich draws the bar when told that the pipe is one.
    env = {**os.environ, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "250"}
    proc = subprocess.run(
        [sys.executable, "-m", "edgesearch", "worker", "bar", "--storage", sqlite_url, "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stdout).splitlines()
    bars = [line for line in frames if line.startswith("bar ")]
    # One worker, whose trials run one after the other: while each runs, the bar counts it.
    assert any(re.search(r"complete 0 .* running 1 .* trial ETA \d+s  study ETA - ", line) for line in bars), bars
    # The second trial's bar times the study by the first trial.
    assert any(re.search(r"complete 1 .* running 1 .* study ETA \d+s ", line) for line in bars), bars
    epochs = [line for line in frames if line.startswith("trial 0 epoch")]
    assert re.fullmatch(r"trial 0 epoch 1/2: .*, \d+\.\d s/epoch, ETA \d+s", epochs[0]), epochs


def test_worker_on_a_missing_study_exits_2_and_lists_the_studies(tmp_path: Path, sqlite_url: str) -> None:
    create_study(StudyConfig.from_dict(_study("present"), source="test"), sqlite_url)
    result = runner.invoke(app, ["worker", "absent", "--storage", sqlite_url])
    assert result.exit_code == 2
    assert "absent" in result.stderr and "present" in result.stderr


def test_a_password_in_the_storage_url_is_never_printed() -> None:
    url = "postgresql+psycopg://user:s3cretpw@127.0.0.1:1/db"
    result = runner.invoke(app, ["worker", "x", "--storage", url])
    assert result.exit_code == 2
    assert "s3cretpw" not in result.output
    assert "127.0.0.1" in result.stderr


@pytest.mark.parametrize(
    ("where", "error", "states"),
    [
        ("runner", RuntimeError("a bug outside the trial's own handling"), [TrialState.FAIL]),
        ("start hook", ValueError("the progress view broke"), [TrialState.FAIL]),
        ("runner", KeyboardInterrupt(), [TrialState.FAIL, TrialState.WAITING]),  # handed back: a retry waits
    ],
    ids=["runner-raises", "start-hook-raises", "second-signal"],
)
def test_no_exception_between_ask_and_tell_leaves_a_trial_running(
    sqlite_url: str, tmp_path: Path, where: str, error: BaseException, states: list[TrialState]
) -> None:
    create_study(StudyConfig.from_dict(_study("boom", n_trials=2), source="test"), sqlite_url)

    def runner(trial: optuna.Trial, config: StudyConfig, **kwargs: object) -> TrialOutcome:
        raise error

    def started(trial: optuna.Trial) -> None:
        if where == "start hook":
            raise error

    with pytest.raises(type(error)):
        run_worker("boom", sqlite_url, runs_dir=tmp_path / "runs", trial_runner=runner, on_trial_start=started)
    study, _ = load_study("boom", sqlite_url)
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == states
    if not isinstance(error, KeyboardInterrupt):
        assert trials[0].user_attrs["fail_reason"] == f"{type(error).__name__}: {error}"


@pytest.mark.slow
def test_a_workers_trial_log_says_how_many_images_each_split_has(tmp_path: Path, sqlite_url: str) -> None:
    data = write_folder(tmp_path / "data", n=6)
    raw = _study("counted", n_trials=1, trainer={"data": {"root": str(data), "batch_size": 2}})
    created = runner.invoke(app, ["study", "create", str(_write(tmp_path, raw)), "--storage", sqlite_url])
    assert created.exit_code == 0, created.output
    result = runner.invoke(app, ["worker", "counted", "--storage", sqlite_url, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert f"trial 0 data: 5 train + 1 val images from {data}\n" in result.stdout


def _complete(trial: optuna.Trial, config: StudyConfig, **kwargs: object) -> TrialOutcome:
    """A stand-in trial that completes at once."""
    return TrialOutcome(trial.number, TrialState.COMPLETE, 0.5, 1)


def _finished(url: str, name: str) -> list[TrialState]:
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]
    return [t.state for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_a_study_grows_with_study_set_and_ends_with_exactly_the_new_n_trials(tmp_path: Path, sqlite_url: str) -> None:
    path = _write(tmp_path, _study("grow", n_trials=4))
    assert runner.invoke(app, ["study", "create", str(path), "--storage", sqlite_url]).exit_code == 0
    run_worker("grow", sqlite_url, runs_dir=tmp_path / "runs", trial_runner=_complete)
    assert len(_finished(sqlite_url, "grow")) == 4

    path = _write(tmp_path, _study("grow", n_trials=6))
    refused = runner.invoke(app, ["study", "create", str(path), "--storage", sqlite_url])
    assert refused.exit_code == 2
    assert "n_trials: 4 -> 6" in refused.stderr and "edgesearch study set grow --n-trials 6" in refused.stderr
    below = runner.invoke(app, ["study", "set", "grow", "--n-trials", "3", "--storage", sqlite_url])
    assert below.exit_code == 2 and "4 finished" in below.stderr and "at least 4" in below.stderr
    grown = runner.invoke(app, ["study", "set", "grow", "--n-trials", "6", "--storage", sqlite_url])
    assert grown.exit_code == 0, grown.output
    assert "n_trials 4 -> 6" in grown.stdout
    # The file now says what the study holds.
    again = runner.invoke(app, ["study", "create", str(path), "--storage", sqlite_url])
    assert again.exit_code == 0 and "already exists (same config)" in again.stdout

    summary = run_worker("grow", sqlite_url, runs_dir=tmp_path / "runs", trial_runner=_complete)
    assert summary.stopped_because == "study complete" and len(summary.outcomes) == 2
    assert len(_finished(sqlite_url, "grow")) == 6
    _, config = load_study("grow", sqlite_url)
    assert config.n_trials == 6


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize(("before", "after"), [(2, 5), (6, 2)], ids=["grown", "shrunk"])
def test_a_running_worker_takes_up_study_set_at_its_next_trial(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, before: int, after: int
) -> None:
    url: str = request.getfixturevalue(f"{backend}_url")
    create_study(StudyConfig.from_dict(_study("live", n_trials=before), source="test"), url)

    def set_during_the_first(trial: optuna.Trial, config: StudyConfig, **kwargs: object) -> TrialOutcome:
        if trial.number == 0:
            changed = runner.invoke(app, ["study", "set", "live", "--n-trials", str(after), "--storage", url])
            assert changed.exit_code == 0, changed.output
        return _complete(trial, config)

    summary = run_worker("live", url, runs_dir=tmp_path / "runs", trial_runner=set_during_the_first)
    assert summary.stopped_because == "study complete"
    assert len(summary.outcomes) == after
    assert len(_finished(url, "live")) == after
