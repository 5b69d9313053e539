"""Shared fixtures: tiny configs, image folders, storages (a real PostgreSQL database or a SQLite file).

Locally, tests that need PostgreSQL skip when ``EDGESEARCH_TEST_POSTGRES_URL`` is unset; under ``CI=true``
a missing server is a failure, never a skip. Start one with::

    eval "$(.ci/start-postgres.sh)"
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from devtools.postgres import ThrowawayServer, fresh_database, throwaway_postgres
from tests.helpers import TINY, TINY_TRAINER, SmallDisk, merge, write_folder

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under ``pytest -n 2`` two test processes, and the worker processes their tests start, share the
    # cores: one math thread each instead of one per core each, or the threads wait on each other.
    # Set before torch is imported; child processes inherit it.
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")


@pytest.fixture
def tiny_config() -> Callable[..., Any]:
    """A factory of small TrainConfigs that train in seconds on CPU."""
    from edgesearch.trainer import TrainConfig

    def make(**overrides: Any) -> TrainConfig:
        return TrainConfig.model_validate(merge(TINY, overrides))

    return make


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "data")


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trial artifacts of every test (and of the worker processes it starts) go to its tmp dir."""
    monkeypatch.setenv("EDGESEARCH_ARTIFACTS", str(tmp_path / "artifacts"))


@pytest.fixture(autouse=True)
def _fresh_data_cache() -> Iterator[None]:
    """Each test starts with an empty decoded-data cache, and leaves none behind (it may hold GiBs)."""
    from edgesearch.trainer import data_cache

    data_cache.clear()
    yield
    data_cache.clear()


POSTGRES_ENV = "EDGESEARCH_TEST_POSTGRES_URL"


def _require_postgres_server() -> str:
    """The test server's URL; skip (locally) or fail (under CI) when no server was started."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url:
        message = f'{POSTGRES_ENV} is not set: start a test server with: eval "$(.ci/start-postgres.sh)"'
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI: {message}")
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a brand-new, empty database on the test server, dropped (with its connections) afterwards."""
    with fresh_database(_require_postgres_server()) as url:
        yield url


@pytest.fixture
def private_postgres() -> Iterator[ThrowawayServer]:
    """A PostgreSQL server of this test's own (``.ci/start-postgres.sh``), for tests that restart it.

    Restarting the shared test server would cut off every other test using it at that moment (with
    ``pytest -n``, tests run side by side). Yields the server: its URL, binaries, data folder and owner.
    """
    _require_postgres_server()  # the same skip (locally) or failure (CI) when PostgreSQL is not set up
    # A port range of its own, away from the shared server's.
    with throwaway_postgres(first_port=56000 + os.getpid() % 1000) as server:
        yield server


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], SmallDisk]]:
    """Mount a tmpfs of ``size`` bytes: ``small_disk(8 << 20).path``. Needs root (``mount``): skipped
    locally without it, a failure under ``CI=true``; unmounted after the test."""
    import subprocess

    mounted: list[Path] = []

    def mount(size: int) -> SmallDisk:
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], capture_output=True, text=True
        )
        if done.returncode != 0:
            message = f"cannot mount a tmpfs (root needed): {done.stderr.strip()}"
            if os.environ.get("CI") == "true":
                pytest.fail(f"a small disk is required under CI: {message}")
            pytest.skip(message)
        mounted.append(path)
        return SmallDisk(path)

    try:
        yield mount
    finally:
        for path in mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file (not yet created) in the test's temporary folder."""
    return f"sqlite:///{tmp_path}/study.db"


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny study run to the end through ``study run``, its artifacts in a folder store (shared by tests)."""
    from edgesearch.cli import app

    root = tmp_path_factory.mktemp("finished")
    raw = {
        "name": "dash-study",
        "n_trials": 2,
        "sampler": {"kind": "random", "seed": 0},
        "pruner": {"kind": "none"},
        "trainer": merge(TINY_TRAINER, {"data": {"image_size": 64, "synthetic": {"n_images": 24}}}),
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    url = f"sqlite:///{root}/study.db"
    artifacts = root / "artifacts"
    args = ["study", "run", str(path), "--storage", url, "--runs-dir", str(root / "runs")]
    result = CliRunner().invoke(app, [*args, "--artifacts", str(artifacts)])
    assert result.exit_code == 0, result.output
    return {"name": "dash-study", "url": url, "artifacts": artifacts, "root": root}


@pytest.fixture
def pooled_postgres_url(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """A brand-new database reached through a real ``edgesearch pooler`` (PgBouncer, transaction pooling,
    4 server connections); skips locally (fails under CI) without PgBouncer."""
    from devtools.pooler import running_pooler

    if not any(Path(folder, "pgbouncer").is_file() for folder in [*os.environ["PATH"].split(":"), "/usr/sbin"]):
        message = "PgBouncer is not installed (Debian: apt-get install pgbouncer)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"PgBouncer is required under CI: {message}")
        pytest.skip(message)
    folder = tmp_path / "pooler"
    folder.mkdir()
    with running_pooler(postgres_url, folder, "--pool-size", "4") as pooler:
        yield pooler.url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The container tests last (a stable sort keeps every other order): under CI the image is built in the
    background while the rest run (.ci/run), and a test that waited for it at the start would hold a process."""
    items.sort(key=lambda item: item.path.name == "test_container.py")
