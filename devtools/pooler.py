"""``edgesearch pooler`` (PgBouncer in transaction pooling) in front of a PostgreSQL URL for a ``with``.

The real command in a process of its own, as a service manager runs it: for tests of the pooler and of
workers behind it, and for benchmarks that meter many workers through one. It is stopped with SIGTERM at
the end, and PgBouncer must be gone with it.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.ports import free_port

START_TIMEOUT_S = 60.0


class PoolerFailed(RuntimeError):
    """The pooler did not start (its output is in the message), or PgBouncer outlived it."""


def pgbouncer_pids(folder: Path) -> list[int]:
    """PgBouncer processes started with an ini file in ``folder``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if any(b"pgbouncer" in a for a in argv[:1]) and any(str(folder).encode() in a for a in argv):
                    pids.append(int(proc.name))
    return pids


@dataclass
class Pooler:
    """A running ``edgesearch pooler``: its process, port, PgBouncer's folder, and where its output goes."""

    proc: subprocess.Popen[bytes]
    port: int
    folder: Path
    stdout: Path
    stderr: Path
    storage: str

    @property
    def url(self) -> str:
        """The storage URL through the pooler: its host and port in place of the server's."""
        from sqlalchemy.engine import make_url

        return make_url(self.storage).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@contextlib.contextmanager
def running_pooler(storage: str, log_folder: Path, *args: str, port: int | None = None) -> Iterator[Pooler]:
    """``edgesearch pooler --storage STORAGE ARGS`` on ``port`` (default a free one), once it accepts
    connections; its output in ``log_folder`` (``pooler.out``, ``pooler.err``). Stopped after, and
    :class:`PoolerFailed` when PgBouncer is still running then."""
    port = free_port() if port is None else port
    out, err = log_folder / "pooler.out", log_folder / "pooler.err"
    command = [sys.executable, "-m", "edgesearch", "pooler", "--storage", storage, "--port", str(port), *args]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr)
    deadline = time.monotonic() + START_TIMEOUT_S
    folder = None
    try:
        while folder is None or not _accepts(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise PoolerFailed(f"the pooler did not start:\n{out.read_text()}{err.read_text()}")
            # Its folder is in the line it prints once PgBouncer has its files.
            found = re.search(r"^files in (/\S+?)(?: \([^)]*\))?;", out.read_text(), flags=re.MULTILINE)
            folder = Path(found[1]) if found else None
            time.sleep(0.05)
        yield Pooler(proc, port, folder, out, err, storage)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    if pgbouncer_pids(folder):
        raise PoolerFailed(f"PgBouncer outlived the pooler (its folder: {folder})")


def _accepts(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
