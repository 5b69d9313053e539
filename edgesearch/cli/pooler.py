"""``edgesearch pooler``: PgBouncer in front of the study database, so hundreds of workers share a few connections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgesearch.cli.console import err, out, user_errors, warn
from edgesearch.cli.options import StorageOption
from edgesearch.services.pgbouncer_config import (
    CLIENT_CONNECTIONS_PER_WORKER,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_POOL_SIZE,
    DEFAULT_PORT,
    DEFAULT_RUN_AS,
    MAX_MAX_CLIENTS,
    MAX_POOL_SIZE,
    MIN_POOL_SIZE,
)

__all__ = ["app"]

app = typer.Typer()


@app.command("pooler")
def pooler_command(
    storage: StorageOption = None,
    listen: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 (or ::) lets other machines' workers in.")
    ] = DEFAULT_LISTEN,
    port: Annotated[int, typer.Option(help="Port to listen on (1 to 65535).")] = DEFAULT_PORT,
    pool_size: Annotated[
        int,
        typer.Option(
            "--pool-size",
            help=f"Server connections at most ({MIN_POOL_SIZE} to {MAX_POOL_SIZE}); "
            "keep below PostgreSQL's max_connections.",
        ),
    ] = DEFAULT_POOL_SIZE,
    max_clients: Annotated[
        int,
        typer.Option(
            "--max-clients",
            help=f"Client connections at most (1 to {MAX_MAX_CLIENTS}); "
            f"each worker holds up to {CLIENT_CONNECTIONS_PER_WORKER}.",
        ),
    ] = DEFAULT_MAX_CLIENTS,
    user: Annotated[
        str | None,
        typer.Option(help=f"When started as root: the system user PgBouncer runs as (default {DEFAULT_RUN_AS})."),
    ] = None,
    folder: Annotated[
        Path | None,
        typer.Option(help="Folder for PgBouncer's config, log and pid files; default a private temporary one."),
    ] = None,
) -> None:
    """Run PgBouncer (transaction pooling) in front of the study database until stopped."""
    with user_errors():
        from edgesearch.services.pooler import EXIT_FORCED, serve

        code = serve(
            storage,
            listen_addr=listen,
            listen_port=port,
            pool_size=pool_size,
            max_client_conn=max_clients,
            user=user,
            folder=folder,
            say=_say,
            warn=warn,
        )
    if code not in (0, EXIT_FORCED):
        err.print(f"[bold red]failed:[/] pgbouncer exited with code {code} (its log lines are above)", markup=True)
    raise typer.Exit(code)


def _say(line: str) -> None:
    """A line on stdout, flushed: PgBouncer's own log lines follow it on the terminal."""
    out.print(line)
    out.file.flush()
