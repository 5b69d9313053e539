"""A free TCP port on the loopback interface, for a server that a test or a benchmark starts."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port that nothing listens on now (the system picks it); free until something else binds it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
