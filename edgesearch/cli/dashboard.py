"""``edgesearch dashboard``: optuna-dashboard with each trial's pictures, on loopback by default."""

from __future__ import annotations

from typing import Annotated

import typer

from edgesearch.cli.console import err, out, user_errors, warn
from edgesearch.cli.options import ArtifactsOption, StorageOption
from edgesearch.services.dashboard import DEFAULT_HOST, DEFAULT_PORT

__all__ = ["app"]

app = typer.Typer()


@app.command("dashboard")
def dashboard_command(
    storage: StorageOption = None,
    artifacts: ArtifactsOption = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback exposes it unauthenticated.")
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = DEFAULT_PORT,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Also answer requests for this host name (repeatable); others than the bound"
            " address and localhost get 403.",
        ),
    ] = None,
) -> None:
    """Watch studies in the browser: optuna-dashboard with each trial's pictures."""
    with user_errors():
        from edgesearch.searcher.storage.artifacts import resolve_artifact_dir
        from edgesearch.searcher.storage.urls import redact, resolve_storage_url
        from edgesearch.services.dashboard import is_loopback, make_dashboard_server

        url = resolve_storage_url(storage)
        folder = resolve_artifact_dir(artifacts)
        server = make_dashboard_server(url, folder, host=host, port=port, allow_hosts=allow_host or ())
    if not is_loopback(host):
        warn(
            f"the dashboard has no authentication and listens on {host}:{port}; "
            "anyone who can reach it can read and change studies. Prefer 127.0.0.1 and an SSH tunnel."
        )
    shown_host = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::") and not allow_host:
        err.print(
            "note: requests are answered only for the bound address and localhost; "
            "add --allow-host NAME for the name other machines use to reach this one"
        )
    out.print(f"dashboard for {redact(url)} (artifacts in {folder})")
    out.print(f"open http://{shown_host}:{server.server_port}/dashboard  (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
