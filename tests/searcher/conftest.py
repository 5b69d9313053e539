"""Storage fixtures: a fresh PostgreSQL database per test (real server) or a SQLite file.

Locally, tests that need PostgreSQL skip when ``EDGESEARCH_TEST_POSTGRES_URL`` is unset; under ``CI=true``
a missing server is a failure, never a skip (DESIGN.md §6). Start one with::

    eval "$(.ci/start-postgres.sh)"
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

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
    import psycopg
    from psycopg import sql

    server = make_url(_require_postgres_server())
    name = f"es_{uuid.uuid4().hex}"
    # The server's maintenance database; CREATE/DROP DATABASE cannot run inside a transaction.
    params: dict[str, Any] = {"host": server.host, "port": server.port, "user": server.username}
    params.update(password=server.password, dbname="postgres", connect_timeout=10)
    params = {key: value for key, value in params.items() if value is not None}
    with psycopg.connect(autocommit=True, **params) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(autocommit=True, **params) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file (not yet created) in the test's temporary folder."""
    return f"sqlite:///{tmp_path}/study.db"


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny study run to the end through ``study run``, its artifacts in a folder store (shared by tests)."""
    from edgesearch.cli import app
    from tests.conftest import merge
    from tests.searcher.test_worker import TINY_TRAINER

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
