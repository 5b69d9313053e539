"""A study's disk: finished trials keep best.pt only, the artifact store links it, keep_checkpoints keeps the best K,
and study show says what the study takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from edgesearch.cli import app
from edgesearch.searcher.run.worker import run_worker
from edgesearch.searcher.storage.artifacts import LinkingArtifactStore, open_artifact_store, upload_trial_files
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.confirm import request
from edgesearch.searcher.study.disk import kept_trials, remove_checkpoints
from edgesearch.searcher.study.run_folders import CHECKPOINT_REMOVED_ATTR
from edgesearch.searcher.study.studies import create_study, load_study
from edgesearch.trainer.callbacks import Callback
from tests.helpers import SmallDisk, merge, tiny_study, write_folder

runner = CliRunner()
pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning"),
]


# --------------------------------------------------------------------------- the artifact store links best.pt


def _run_folder(path: Path, payload: bytes = b"weights") -> Path:
    path.mkdir(parents=True)
    for name in ("best.pt", "curves.png", "edges.png"):
        (path / name).write_bytes(payload + name.encode())
    return path


def _inode(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def test_an_upload_is_a_hard_link_to_the_run_folders_file(tmp_path: Path, sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url)
    trial = study.ask()
    run = _run_folder(tmp_path / "run")
    store = open_artifact_store(tmp_path / "artifacts")
    ids = upload_trial_files(trial, store, run)
    for name, artifact in ids.items():
        assert _inode(tmp_path / "artifacts" / artifact) == _inode(run / name)
    # What the store hands out is the file's bytes; a new best.pt written by rename leaves the artifact as it was.
    (tmp_path / "new.pt").write_bytes(b"a retry's weights")
    os.replace(tmp_path / "new.pt", run / "best.pt")
    with store.open_reader(ids["best.pt"]) as reader:
        assert reader.read() == b"weightsbest.pt"


def test_an_upload_across_file_systems_is_copied(tmp_path: Path, sqlite_url: str, small_disk: Any) -> None:
    disk: SmallDisk = small_disk(8 << 20)
    study = optuna.create_study(storage=sqlite_url)
    run = _run_folder(tmp_path / "run")
    ids = upload_trial_files(study.ask(), open_artifact_store(disk.path), run)
    stored = disk.path / ids["best.pt"]
    assert _inode(stored) != _inode(run / "best.pt") and stored.read_bytes() == b"weightsbest.pt"


def test_a_file_replaced_after_the_upload_opened_it_is_copied_as_it_was_opened(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run")
    store = LinkingArtifactStore(tmp_path / "artifacts")
    (tmp_path / "artifacts").mkdir()
    with open(run / "best.pt", "rb") as opened:
        (tmp_path / "new.pt").write_bytes(b"newer")
        os.replace(tmp_path / "new.pt", run / "best.pt")  # between the upload's open and its write
        store.write("some-id", opened)
    stored = tmp_path / "artifacts" / "some-id"
    assert stored.read_bytes() == b"weightsbest.pt" and _inode(stored) != _inode(run / "best.pt")


# --------------------------------------------------------------------------- keep_checkpoints, trials told by hand


def _study(url: str, name: str = "keep", **extra: Any) -> tuple[optuna.Study, StudyConfig]:
    config = StudyConfig.from_dict(tiny_study(name, **extra), source="test")
    create_study(config, url)
    return load_study(name, url)


def _finish(
    study: optuna.Study,
    value: float | tuple[float, float] | None,
    run: Path,
    store: Any = None,
    *,
    state: TrialState = TrialState.COMPLETE,
) -> optuna.Trial:
    """A trial with a run folder (best.pt, pictures) and, with ``store``, its uploads; told ``state`` with
    ``value`` (None: left running)."""
    trial = study.ask()
    trial.suggest_float("loss.edge_lambda", 0.0, 0.5)
    _run_folder(run)
    trial.set_user_attr("run_dir", str(run))
    trial.set_user_attr("best_checkpoint", str(run / "best.pt"))
    trial.set_user_attr("config", {"seed": 0})
    if store is not None:
        trial.set_user_attr("artifacts", upload_trial_files(trial, store, run))
    if state == TrialState.PRUNED:
        trial.report(float(value), step=1)  # type: ignore[arg-type]
        study.tell(trial, state=TrialState.PRUNED)
    elif value is not None:
        study.tell(trial, list(value) if isinstance(value, tuple) else value)
    return trial


def _kept(runs: Path) -> list[int]:
    return sorted(int(p.parent.name) for p in runs.glob("*/best.pt"))


def test_keep_checkpoints_keeps_exactly_the_best_k_and_removes_the_others_with_their_artifacts(
    tmp_path: Path, sqlite_url: str
) -> None:
    study, config = _study(sqlite_url, keep_checkpoints=2)
    store = open_artifact_store(tmp_path / "artifacts")
    runs = tmp_path / "runs"
    for number, value in enumerate([0.5, 0.9, 0.7, 0.6, 0.8]):
        _finish(study, value, runs / str(number), store)
    _finish(study, 0.95, runs / "5", store, state=TrialState.PRUNED)  # ranks after every complete trial

    assert sorted(remove_checkpoints(study, config, store)) == [0, 2, 3, 5]
    assert _kept(runs) == [1, 4]
    fresh, _ = load_study("keep", sqlite_url)
    for trial in fresh.trials:
        artifacts = trial.user_attrs["artifacts"]
        removed = trial.number not in (1, 4)
        assert (CHECKPOINT_REMOVED_ATTR in trial.user_attrs) == removed
        assert (tmp_path / "artifacts" / artifacts["best.pt"]).exists() != removed
        assert (tmp_path / "artifacts" / artifacts["edges.png"]).exists()  # the pictures stay
        assert (runs / str(trial.number) / "edges.png").exists()
    assert remove_checkpoints(study, config, store) == []  # nothing left to do: a second pass changes nothing


def test_without_keep_checkpoints_nothing_is_removed(tmp_path: Path, sqlite_url: str) -> None:
    study, config = _study(sqlite_url)
    for number, value in enumerate([0.5, 0.9, 0.7]):
        _finish(study, value, tmp_path / "runs" / str(number))
    assert remove_checkpoints(study, config, None) == [] and _kept(tmp_path / "runs") == [0, 1, 2]


def test_the_best_k_rank_complete_trials_by_value_then_pruned_ones_by_their_best_report() -> None:
    def told(number: int, state: TrialState, value: float) -> FrozenTrial:
        if state == TrialState.COMPLETE:
            trial = optuna.trial.create_trial(state=state, value=value)
        else:
            trial = optuna.trial.create_trial(state=state, intermediate_values={1: value, 2: value / 2})
        trial.number = number
        return trial

    trials = [
        told(0, TrialState.PRUNED, 0.99),
        told(1, TrialState.COMPLETE, 0.4),
        told(2, TrialState.PRUNED, 0.5),
        told(3, TrialState.COMPLETE, 0.8),
        told(4, TrialState.FAIL, 0.0),
    ]
    assert kept_trials(trials, 1, ()) == {3}
    assert kept_trials(trials, 3, ()) == {3, 1, 0}
    assert kept_trials(trials, 1, (2,)) == {3, 2}
    assert kept_trials(trials, 10, ()) == {0, 1, 2, 3}  # a failed trial is never a candidate either way


def test_the_source_of_a_confirmation_keeps_its_checkpoint(tmp_path: Path, sqlite_url: str) -> None:
    study, config = _study(sqlite_url, keep_checkpoints=1)
    runs = tmp_path / "runs"
    _finish(study, 0.3, runs / "0")
    request(study, config, top=1, seeds=1)  # trial 0, queued while it was the only one
    _finish(study, 0.9, runs / "1")
    _finish(study, 0.5, runs / "2")
    assert remove_checkpoints(study, config, None) == [2]
    assert _kept(runs) == [0, 1]


def test_a_folder_that_a_running_or_waiting_trial_names_is_never_touched(tmp_path: Path, sqlite_url: str) -> None:
    study, config = _study(sqlite_url, keep_checkpoints=1)
    runs = tmp_path / "runs"
    _finish(study, 0.9, runs / "0")
    _finish(study, 0.5, runs / "1")
    _finish(study, 0.4, runs / "2")
    running = study.ask()  # a retry resuming in trial 1's folder
    running.set_user_attr("run_dir", str(runs / "1"))
    study.enqueue_trial({"loss.edge_lambda": 0.1}, user_attrs={"run_dir": str(runs / "2")})  # a waiting one
    assert remove_checkpoints(study, config, None) == []
    assert _kept(runs) == [0, 1, 2]


def test_a_study_of_two_objectives_keeps_every_point_of_its_front(tmp_path: Path, sqlite_url: str) -> None:
    study, config = _study(sqlite_url, metric=["val_iou", "val_boundary_iou"], keep_checkpoints=1)
    runs = tmp_path / "runs"
    for number, values in enumerate([(0.9, 0.3), (0.5, 0.6), (0.4, 0.2), (0.8, 0.1)]):
        _finish(study, values, runs / str(number))
    assert sorted(remove_checkpoints(study, config, None)) == [2, 3]
    assert _kept(runs) == [0, 1]


REMOVE = """
import json, sys, time
from pathlib import Path
from edgesearch.cli.options import quiet_optuna
from edgesearch.searcher.storage.artifacts import open_artifact_store
from edgesearch.searcher.study.disk import remove_checkpoints
from edgesearch.searcher.study.studies import load_study
quiet_optuna()
study, config = load_study("keep", sys.argv[1])
store = open_artifact_store(Path(sys.argv[2]))
study.get_trials()  # read before the start, as a worker holds its view
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
print(json.dumps(remove_checkpoints(study, config, store)))
"""


@pytest.mark.slow
def test_two_workers_removing_at_once_both_succeed(tmp_path: Path, sqlite_url: str) -> None:
    study, _ = _study(sqlite_url, keep_checkpoints=1)
    store = open_artifact_store(tmp_path / "artifacts")
    runs = tmp_path / "runs"
    for number in range(12):
        _finish(study, number / 100, runs / str(number), store)
    go = tmp_path / "go"
    cmd = [sys.executable, "-c", REMOVE, sqlite_url, str(tmp_path / "artifacts"), str(go)]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    threading.Timer(3.0, go.touch).start()  # both have read the study by then (or read it right after)
    results = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], results
    removed = {number for out, _ in results for number in json.loads(out.strip().splitlines()[-1])}
    assert removed == set(range(11)), results
    assert _kept(runs) == [11]
    for trial in load_study("keep", sqlite_url)[0].trials:
        assert (tmp_path / "artifacts" / trial.user_attrs["artifacts"]["best.pt"]).exists() == (trial.number == 11)
        assert (CHECKPOINT_REMOVED_ATTR in trial.user_attrs) == (trial.number != 11)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_finished_trials_attribute_is_set_in_the_database(backend: str, request: pytest.FixtureRequest) -> None:
    from edgesearch.searcher.storage._optuna.handles import set_finished_trial_user_attr
    from edgesearch.searcher.storage.opening import open_storage

    url = request.getfixturevalue(f"{backend}_url")
    study = optuna.create_study(study_name="s", storage=open_storage(url, create=True))
    study.tell(study.ask(), 0.5)
    finished = study.trials[0]
    set_finished_trial_user_attr(study, finished, "note", {"a": 1})
    set_finished_trial_user_attr(study, finished, "note", "again")  # a second write replaces the first
    fresh = optuna.load_study(study_name="s", storage=url)
    assert fresh.trials[0].user_attrs == {"note": "again"} and fresh.trials[0].state == TrialState.COMPLETE


# --------------------------------------------------------------------------- trials a worker trains


def _trained(url: str, tmp_path: Path, name: str, **extra: Any) -> tuple[optuna.Study, StudyConfig]:
    """Study ``name`` of tiny 2-epoch trials (last.pt after every epoch), run to the end by ``run_worker``."""
    raw = tiny_study(name, **merge({"trainer": {"epochs": 2, "checkpoint_interval": 0}}, extra))
    create_study(StudyConfig.from_dict(raw, source="test"), url)
    store = open_artifact_store(tmp_path / "artifacts")
    run_worker(name, url, runs_dir=tmp_path / "runs", artifact_store=store, poll_seconds=0.1)
    return load_study(name, url)


def _du(*paths: Path) -> int:
    """Bytes on disk of ``paths`` together, by ``du`` itself (a file with two names counted once)."""
    done = subprocess.run(["du", "-s", "-B1", "-c", *map(str, paths)], capture_output=True, text=True, check=True)
    return int(done.stdout.splitlines()[-1].split()[0])


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f}"


def _check_show(name: str, url: str, artifacts: Path, trials: list[FrozenTrial], jobs: list[FrozenTrial]) -> None:
    """``study show``'s disk line and MB column against ``du`` of the study's folder and artifact files."""
    shown = runner.invoke(app, ["study", "show", name, "--storage", url, "--artifacts", str(artifacts)])
    assert shown.exit_code == 0, shown.output
    folder = Path(trials[0].user_attrs["run_dir"]).parent

    def files(trial: FrozenTrial) -> list[Path]:
        return [p for a in trial.user_attrs.get("artifacts", {}).values() if (p := artifacts / a).exists()]

    runs = _du(folder)
    total = _du(folder, *(p for t in [*trials, *jobs] for p in files(t)))
    finished = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    line = next(line for line in shown.output.splitlines() if line.startswith("disk: "))
    assert line == (
        f"disk: {_mb(total)} MB: runs {_mb(runs)} MB ({folder}), artifacts {_mb(total - runs)} MB ({artifacts}; "
        f"files linked to the runs counted there); {_mb(total / finished)} MB per finished trial"
    ), shown.output
    for trial in trials:
        cells = next(c for line in shown.output.splitlines() if (c := line.split("│"))[1:2] == [f" {trial.number:<5} "])
        assert cells[5].strip() == _mb(_du(Path(trial.user_attrs["run_dir"]), *files(trial))), cells


@pytest.mark.slow
def test_finished_trials_keep_best_pt_only_linked_into_the_store_and_predict_and_show_read_them(
    tmp_path: Path, sqlite_url: str
) -> None:
    study, _ = _trained(sqlite_url, tmp_path, "fin", n_trials=2)
    artifacts = tmp_path / "artifacts"
    for trial in study.trials:
        run = Path(trial.user_attrs["run_dir"])
        assert trial.state == TrialState.COMPLETE
        assert (run / "best.pt").is_file() and not (run / "last.pt").exists()
        assert _inode(artifacts / trial.user_attrs["artifacts"]["best.pt"]) == _inode(run / "best.pt")
    images = write_folder(tmp_path / "inputs", n=2, size=32) / "images"
    predicted = runner.invoke(
        app, ["predict", "--study", "fin", str(images), "--out", str(tmp_path / "masks"), "--storage", sqlite_url]
    )
    assert predicted.exit_code == 0, predicted.output
    _check_show("fin", sqlite_url, artifacts, study.trials, [])


@pytest.mark.slow
def test_a_pruned_trial_keeps_best_pt_only(tmp_path: Path, sqlite_url: str) -> None:
    good, hopeless = {"optim.lr": 3.0e-3}, {"optim.lr": 1.0e-7}
    study, _ = _trained(
        sqlite_url,
        tmp_path,
        "pruned",
        n_trials=3,
        trainer={"epochs": 3, "data": {"image_size": 64, "synthetic": {"n_images": 48}}},
        pruner={"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        space={"optim.lr": {"low": 1.0e-7, "high": 1.0e-2, "log": True}},
        enqueue=[good, good, hopeless],
    )
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.intermediate_values) for t in study.trials]
    for trial in pruned:
        run = Path(trial.user_attrs["run_dir"])
        assert (run / "best.pt").is_file() and not (run / "last.pt").exists()


class _StopAfterEpoch(Callback):
    """Asks the worker to stop at the end of the first epoch (as SIGTERM does): its trial is handed back."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def on_epoch_end(self, record: Any) -> None:
        if record["epoch"] == 1:
            self.stop.set()


@pytest.mark.slow
def test_an_interrupted_trial_keeps_last_pt_and_its_retry_resumes_from_it(tmp_path: Path, sqlite_url: str) -> None:
    raw = tiny_study("stop", **merge({"trainer": {"epochs": 2, "checkpoint_interval": 0}}, {"n_trials": 1}))
    create_study(StudyConfig.from_dict(raw, source="test"), sqlite_url)
    stop = threading.Event()
    run_worker("stop", sqlite_url, runs_dir=tmp_path / "runs", callbacks=[_StopAfterEpoch(stop)], stop=stop)
    study, _ = load_study("stop", sqlite_url)
    failed, waiting = study.trials
    last = Path(failed.user_attrs["run_dir"]) / "last.pt"
    assert (failed.state, waiting.state) == (TrialState.FAIL, TrialState.WAITING)
    assert torch.load(last, weights_only=True)["epoch"] == 1

    run_worker("stop", sqlite_url, runs_dir=tmp_path / "runs", poll_seconds=0.1)
    retry = load_study("stop", sqlite_url)[0].trials[1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] == 1
    assert retry.user_attrs["run_dir"] == failed.user_attrs["run_dir"] and not last.exists()
    assert (last.parent / "best.pt").is_file()


@pytest.mark.slow
def test_keep_checkpoints_in_a_worker_keeps_the_best_and_predict_best_report_and_confirm_still_work(
    tmp_path: Path, sqlite_url: str
) -> None:
    study, _ = _trained(
        sqlite_url, tmp_path, "kept", n_trials=3, keep_checkpoints=1, space={"optim.lr": {"low": 1e-4, "high": 1e-2}}
    )
    artifacts = tmp_path / "artifacts"
    best = study.best_trial.number
    for trial in study.trials:
        run = Path(trial.user_attrs["run_dir"])
        assert (run / "best.pt").exists() == (trial.number == best) and not (run / "last.pt").exists()
        assert (artifacts / trial.user_attrs["artifacts"]["best.pt"]).exists() == (trial.number == best)
        assert (CHECKPOINT_REMOVED_ATTR in trial.user_attrs) == (trial.number != best)
    images = write_folder(tmp_path / "inputs", n=2, size=32) / "images"
    storage = ["--storage", sqlite_url]
    predicted = runner.invoke(app, ["predict", "--study", "kept", str(images), "--out", str(tmp_path / "m"), *storage])
    assert predicted.exit_code == 0, predicted.output
    shown = runner.invoke(app, ["study", "best", "kept", *storage])
    assert shown.exit_code == 0 and f"checkpoint: {study.best_trial.user_attrs['best_checkpoint']}" in shown.output
    report = runner.invoke(app, ["study", "report", "kept", "--out", str(tmp_path / "report"), *storage])
    assert report.exit_code == 0, report.output

    # Re-trainings of the best two: one of them lost its checkpoint; the jobs train all the same.
    queued = runner.invoke(app, ["study", "confirm", "kept", "--top", "2", "--seeds", "1", *storage])
    assert queued.exit_code == 0, queued.output
    run_worker("kept", sqlite_url, runs_dir=tmp_path / "runs", artifact_store=open_artifact_store(artifacts))
    jobs = optuna.load_study(study_name="confirm:kept", storage=sqlite_url).trials
    assert [job.state for job in jobs] == [TrialState.COMPLETE] * 2
    for job in jobs:
        run = Path(job.user_attrs["run_dir"])
        assert (run / "best.pt").is_file() and not (run / "last.pt").exists()
    confirmed = runner.invoke(app, ["study", "best", "kept", "--confirmed", *storage])
    assert confirmed.exit_code == 0, confirmed.output
    source = load_study("kept", sqlite_url)[0].trials[int(confirmed.output.split("trial ")[1].split("'")[0])]
    removed = source.user_attrs.get(CHECKPOINT_REMOVED_ATTR)
    expected = f"removed ({removed})" if removed else source.user_attrs["best_checkpoint"]
    assert f"checkpoint (the search's run): {expected}" in confirmed.output
    _check_show("kept", sqlite_url, artifacts, load_study("kept", sqlite_url)[0].trials, jobs)
