"""Commands that only look at a study leave its database byte-identical, in either journal mode."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgesearch.cli import app
from edgesearch.services.dashboard import make_dashboard_server
from tests.helpers import write_folder

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make check`

runner = CliRunner()


def _copy(source_url: str, target: Path, journal_mode: str) -> Path:
    """A consistent copy of the study database (SQLite's backup), closed, in ``journal_mode``."""
    source = Path(source_url.removeprefix("sqlite:///"))
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
        assert dst.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode
    return target


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_read_only_commands_leave_the_database_byte_identical(
    finished_study: dict[str, Any], tmp_path: Path, journal_mode: str
) -> None:
    db = _copy(finished_study["url"], tmp_path / "study.db", journal_mode)
    url, name, artifacts = f"sqlite:///{db}", finished_study["name"], str(finished_study["artifacts"])
    before = _digest(db)
    images = write_folder(tmp_path / "inputs", n=2, size=32) / "images"
    commands = {
        "list": ["study", "list"],
        "show": ["study", "show", name],
        "best": ["study", "best", name, "--json"],
        "export": ["study", "export", name, "--format", "json"],
        "report": ["study", "report", name, "--out", str(tmp_path / "report"), "--artifacts", artifacts],
        "predict": ["predict", "--study", name, str(images), "--out", str(tmp_path / "masks"), "--device", "cpu"],
    }
    for label, args in commands.items():
        result = runner.invoke(app, [*args, "--storage", url])
        assert result.exit_code == 0, f"{label}: {result.output}"
        assert _digest(db) == before, f"study {label} changed the database"

    server = make_dashboard_server(url, Path(artifacts), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/api/studies", timeout=30) as response:
            assert response.status == 200 and name in response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert _digest(db) == before, "the dashboard changed the database"
    with contextlib.closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == journal_mode
