"""A disk that fills up under ``train`` and under a worker: one line naming the file and "no space
left on device", exit 1, no partial file, and a run (or a trial's retry) that resumes once there is space.

The disk is a real tmpfs of a few megabytes (``small_disk`` in conftest), so every library involved
(torch's checkpoint writer, matplotlib, json) meets a real ENOSPC.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from PIL import Image

from edgesearch.trainer import train
from edgesearch.trainer.config import TrainConfig
from tests.helpers import TINY_TRAINER, SmallDisk, merge, tiny_study

pytestmark = pytest.mark.slow

# last.pt after every epoch: the second test needs epoch 1 on the disk before epoch 2 fills it.
TRAINER = merge(TINY_TRAINER, {"epochs": 2, "checkpoint_interval": 0})
NO_SPACE = "no space left on device"


def _edgesearch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgesearch", *args], capture_output=True, text=True, timeout=300)


def _train_on(disk: SmallDisk, tmp_path: Path) -> tuple[Path, str]:
    """``edgesearch train`` with its run folder on ``disk``; it must fail with exit 1: (run folder, its one line)."""
    file = tmp_path / "tiny.yaml"
    file.write_text(yaml.safe_dump(TRAINER))
    run = disk.path / "run"
    result = _edgesearch("train", str(file), "--out", str(run))
    assert result.returncode == 1, result.stderr
    (line,) = _failure_lines(result)
    return run, line


def _failure_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("failed:")]


def _assert_every_file_whole(folder: Path) -> None:
    """No temporary file is left, and every file there reads back as what its name says."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        assert not path.name.endswith(".tmp"), f"left behind: {path}"
        assert path.stat().st_size > 0, f"empty: {path}"
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)


def test_train_stopped_by_a_full_disk_at_its_first_checkpoint_says_so_in_one_line(
    tmp_path: Path, small_disk: Callable[[int], SmallDisk]
) -> None:
    run, line = _train_on(small_disk(8 << 20), tmp_path)  # the tiny model's best.pt alone is ~57 MB
    assert f"{run / 'best.pt'}: {NO_SPACE}" in line and "nothing to resume from" in line, line
    _assert_every_file_whole(run)
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()


def test_train_stopped_by_a_full_disk_later_keeps_its_last_checkpoint_and_resumes_once_there_is_space(
    tmp_path: Path, small_disk: Callable[[int], SmallDisk]
) -> None:
    # How much one epoch writes, measured: the disk then holds epoch 1 whole but not a second checkpoint.
    measured = tmp_path / "measured"
    train(TrainConfig.model_validate(merge(TRAINER, {"epochs": 1})), run_dir=measured)
    best, last = ((measured / name).stat().st_size for name in ("best.pt", "last.pt"))
    disk = small_disk(best + last + best // 2)
    run, line = _train_on(disk, tmp_path)
    assert NO_SPACE in line and str(run) in line, line
    resume = re.search(r"continue once there is space with: (edgesearch train .*)$", line)
    assert resume is not None, line
    _assert_every_file_whole(run)
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1

    disk.resize(best * 2 + last * 2 + (8 << 20))
    command = shlex.split(resume.group(1))
    resumed = _edgesearch(*command[1:])
    assert resumed.returncode == 0, resumed.stderr
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    _assert_every_file_whole(run)


def _study_file(tmp_path: Path, name: str) -> Path:
    raw = tiny_study(name, n_trials=2)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_worker_on_a_full_disk_hands_its_trial_back_and_stops_instead_of_failing_every_trial(
    tmp_path: Path, sqlite_url: str, small_disk: Callable[[int], SmallDisk]
) -> None:
    disk = small_disk(8 << 20)
    assert _edgesearch("study", "create", str(_study_file(tmp_path, "full")), "--storage", sqlite_url).returncode == 0

    result = _edgesearch("worker", "full", "--storage", sqlite_url, "--runs-dir", str(disk.path))

    assert result.returncode == 1, result.stderr
    (line,) = _failure_lines(result)
    assert NO_SPACE in line and "best.pt" in line, line
    trials = optuna.load_study(study_name="full", storage=sqlite_url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # one trial taken, its retry queued
    assert NO_SPACE in trials[0].user_attrs["fail_reason"]
    _assert_every_file_whole(disk.path)

    disk.resize(512 << 20)
    again = _edgesearch("worker", "full", "--storage", sqlite_url, "--runs-dir", str(disk.path))
    assert again.returncode == 0, again.stderr
    states = [t.state for t in optuna.load_study(study_name="full", storage=sqlite_url).get_trials()]
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in states
