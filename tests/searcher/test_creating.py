"""``study create`` is atomic: killed part-way it leaves nothing under the study's name, and the
next create makes the whole study, its known-good points enqueued exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import psycopg
import pytest
import yaml
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from edgesearch.cli import app
from edgesearch.searcher.study.config import MAX_ENQUEUE, MAX_NAME_LENGTH, StudyConfig
from edgesearch.searcher.study.creating import STALE_AFTER_S, hidden_name, is_hidden, is_stale
from edgesearch.searcher.study.run_folders import RUN_ID_ATTR
from edgesearch.searcher.study.studies import create_study, load_study
from tests.helpers import TINY_TRAINER

runner = CliRunner()


def _raw(name: str, n_points: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "n_trials": 3,
        "trainer": TINY_TRAINER,
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
        "enqueue": [{"loss.edge_lambda": round(0.5 * i / max(n_points, 1), 6)} for i in range(n_points)],
    }


def _sqlite_studies(path: Path) -> dict[str, int]:
    """study name -> trials, read with the standard library while another process writes."""
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as connection:
        rows = connection.execute(
            "SELECT s.study_name, COUNT(t.trial_id) FROM studies AS s "
            "LEFT JOIN trials AS t ON t.study_id = s.study_id GROUP BY s.study_id"
        )
        return dict(rows)


def test_hidden_names_never_clash_with_a_study_name_and_date_themselves() -> None:
    name = hidden_name("lambda-search", now=1_000_000)
    assert is_hidden(name) and not is_hidden("lambda-search")
    with pytest.raises(ValueError, match="cannot be a study name"):
        StudyConfig.from_dict({**_raw("x"), "name": name}, source="test")
    assert not is_stale(name, now=1_000_000 + STALE_AFTER_S)
    assert is_stale(name, now=1_000_000 + STALE_AFTER_S + 1)
    assert is_stale("creating:undated") and not is_stale("lambda-search", now=10**12)


@pytest.mark.slow
def test_a_create_killed_while_enqueuing_leaves_nothing_and_the_next_create_enqueues_each_point_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    file = tmp_path / "big.yaml"
    file.write_text(yaml.safe_dump(_raw("big", MAX_ENQUEUE)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgesearch", "study", "create", str(file), "--storage", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(sqlite3.Error):  # the file or its tables may not be there yet
                seen = _sqlite_studies(db)
            if any(20 <= n < MAX_ENQUEUE for n in seen.values()):
                break
            time.sleep(0.005)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the create finished before it could be killed part-way"
    after_kill = _sqlite_studies(db)
    assert "big" not in after_kill, after_kill  # the study's name appears only once it is whole
    (partial,) = after_kill
    assert is_hidden(partial) and 20 <= after_kill[partial] < MAX_ENQUEUE
    listing = runner.invoke(app, ["study", "list", "--storage", url])
    assert listing.exit_code == 0 and "no studies" in listing.output, listing.output

    again = runner.invoke(app, ["study", "create", str(file), "--storage", url])
    assert again.exit_code == 0 and "study big created" in again.output, again.output
    study, _ = load_study("big", url)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(study.get_trials()) == len(waiting) == MAX_ENQUEUE
    expected = [point["loss.edge_lambda"] for point in _raw("big", MAX_ENQUEUE)["enqueue"]]
    assert [t.system_attrs["fixed_params"]["loss.edge_lambda"] for t in waiting] == expected

    deleted = runner.invoke(app, ["study", "delete", "big", "--storage", url, "--yes"])
    assert deleted.exit_code == 0, deleted.output


def test_the_next_create_removes_a_dead_creates_leftover_but_not_a_live_one(sqlite_url: str) -> None:
    storage = optuna.storages.RDBStorage(sqlite_url)
    dead = hidden_name("other", now=time.time() - STALE_AFTER_S - 60)
    live = hidden_name("other")
    for name in (dead, live):
        optuna.create_study(study_name=name, storage=storage).enqueue_trial({"loss.edge_lambda": 0.1})

    listing = runner.invoke(app, ["study", "list", "--storage", sqlite_url])
    assert "no studies" in listing.output and "creating" not in listing.output
    missing = runner.invoke(app, ["study", "show", "other", "--storage", sqlite_url])
    assert missing.exit_code == 2 and "studies there: none" in missing.stderr

    create_study(StudyConfig.from_dict(_raw("fresh"), source="test"), sqlite_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    assert sorted(names) == sorted([live, "fresh"])


def test_a_study_half_created_by_an_older_version_is_named_and_delete_removes_it(
    tmp_path: Path, sqlite_url: str
) -> None:
    # What a create killed between its writes used to leave: the run id stored, the config not.
    half = optuna.create_study(study_name="half", storage=sqlite_url, direction="maximize")
    half.set_user_attr(RUN_ID_ATTR, "0badc0de")
    file = tmp_path / "half.yaml"
    file.write_text(yaml.safe_dump(_raw("half", 2)))

    refused = runner.invoke(app, ["study", "create", str(file), "--storage", sqlite_url])
    assert refused.exit_code == 2, refused.output
    assert "half-created" in refused.stderr and "edgesearch study delete half" in refused.stderr

    deleted = runner.invoke(app, ["study", "delete", "half", "--storage", sqlite_url, "--yes"])
    assert deleted.exit_code == 0 and "deleted study half (0 trials)" in deleted.output, deleted.output
    created = runner.invoke(app, ["study", "create", str(file), "--storage", sqlite_url])
    assert created.exit_code == 0 and "study half created" in created.output, created.output
    study, _ = load_study("half", sqlite_url)
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 2


def test_a_study_file_enqueuing_too_many_points_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    file = tmp_path / "many.yaml"
    file.write_text(yaml.safe_dump(_raw("many", MAX_ENQUEUE + 1)))
    result = runner.invoke(app, ["study", "create", str(file), "--storage", sqlite_url])
    assert result.exit_code == 2, result.output
    assert "enqueue" in result.stderr and str(MAX_ENQUEUE) in result.stderr and "Traceback" not in result.output
    assert optuna.get_all_study_summaries(sqlite_url, include_best_trial=False) == []


@pytest.mark.parametrize("length", [MAX_NAME_LENGTH, 600])
def test_study_names_up_to_the_limit_live_on_postgresql_and_longer_ones_touch_nothing(
    tmp_path: Path, postgres_url: str, length: int
) -> None:
    name = "n" * length
    file = tmp_path / "long.yaml"
    file.write_text(yaml.safe_dump(_raw(name, 1)))
    result = runner.invoke(app, ["study", "create", str(file), "--storage", postgres_url])
    if length <= MAX_NAME_LENGTH:
        assert result.exit_code == 0 and f"study {name} created" in result.output, result.output
        study, _ = load_study(name, postgres_url)
        assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
        return
    assert result.exit_code == 2, result.output
    assert "name" in result.stderr and f"at most {MAX_NAME_LENGTH} characters" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr) < 400
    with psycopg.connect(make_url(postgres_url).set(drivername="postgresql").render_as_string(False)) as connection:
        tables = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)  # refused before the storage was opened: not even Optuna's tables
