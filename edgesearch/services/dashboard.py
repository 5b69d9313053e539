"""The dashboard server: optuna-dashboard over the study storage, with the artifact store.

With the artifact store attached, each trial page shows the files the trial uploaded
(curves.png, edges.png, best.pt). The dashboard has no authentication, so it binds to
loopback by default and warns when told to bind anywhere else; reach it from another machine
through an SSH tunnel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgesearch.errors import UserError
from edgesearch.services.host_check import is_loopback

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer
    from wsgiref.types import WSGIApplication

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "is_loopback", "make_dashboard_server"]

DEFAULT_HOST = "127.0.0.1"
"""Where the dashboard listens unless told otherwise: loopback, since it has no authentication."""

DEFAULT_PORT = 8080
"""The dashboard's port unless told otherwise."""


def make_dashboard_server(
    url: str, artifacts: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, allow_hosts: Sequence[str] = ()
) -> WSGIServer:
    """A threaded WSGI server running optuna-dashboard on the storage and the artifact folder.

    It answers only requests whose ``Host`` is ``host``, a loopback name or one of ``allow_hosts``
    (:class:`~edgesearch.services.host_check.HostCheck`). ``host`` may be an IPv6 address (``::1``).
    """
    # Imported here, not at the top: the HTTP server modules cost every other command's start-up ~50 ms.
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    from edgesearch.searcher.storage.artifacts import open_artifact_store
    from edgesearch.searcher.storage.opening import open_storage
    from edgesearch.services.host_check import HostCheck

    class _ThreadingServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a browser's open connections must not keep Ctrl-C waiting
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class _QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # one line per request is noise
            pass

    dashboard: WSGIApplication = wsgi(open_storage(url, read_only=True), artifact_store=open_artifact_store(artifacts))
    app = HostCheck(dashboard, bound=host, allowed=allow_hosts)
    try:
        return make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except socket.gaierror:
        raise UserError(f"--host: {host!r} is not a known host name or address") from None
    except OSError as exc:
        raise UserError(f"--port: cannot listen on {host}:{port}: {exc.strerror}; choose another --port") from None
