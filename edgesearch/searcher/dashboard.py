"""``edgesearch dashboard``: optuna-dashboard over the study storage, with the artifact store.

With the artifact store attached, each trial page shows the files the trial uploaded
(curves.png, edges.png, best.pt). The dashboard has no authentication, so it binds to
loopback by default and warns when told to bind anywhere else; reach it from another machine
through an SSH tunnel.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgesearch.console import err, out, user_errors
from edgesearch.errors import UserError
from edgesearch.searcher.worker_commands import ArtifactsOption, StorageOption

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer
    from wsgiref.types import WSGIApplication

__all__ = ["dashboard_app", "is_loopback", "make_dashboard_server"]

dashboard_app = typer.Typer()


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_dashboard_server(url: str, artifacts: Path, *, host: str, port: int) -> WSGIServer:
    """A threaded WSGI server running optuna-dashboard on the storage and the artifact folder."""
    # Imported here, not at the top: the HTTP server modules cost every other command's start-up ~50 ms.
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    from edgesearch.searcher.artifacts import open_artifact_store
    from edgesearch.searcher.storage import open_storage

    class _ThreadingServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a browser's open connections must not keep Ctrl-C waiting

    class _QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # one line per request is noise
            pass

    app: WSGIApplication = wsgi(open_storage(url, create=False), artifact_store=open_artifact_store(artifacts))
    try:
        return make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except socket.gaierror:
        raise UserError(f"--host: {host!r} is not a known host name or address") from None
    except OSError as exc:
        raise UserError(f"--port: cannot listen on {host}:{port}: {exc.strerror}; choose another --port") from None


@dashboard_app.command("dashboard")
def dashboard_command(
    storage: StorageOption = None,
    artifacts: ArtifactsOption = None,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback exposes it unauthenticated.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Watch studies in the browser: optuna-dashboard with each trial's pictures."""
    with user_errors():
        from edgesearch.searcher.artifacts import resolve_artifact_dir
        from edgesearch.searcher.storage import redact, resolve_storage_url

        url = resolve_storage_url(storage)
        folder = resolve_artifact_dir(artifacts)
        server = make_dashboard_server(url, folder, host=host, port=port)
    if not is_loopback(host):
        err.print(
            f"[bold yellow]warning:[/] the dashboard has no authentication and listens on {host}:{port}; "
            "anyone who can reach it can read and change studies. Prefer 127.0.0.1 and an SSH tunnel."
        )
    shown_host = f"[{host}]" if ":" in host else host
    out.print(f"dashboard for {redact(url)} (artifacts in {folder})")
    out.print(f"open http://{shown_host}:{server.server_port}/dashboard  (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
