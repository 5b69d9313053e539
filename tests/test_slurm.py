"""deploy/slurm/worker.sbatch on a real Slurm: a job array of workers against the test PostgreSQL.

The cluster is a single node on this host (``.ci/start-slurm.sh``); the tests submit the project's
own script with ``SBATCH_GRES=none`` (no GPUs here) and ``--cpus-per-task=1``, as a user of a CPU
partition would. Locally they skip without Slurm; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.progress import epochs_done
from edgesearch.searcher.study.studies import create_study
from tests.browser import wait_for
from tests.helpers import TINY_TRAINER, merge, tiny_study

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "slurm" / "worker.sbatch"

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

# Epochs of a few seconds each: long enough to cancel a task mid-trial. last.pt after every epoch.
SLOW_TRAINER = merge(
    TINY_TRAINER, {"data": {"image_size": 64, "synthetic": {"n_images": 48}}, "epochs": 4, "checkpoint_interval": 0}
)
FAST_HEARTBEAT = {"heartbeat_interval": 1, "grace_period": 4, "max_retries": 2}


@pytest.fixture(scope="module")
def slurm() -> None:
    message = 'no Slurm cluster here: start one with: eval "$(.ci/start-slurm.sh)"'
    ok = shutil.which("sbatch") is not None and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Slurm is required under CI: {message}")
        pytest.skip(message)


def _create(url: str, name: str, **extra: Any) -> StudyConfig:
    config = StudyConfig.from_dict(tiny_study(name, **merge({"n_trials": 6}, extra)), source="test")
    create_study(config, url)
    return config


def _submit(folder: Path, url: str, name: str, tasks: int, *options: str) -> str:
    """``sbatch`` the project's script from ``folder`` as its README says; the job id."""
    (folder / "logs").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "EDGESEARCH_STORAGE": url,
        "EDGESEARCH_RUNS": str(folder / "runs"),
        "SBATCH_GRES": "none",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    command = ["sbatch", "--parsable", f"--array=0-{tasks - 1}", "--cpus-per-task=1", *options, str(SCRIPT), name]
    proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def _queued(job: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def _log(folder: Path, job: str, task: int) -> str:
    path = folder / "logs" / f"edgesearch-{job}_{task}.log"
    return path.read_text() if path.exists() else ""


def _exit_codes(job: str, tasks: int) -> list[str]:
    codes = []
    for task in range(tasks):
        out = subprocess.run(["scontrol", "-o", "show", "job", f"{job}_{task}"], capture_output=True, text=True).stdout
        match = re.search(r"\bExitCode=(\S+)", out)
        codes.append(match.group(1) if match else "?")
    return codes


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return sorted(optuna.load_study(study_name=name, storage=url).get_trials(), key=lambda t: t.number)


def test_an_array_of_three_workers_finishes_the_study_with_exactly_n_trials(
    slurm: None, tmp_path: Path, postgres_url: str
) -> None:
    _create(postgres_url, "slurm-array")
    job = _submit(tmp_path, postgres_url, "slurm-array", 3)
    wait_for(lambda: not _queued(job), timeout=500, what=f"job {job} to leave the queue")

    trials = _trials(postgres_url, "slurm-array")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6  # exactly n_trials, nothing run twice
    logs = [_log(tmp_path, job, task) for task in range(3)]
    for task, text in enumerate(logs):
        assert f"array task {task} of job {job}" in text, text
        assert "stopped: study complete" in text, text
        assert postgres_url not in text  # the URL came through the environment and is never printed
    assert _exit_codes(job, 3) == ["0:0"] * 3
    started = sum(len(re.findall(r"^trial \d+ started", text, flags=re.M)) for text in logs)
    assert started == 6


def _running_trial(folder: Path, job: str, task: int, url: str, name: str) -> tuple[int] | None:
    """``(number,)`` of the trial the task runs, once it has reported an epoch and written that epoch's
    last.pt (a tuple: trial 0 must read as found)."""
    found = re.findall(r"^trial (\d+) started", _log(folder, job, task), flags=re.M)
    if not found:
        return None
    number = int(found[-1])
    trial = next((t for t in _trials(url, name) if t.number == number), None)
    if trial is None or trial.state != TrialState.RUNNING or epochs_done(trial) < 1:
        return None
    run_dir = trial.user_attrs.get("run_dir")
    return (number,) if run_dir and (Path(run_dir) / "last.pt").is_file() else None


def _check_resumed_elsewhere(url: str, name: str, number: int, n_trials: int, *, epochs: int = 4) -> None:
    trials = _trials(url, name)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["resumed_from_epoch"] >= 1
    assert [row["epoch"] for row in retry.user_attrs["history"]] == list(range(1, epochs + 1))


def test_a_cancelled_task_hands_its_trial_back_and_another_task_resumes_it(
    slurm: None, tmp_path: Path, postgres_url: str
) -> None:
    _create(postgres_url, "slurm-cancel", n_trials=3, trainer=SLOW_TRAINER, fault_tolerance=FAST_HEARTBEAT)
    job = _submit(tmp_path, postgres_url, "slurm-cancel", 2)
    (number,) = wait_for(
        lambda: _running_trial(tmp_path, job, 0, postgres_url, "slurm-cancel"),
        timeout=400,
        what="task 0's trial past epoch 1 with its last.pt",
    )
    subprocess.run(["scancel", f"{job}_0"], check=True)
    wait_for(lambda: not _queued(job), timeout=500, what=f"job {job} to leave the queue")

    assert f"trial {number}: handed back for retry" in _log(tmp_path, job, 0)
    assert re.search(r"^trial \d+ started", _log(tmp_path, job, 1), flags=re.M)
    _check_resumed_elsewhere(postgres_url, "slurm-cancel", number, 3)


def test_a_task_at_its_time_limit_hands_its_trial_back_before_slurm_kills_it(
    slurm: None, tmp_path: Path, postgres_url: str
) -> None:
    # The limited task's limit is cut to 1 minute once its trial is past epoch 1, the way an admin or a
    # reservation shortens it: the script's signal (sent 50 s before the limit, so at once) must make the
    # worker hand the trial back before Slurm kills it; the other job, without a limit, resumes it.
    # slurmctld looks at time limits on a timer of tens of seconds, so the signal can come that late:
    # the trial must outlast it by far (40 epochs of 1-2 s), or it ends before the signal comes.
    long_trials = merge(SLOW_TRAINER, {"epochs": 40})
    _create(postgres_url, "slurm-limit", n_trials=1, trainer=long_trials, fault_tolerance=FAST_HEARTBEAT)
    limited = _submit(tmp_path, postgres_url, "slurm-limit", 1, "--time=10", "--signal=B:TERM@50")
    (number,) = wait_for(
        lambda: _running_trial(tmp_path, limited, 0, postgres_url, "slurm-limit"),
        timeout=400,
        what="the limited task's trial past epoch 1 with its last.pt",
    )
    rescuer = _submit(tmp_path, postgres_url, "slurm-limit", 1)  # waits: the study's one slot is taken
    subprocess.run(["scontrol", "update", f"JobId={limited}_0", "TimeLimit=1"], check=True)
    wait_for(lambda: not _queued(limited) and not _queued(rescuer), timeout=500, what="both jobs to leave the queue")

    limited_log = _log(tmp_path, limited, 0)
    assert f"trial {number}: handed back for retry" in limited_log, limited_log
    assert "stopped: stop requested" in limited_log, limited_log  # it left on its own, before the kill
    _check_resumed_elsewhere(postgres_url, "slurm-limit", number, 1, epochs=40)
