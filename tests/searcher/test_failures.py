"""Nothing lost: stopped and killed workers, retries that resume, a database restart, NaN, crashes.

Each test really does it: real worker processes, real signals, a real PostgreSQL restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from devtools.postgres import ThrowawayServer
from edgesearch.cli import app
from edgesearch.searcher.run.worker import run_worker
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.studies import create_study
from tests.browser import wait_for
from tests.helpers import TINY_TRAINER, merge, tiny_study, write_folder

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

# Epochs of a few seconds each on 2 CPU cores: long enough to stop or kill a worker mid-epoch. last.pt
# after every epoch, so that a kill -9 in epoch 2 finds epoch 1's (the default cadence is 60 s).
SLOW_TRAINER = merge(
    TINY_TRAINER, {"data": {"image_size": 64, "synthetic": {"n_images": 48}}, "epochs": 4, "checkpoint_interval": 0}
)
FAST_HEARTBEAT = {"heartbeat_interval": 1, "grace_period": 4, "max_retries": 2}


def _create(url: str, name: str, **extra: Any) -> StudyConfig:
    raw = merge({"n_trials": 1, "trainer": SLOW_TRAINER, "fault_tolerance": FAST_HEARTBEAT}, extra)
    config = StudyConfig.from_dict(tiny_study(name, **raw), source="test")
    create_study(config, url)
    return config


def _worker(url: str, name: str, runs: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "edgesearch", "worker", name, "--storage", url, "--runs-dir", str(runs), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _trials(url: str, name: str) -> list[FrozenTrial]:
    return sorted(optuna.load_study(study_name=name, storage=url).get_trials(), key=lambda t: t.number)


def _epochs_reported(url: str, name: str, number: int) -> int:
    trials = [t for t in _trials(url, name) if t.number == number]
    return len(trials[0].intermediate_values) if trials else 0


def _trial_dir(runs: Path, study: str, number: int) -> Path:
    """The run folder of a trial: ``<runs>/<study>-<run id>/trial-NNNNN`` (the run id is the study's own)."""
    (folder,) = runs.glob(f"{study}-*/trial-{number:05d}")
    return folder


def _last_checkpoint_epoch(run_dir: Path) -> int:
    import torch

    return int(torch.load(run_dir / "last.pt", weights_only=False, map_location="cpu")["epoch"])


def _assert_resumed(retry: FrozenTrial, original: FrozenTrial, resumed_from: int) -> None:
    """The retry continued the original's run: same run dir, history after the checkpointed epoch."""
    assert retry.system_attrs["failed_trial"] == original.number
    assert retry.user_attrs["run_dir"] == original.user_attrs["run_dir"]
    assert retry.user_attrs["resumed_from_epoch"] == resumed_from >= 1
    assert min(retry.intermediate_values) == resumed_from + 1  # not epoch 1 again
    assert [row["epoch"] for row in retry.user_attrs["history"]] == list(range(1, 5))


# --------------------------------------------------------------------------- preemption


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "backend"),
    [(signal.SIGTERM, "sqlite"), (signal.SIGINT, "sqlite"), (signal.SIGTERM, "pooled_postgres")],
    ids=["sigterm", "ctrl-c", "sigterm-through-the-pooler"],
)
def test_a_signalled_worker_hands_its_trial_back_and_exits_0(
    tmp_path: Path, sig: int, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    _create(url, "pre")
    proc = _worker(url, "pre", tmp_path / "runs")
    wait_for(lambda: _epochs_reported(url, "pre", 0) >= 1, timeout=400, what="epoch 1 of trial 0")
    sent = time.monotonic()
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert time.monotonic() - sent < 30, "the worker must stop within one batch, not finish the trial"
    checkpointed = _last_checkpoint_epoch(_trial_dir(tmp_path / "runs", "pre", 0))
    assert "handed back for retry" in output
    first, retry = _trials(url, "pre")
    assert first.state == TrialState.FAIL and "interrupted" in first.user_attrs["fail_reason"]
    assert retry.state == TrialState.WAITING  # queued at once: no RUNNING trial without a heartbeat
    # The next worker resumes the handed-back trial from its last checkpoint.
    summary = run_worker("pre", url, runs_dir=tmp_path / "runs")
    assert summary.stopped_because == "study complete"
    first, retry = _trials(url, "pre")
    assert retry.state == TrialState.COMPLETE
    _assert_resumed(retry, first, resumed_from=checkpointed)


@pytest.mark.slow
def test_a_parent_with_processes_passes_sigterm_on_and_exits_0(tmp_path: Path, sqlite_url: str) -> None:
    _create(sqlite_url, "fan", n_trials=2)
    proc = _worker(sqlite_url, "fan", tmp_path / "runs", "--processes", "2")
    wait_for(lambda: _epochs_reported(sqlite_url, "fan", 0) >= 1, timeout=400, what="a first epoch")
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    trials = _trials(sqlite_url, "fan")
    assert not [t for t in trials if t.state == TrialState.RUNNING], [(t.number, t.state) for t in trials]
    handed_back = [t for t in trials if t.state == TrialState.FAIL]
    assert handed_back and all("interrupted" in t.user_attrs["fail_reason"] for t in handed_back)
    assert len([t for t in trials if t.state == TrialState.WAITING]) == len(handed_back)


# --------------------------------------------------------------------------- kill -9


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres", "pooled_postgres"])
def test_a_killed_workers_trial_is_retried_elsewhere_and_resumes_from_its_checkpoint(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    _create(url, "kill", n_trials=2)
    victim = _worker(url, "kill", tmp_path / "runs")
    # Epoch 1 reported and its last.pt written: the write runs in the background, a moment after the report.
    wait_for(
        lambda: (
            _epochs_reported(url, "kill", 0) >= 1 and bool(list((tmp_path / "runs").glob("kill-*/trial-00000/last.pt")))
        ),
        timeout=400,
        what="epoch 1 of trial 0 and its last.pt",
    )
    victim.kill()  # SIGKILL in epoch 2: no handler runs, the heartbeat just stops
    victim.communicate(timeout=30)
    checkpointed = _last_checkpoint_epoch(_trial_dir(tmp_path / "runs", "kill", 0))

    rescuer = _worker(url, "kill", tmp_path / "runs")
    output, _ = rescuer.communicate(timeout=400)
    assert rescuer.returncode == 0, output
    trials = _trials(url, "kill")
    by_state = {state: [t for t in trials if t.state == state] for state in TrialState}
    assert len(by_state[TrialState.COMPLETE]) + len(by_state[TrialState.PRUNED]) == 2  # exactly n_trials
    assert [t.number for t in by_state[TrialState.FAIL]] == [0]  # the killed one, failed by the heartbeat
    assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    _assert_resumed(retry, trials[0], resumed_from=checkpointed)


@pytest.mark.slow
def test_a_retry_whose_last_checkpoint_is_corrupt_starts_from_scratch_with_one_warning(
    tmp_path: Path, sqlite_url: str
) -> None:
    _create(sqlite_url, "corrupt", n_trials=2)
    victim = _worker(sqlite_url, "corrupt", tmp_path / "runs")
    wait_for(
        lambda: bool(list((tmp_path / "runs").glob("corrupt-*/trial-00000/last.pt"))),
        timeout=400,
        what="trial 0's last.pt",
    )
    victim.kill()
    victim.communicate(timeout=30)
    last = _trial_dir(tmp_path / "runs", "corrupt", 0) / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short

    rescuer = _worker(sqlite_url, "corrupt", tmp_path / "runs")
    output, _ = rescuer.communicate(timeout=400)
    assert rescuer.returncode == 0, output
    assert "Traceback" not in output
    (warning,) = [line for line in output.splitlines() if str(last) in line]
    assert "cannot be read" in warning and "retry starts from scratch" in warning
    trials = _trials(sqlite_url, "corrupt")
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 2  # exactly n_trials
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == TrialState.COMPLETE
    assert "resumed_from_epoch" not in retry.user_attrs
    assert min(retry.intermediate_values) == 1  # trained from epoch 1, in a folder of its own
    assert retry.user_attrs["run_dir"] != trials[0].user_attrs["run_dir"]


# --------------------------------------------------------------------------- database outage


@pytest.mark.slow
def test_workers_survive_a_postgres_restart_and_finish_the_study(
    tmp_path: Path, private_postgres: ThrowawayServer
) -> None:
    postgres_url = private_postgres.url
    pg_bin, pg_data = private_postgres.bin, str(private_postgres.data)
    owner = private_postgres.owner
    # A grace period far longer than the restart: the outage must not look like dead workers.
    tolerance = {"heartbeat_interval": 2, "grace_period": 60}
    _create(postgres_url, "outage", n_trials=4, trainer={"epochs": 3}, fault_tolerance=tolerance)
    workers = _worker(postgres_url, "outage", tmp_path / "runs", "--processes", "2")
    wait_for(lambda: _epochs_reported(postgres_url, "outage", 0) >= 1, timeout=400, what="a first epoch")
    # The server's output goes to its log file: a pipe would be held open by the new server forever.
    log = str(Path(pg_data).parent / "server.log")
    restart = [f"{pg_bin}/pg_ctl", "-D", pg_data, "-l", log, "-m", "fast", "-w", "-t", "60", "restart"]
    if os.geteuid() == 0 and owner and owner != "root":
        restart = ["runuser", "-u", owner, "--", *restart]
    subprocess.run(restart, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    output, _ = workers.communicate(timeout=500)
    assert workers.returncode == 0, output
    trials = _trials(postgres_url, "outage")
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    started = [t for t in trials if "run_dir" in t.user_attrs]
    assert started == finished  # every trial that started training finished: none lost, none failed
    assert len({t.user_attrs["run_dir"] for t in finished}) == 4  # none ran twice


# --------------------------------------------------------------------------- numeric failure and crashes


@pytest.mark.slow
def test_a_nan_trial_fails_with_its_reason_is_not_retried_and_the_worker_goes_on(
    tmp_path: Path, sqlite_url: str
) -> None:
    # lr 1e12 makes the model diverge to NaN within a few steps; the second point is sane.
    trainer = merge(TINY_TRAINER, {"data": {"synthetic": {"n_images": 32}}, "epochs": 2})
    raw = {"name": "nan2", "n_trials": 1, "trainer": trainer}
    raw["space"] = {"optim.lr": {"low": 1.0e-4, "high": 1.0e13, "log": True}}
    raw["enqueue"] = [{"optim.lr": 1.0e12}, {"optim.lr": 3.0e-3}]
    create_study(StudyConfig.from_dict(raw, source="test"), sqlite_url)
    summary = run_worker("nan2", sqlite_url, runs_dir=tmp_path / "runs")
    assert summary.stopped_because == "study complete" and not summary.failed
    nan_trial, good = _trials(sqlite_url, "nan2")
    assert nan_trial.state == TrialState.FAIL
    assert nan_trial.user_attrs["fail_reason"].startswith("non-finite loss: training loss became nan")
    assert good.state == TrialState.COMPLETE and good.params == {"optim.lr": 3.0e-3}
    assert len(_trials(sqlite_url, "nan2")) == 2  # no retry was queued for the NaN trial


@pytest.mark.slow
def test_a_non_finite_loss_in_every_trial_stops_the_worker_after_three(tmp_path: Path, sqlite_url: str) -> None:
    # Every trial diverges (the base lr is far too high whatever lambda is drawn): the cause is the
    # setup, not one trial's parameters, and the worker stops instead of failing trials forever.
    trainer = merge(TINY_TRAINER, {"data": {"synthetic": {"n_images": 32}}, "epochs": 2, "optim": {"lr": 1.0e12}})
    raw = {"name": "all-nan", "n_trials": 10, "trainer": trainer}
    raw["space"] = {"loss.edge_lambda": {"low": 0.0, "high": 0.5}}
    create_study(StudyConfig.from_dict(raw, source="test"), sqlite_url)
    summary = run_worker("all-nan", sqlite_url, runs_dir=tmp_path / "runs", max_trials=6)
    assert summary.failed, summary.stopped_because
    assert "3 trials in a row failed with the same error" in summary.stopped_because
    assert "non-finite loss" in summary.stopped_because
    trials = _trials(sqlite_url, "all-nan")
    assert [t.state for t in trials] == [TrialState.FAIL] * 3


def test_a_vanished_data_folder_fails_the_trial_and_stops_the_worker_with_exit_2(
    tmp_path: Path, sqlite_url: str
) -> None:
    data = write_folder(tmp_path / "data", n=6, size=64)
    raw = {"name": "gone", "n_trials": 3, "trainer": merge(TINY_TRAINER, {"data": {"root": str(data)}})}
    raw["space"] = {"loss.edge_lambda": {"low": 0.0, "high": 0.5}}
    create_study(StudyConfig.from_dict(raw, source="test"), sqlite_url)
    for path in sorted(data.rglob("*.png")):
        path.unlink()
    result = runner.invoke(app, ["worker", "gone", "--storage", sqlite_url, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert str(data) in result.stderr and "Traceback" not in result.output
    (trial,) = _trials(sqlite_url, "gone")  # stopped after the first trial instead of burning three
    assert trial.state == TrialState.FAIL and str(data) in trial.user_attrs["fail_reason"]


def test_the_same_crash_on_every_trial_stops_the_worker_after_three(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug in the trainer (every config the study accepts runs, so none can crash it on purpose):
    # building the model raises the same error in every trial.
    def broken_build_model(config: object) -> None:
        raise ValueError("a bug in the model code")

    monkeypatch.setattr("edgesearch.trainer.loop.build_model", broken_build_model)
    raw = {"name": "crash", "n_trials": 10, "trainer": TINY_TRAINER}
    raw["space"] = {"loss.edge_lambda": {"low": 0.0, "high": 0.5}}
    create_study(StudyConfig.from_dict(raw, source="test"), sqlite_url)
    result = runner.invoke(app, ["worker", "crash", "--storage", sqlite_url, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1, result.output
    assert "3 trials in a row failed with the same error" in result.stderr
    trials = _trials(sqlite_url, "crash")
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert all(t.user_attrs["fail_reason"].startswith("ValueError") for t in trials)


# --------------------------------------------------------------------------- a study deleted under its workers


@pytest.mark.slow
def test_a_study_with_live_workers_is_deleted_only_with_force_and_its_worker_stops_with_one_line(
    tmp_path: Path, sqlite_url: str
) -> None:
    _create(sqlite_url, "gone", n_trials=3)
    worker = _worker(sqlite_url, "gone", tmp_path / "runs")
    wait_for(lambda: _epochs_reported(sqlite_url, "gone", 0) >= 1, timeout=400, what="epoch 1 of trial 0")

    refused = runner.invoke(app, ["study", "delete", "gone", "--storage", sqlite_url, "--yes"])
    assert refused.exit_code == 2, refused.output
    assert "1 running trial(s) with live workers (trial 0)" in refused.stderr and "--force" in refused.stderr
    assert [t.number for t in _trials(sqlite_url, "gone")] == [0]  # still there

    forced = runner.invoke(app, ["study", "delete", "gone", "--storage", sqlite_url, "--yes", "--force"])
    assert forced.exit_code == 0, forced.output
    output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 2, output
    assert "study 'gone' was deleted from the storage while this worker ran" in output
    assert "Traceback" not in output and "KeyError" not in output
