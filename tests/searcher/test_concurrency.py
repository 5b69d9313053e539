"""Many processes on one storage at once: workers sharing a SQLite study, and racing ``study create`` runs."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from edgesearch.searcher.run.worker import WorkerResult, run_worker
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.studies import FINISHED, create_study, load_study
from tests.helpers import TINY_TRAINER, merge

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")]

# Imports everything first, says it is ready, waits for the start signal, then runs `python -m edgesearch ARGS`:
# so that the racing processes really reach the storage at the same moment, whatever their start-up times.
_AT_SIGNAL = """
import pathlib, runpy, sys, time
import edgesearch.cli, edgesearch.searcher.study.studies, edgesearch.trainer.model
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.001)
sys.argv = ["edgesearch", *sys.argv[3:]]
runpy.run_module("edgesearch", run_name="__main__", alter_sys=True)
"""


def _study(name: str, **extra: Any) -> dict[str, Any]:
    base = {
        "name": name,
        "n_trials": 3,
        "sampler": {"kind": "tpe", "seed": 0},
        "pruner": {"kind": "none"},
        "trainer": merge(TINY_TRAINER, {"data": {"synthetic": {"n_images": 8}}}),
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}, "optim.lr": {"low": 1e-3, "high": 1e-2, "log": True}},
    }
    return merge(base, extra)


def _write(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """An empty storage: a SQLite file not yet created, or a new PostgreSQL database."""
    return sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


def test_four_worker_processes_on_sqlite_run_every_trial_exactly_once(tmp_path: Path, sqlite_url: str) -> None:
    pruner = {"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 0}
    create_study(StudyConfig.from_dict(_study("many", n_trials=20, pruner=pruner), source="test"), sqlite_url)
    command = [sys.executable, "-m", "edgesearch", "worker", "many", "--storage", sqlite_url, "--processes", "4"]
    # One thread per process: four processes on a small machine then share its cores instead of fighting over them.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    start = time.monotonic()
    proc = subprocess.run(
        [*command, "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, env=env, timeout=580
    )
    print(f"4 worker processes, 20 trials: {time.monotonic() - start:.1f} s wall")  # shown with pytest -rP
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "database is locked" not in output and "OperationalError" not in output, output

    trials = optuna.load_study(study_name="many", storage=sqlite_url).get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 20, states
    # No surplus trial handed back either: the admission count reads RUNNING and finished trials in one
    # snapshot, so a trial finishing during the count cannot be missed and one slot given out twice.
    assert states["FAIL"] == states["RUNNING"] == states["WAITING"] == 0, states
    assert len(trials) == 20, states  # every started trial finished: none lost
    assert len({t.user_attrs["run_dir"] for t in finished}) == 20  # no trial ran twice


def test_workers_colliding_on_the_last_free_slot_leave_no_waiting_trial_behind(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_study(
        StudyConfig.from_dict(_study("last", n_trials=1, sampler={"kind": "random"}), source="test"), sqlite_url
    )
    # Hold each worker's first ask() until both have seen the one free slot: the collision the worker must resolve.
    both_checked, first_ask_done = threading.Barrier(2), threading.local()
    ask = optuna.Study.ask

    def colliding_ask(study: optuna.Study, *args: Any, **kwargs: Any) -> optuna.Trial:
        if not getattr(first_ask_done, "value", False):
            first_ask_done.value = True
            with contextlib.suppress(threading.BrokenBarrierError):  # a worker that never asks lets the other go
                both_checked.wait(timeout=10)
        return ask(study, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "ask", colliding_ask)
    summaries: list[WorkerResult] = []

    def work(index: int) -> None:
        summaries.append(run_worker("last", sqlite_url, runs_dir=tmp_path, poll_seconds=0.2))

    threads = [threading.Thread(target=work, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert [s.stopped_because for s in summaries] == ["study complete"] * 2
    trials = optuna.load_study(study_name="last", storage=sqlite_url).get_trials()
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE)]


def _race(commands: Sequence[Sequence[str]], folder: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run ``python -m edgesearch COMMAND`` for each command, all released at the same moment."""
    go = folder / "go"
    ready = [folder / f"ready-{i}" for i in range(len(commands))]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _AT_SIGNAL, str(flag), str(go), *command],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag, command in zip(ready, commands, strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = []
    for command, proc in zip(commands, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(list(command), proc.returncode, stdout, stderr))
    return results


def _verdict(result: subprocess.CompletedProcess[str], name: str) -> str:
    if re.search(rf"^study {re.escape(name)} created in ", result.stdout, flags=re.MULTILINE):
        return "created"
    if re.search(rf"^study {re.escape(name)} already exists \(same config\) in ", result.stdout, flags=re.MULTILINE):
        return "already exists"
    return f"exit {result.returncode}: {result.stdout}{result.stderr}"


def test_two_simultaneous_creates_of_one_study_make_exactly_one(tmp_path: Path, fresh_url: str) -> None:
    raw = _study("raced", enqueue=[{"loss.edge_lambda": 0.15}])
    path = _write(tmp_path / "raced.yaml", raw)
    results = _race([["study", "create", str(path), "--storage", fresh_url]] * 2, tmp_path)

    for result in results:
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert sorted(_verdict(r, "raced") for r in results) == ["already exists", "created"]
    summaries = optuna.get_all_study_summaries(fresh_url, include_best_trial=False)
    assert [s.study_name for s in summaries] == ["raced"]
    study, stored = load_study("raced", fresh_url)
    assert stored.to_dict() == StudyConfig.from_yaml(path).to_dict()
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING]  # the point was enqueued once


def test_of_two_simultaneous_creates_with_different_configs_one_is_refused(tmp_path: Path, fresh_url: str) -> None:
    paths = [_write(tmp_path / f"{n}.yaml", _study("clash", n_trials=n)) for n in (3, 4)]
    results = _race([["study", "create", str(p), "--storage", fresh_url] for p in paths], tmp_path)

    assert sorted(r.returncode for r in results) == [0, 2], [r.stdout + r.stderr for r in results]
    winner = next(i for i, r in enumerate(results) if r.returncode == 0)
    loser = results[1 - winner]
    lines = [line for line in loser.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'clash'" in lines[0] and "different config" in lines[0], loser.stderr
    assert "Traceback" not in results[winner].stderr and _verdict(results[winner], "clash") == "created"
    _, stored = load_study("clash", fresh_url)
    assert stored.to_dict() == StudyConfig.from_yaml(paths[winner]).to_dict()
