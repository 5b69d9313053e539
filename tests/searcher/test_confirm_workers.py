"""``study confirm`` end to end: re-trainings queued, taken by real worker processes, retried, reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from edgesearch.cli import app
from edgesearch.searcher.run.worker import run_worker
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.confirm import CONFIRM_ATTR, companion_name
from edgesearch.searcher.study.progress import epochs_done
from edgesearch.searcher.study.studies import create_study
from tests.browser import wait_for
from tests.helpers import merge, tiny_study

runner = CliRunner()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning"),
]


def _searched(url: str, runs: Path, name: str = "conf", **extra: Any) -> StudyConfig:
    space = {"optim.lr": {"low": 1e-3, "high": 1e-2, "log": True}}
    config = StudyConfig.from_dict(tiny_study(name, **merge({"space": space}, extra)), source="test")
    create_study(config, url)
    run_worker(name, url, runs_dir=runs, poll_seconds=0.1)
    return config


def _worker(url: str, name: str, runs: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "edgesearch", "worker", name, "--storage", url, "--runs-dir", str(runs)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _jobs(url: str, name: str) -> list[FrozenTrial]:
    study = optuna.load_study(study_name=companion_name(name), storage=url)
    return sorted(study.get_trials(), key=lambda t: t.number)


def _cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_worker_processes_run_every_confirmation_once_and_the_report_tables_them(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    runs = tmp_path / "runs"
    _searched(url, runs)
    search = optuna.load_study(study_name="conf", storage=url)
    top = [t.number for t in sorted(search.trials, key=lambda t: (-(t.value or 0.0), t.number))[:2]]

    queued = _cli("study", "confirm", "conf", "--top", "2", "--seeds", "2", "--storage", url)
    assert queued.exit_code == 0, queued.output
    assert f"queued 4 re-training(s) of trial(s) {top[0]}, {top[1]} with 2 fresh seed(s) each" in queued.output

    workers = [_worker(url, "conf", runs) for _ in range(2)]
    outputs = [w.communicate(timeout=400)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert sum(o.count("started: trial") for o in outputs) == 4  # "confirmation N started: trial T's config"

    jobs = _jobs(url, "conf")
    assert [t.state for t in jobs] == [TrialState.COMPLETE] * 4
    pairs = sorted((t.user_attrs[CONFIRM_ATTR]["trial"], t.user_attrs[CONFIRM_ATTR]["seed"]) for t in jobs)
    assert pairs == sorted((number, seed) for number in top for seed in (1, 2))  # TINY_TRAINER's seed is 0
    for job in jobs:
        assert job.user_attrs["config"]["seed"] == job.user_attrs[CONFIRM_ATTR]["seed"]
        assert Path(job.user_attrs["run_dir"]).name == f"confirm-{job.number:05d}"
        assert Path(job.user_attrs["best_checkpoint"]).is_file()
    assert len(search.get_trials()) == 3  # the study itself took no new trial

    again = _cli("study", "confirm", "conf", "--top", "2", "--seeds", "2", "--storage", url)
    assert "queued 0 re-training(s)" in again.output and "(4 already queued or done)" in again.output

    best = _cli("study", "best", "conf", "--confirmed", "--json", "--storage", url)
    assert best.exit_code == 0, best.output
    record = json.loads(best.output)
    means = {
        number: sum(t.value or 0.0 for t in jobs if t.user_attrs[CONFIRM_ATTR]["trial"] == number) / 2 for number in top
    }
    assert record["trial"] == max(top, key=lambda n: (means[n], -top.index(n)))
    assert record["confirmed"]["n"] == 2 and record["confirmed"]["mean"] == pytest.approx(means[record["trial"]])

    text = _cli("study", "best", "conf", "--confirmed", "--storage", url).output
    assert f"best confirmed: trial {record['trial']}'s configuration, mean " in text
    assert "over 2 of 2 fresh seed(s)" in text and "the search's ranking " in text

    report = _cli("study", "report", "conf", "--out", str(tmp_path / "report"), "--storage", url)
    assert report.exit_code == 0, report.output
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Confirmed</h2>" in html and "2 / 2" in html
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [row["trial"] for row in data["confirmed"]["rows"]] == top
    assert any(line.startswith("Confirmed: trial ") for line in data["findings"])


# Epochs of a few seconds each: long enough to kill a worker mid-job. last.pt after every epoch.
SLOW = {"trainer": {"data": {"image_size": 64, "synthetic": {"n_images": 48}}, "epochs": 3, "checkpoint_interval": 0}}
FAST_HEARTBEAT = {"fault_tolerance": {"heartbeat_interval": 1, "grace_period": 4, "max_retries": 2}}


def test_a_killed_workers_confirmation_is_retried_and_resumes_from_its_checkpoint(
    tmp_path: Path, sqlite_url: str
) -> None:
    runs = tmp_path / "runs"
    _searched(sqlite_url, runs, n_trials=1, **merge(SLOW, FAST_HEARTBEAT))
    assert _cli("study", "confirm", "conf", "--top", "1", "--seeds", "1", "--storage", sqlite_url).exit_code == 0
    victim = _worker(sqlite_url, "conf", runs)
    wait_for(
        lambda: any(
            epochs_done(t) >= 1 and (Path(t.user_attrs["run_dir"]) / "last.pt").is_file()
            for t in _jobs(sqlite_url, "conf")
            if "run_dir" in t.user_attrs
        ),
        timeout=400,
        what="epoch 1 of the confirmation and its last.pt",
    )
    victim.kill()  # SIGKILL: the heartbeat just stops
    victim.communicate(timeout=30)

    rescuer = _worker(sqlite_url, "conf", runs)
    output, _ = rescuer.communicate(timeout=400)
    assert rescuer.returncode == 0, output
    jobs = _jobs(sqlite_url, "conf")
    assert [t.state for t in jobs] == [TrialState.FAIL, TrialState.COMPLETE]
    failed, retry = jobs
    assert retry.system_attrs["failed_trial"] == failed.number
    assert retry.user_attrs[CONFIRM_ATTR] == failed.user_attrs[CONFIRM_ATTR]
    assert retry.user_attrs["run_dir"] == failed.user_attrs["run_dir"]
    assert retry.user_attrs["resumed_from_epoch"] >= 1
    assert [row["epoch"] for row in retry.user_attrs["history"]] == [1, 2, 3]
    best = json.loads(_cli("study", "best", "conf", "--confirmed", "--json", "--storage", sqlite_url).output)
    assert (best["confirmed"]["n"], best["confirmed"]["seeds"]) == (1, 1)  # the job counted once


def test_deleting_a_study_deletes_its_confirmations_and_listings_never_show_them(
    tmp_path: Path, sqlite_url: str
) -> None:
    _searched(sqlite_url, tmp_path / "runs", n_trials=1)
    assert _cli("study", "confirm", "conf", "--top", "1", "--seeds", "1", "--storage", sqlite_url).exit_code == 0
    listed = _cli("study", "list", "--storage", sqlite_url)
    assert listed.output.split()[0] == "conf" and "confirm:" not in listed.output
    shown = _cli("study", "show", "confirm:conf", "--storage", sqlite_url)
    assert shown.exit_code == 2 and "no study named" in shown.output
    assert _cli("study", "delete", "conf", "--yes", "--storage", sqlite_url).exit_code == 0
    assert optuna.get_all_study_names(storage=sqlite_url) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--top", "0"], "--top 0 is not allowed; allowed: a whole number 1..50"),
        (["--seeds", "51"], "--seeds 51 is not allowed; allowed: a whole number 1..50"),
    ],
)
def test_confirm_refuses_counts_outside_the_range_with_exit_2(
    tmp_path: Path, sqlite_url: str, args: list[str], expected: str
) -> None:
    _searched(sqlite_url, tmp_path / "runs", n_trials=1)
    result = _cli("study", "confirm", "conf", *args, "--storage", sqlite_url)
    assert result.exit_code == 2 and expected in result.output
    assert companion_name("conf") not in optuna.get_all_study_names(storage=sqlite_url)  # nothing written


def test_best_confirmed_before_any_confirmation_says_how_to_get_one(tmp_path: Path, sqlite_url: str) -> None:
    _searched(sqlite_url, tmp_path / "runs", n_trials=1)
    result = _cli("study", "best", "conf", "--confirmed", "--storage", sqlite_url)
    assert result.exit_code == 2
    assert "no confirmed results" in result.output and "edgesearch study confirm conf" in result.output
