"""``edgesearch pooler``: PgBouncer in front of the study database, so hundreds of workers share a few connections."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgesearch.cli.console import err, out, user_errors, warn
from edgesearch.cli.options import StorageOption

if TYPE_CHECKING:
    from edgesearch.services.pooler import PoolerFiles

__all__ = ["app"]

app = typer.Typer()


@app.command("pooler")
def pooler_command(
    storage: StorageOption = None,
    listen: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 (or ::) lets other machines' workers in.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (1 to 65535).")] = 6432,
    pool_size: Annotated[
        int,
        typer.Option(
            "--pool-size", help="Server connections at most (2 to 1000); keep below PostgreSQL's max_connections."
        ),
    ] = 20,
    max_clients: Annotated[
        int,
        typer.Option("--max-clients", help="Client connections at most (1 to 100000); each worker holds up to 3."),
    ] = 1000,
    user: Annotated[
        str | None,
        typer.Option(help="When started as root: the system user PgBouncer runs as (default nobody)."),
    ] = None,
    folder: Annotated[
        Path | None,
        typer.Option(help="Folder for PgBouncer's config, log and pid files; default a private temporary one."),
    ] = None,
) -> None:
    """Run PgBouncer (transaction pooling) in front of the study database until stopped."""
    with user_errors():
        import os
        import shutil
        import tempfile

        from edgesearch.searcher.storage.urls import redact, resolve_storage_url
        from edgesearch.services import pooler

        url = resolve_storage_url(storage)
        shown = redact(url)
        executable = pooler.find_pgbouncer(os.environ.get("PATH"))
        run_as = pooler.run_as_user(user, is_root=os.geteuid() == 0)
        pooler.check_options(listen_addr=listen, listen_port=port, pool_size=pool_size, max_client_conn=max_clients)
        target = pooler.server_target(url)
        if folder is not None:
            pooler.check_folder(folder, run_as)  # before anything is written
        password = pooler.find_password(target, os.environ)
        pooler.ensure_fd_limit(max_clients + pool_size)
        pooler.check_server(target, password, pool_size=pool_size, shown_url=shown)
        temporary = folder is None
        where = Path(tempfile.mkdtemp(prefix="edgesearch-pooler-")) if folder is None else folder
        try:
            files = pooler.pgbouncer_files(
                url,
                listen_addr=listen,
                listen_port=port,
                pool_size=pool_size,
                max_client_conn=max_clients,
                folder=where,
                password=password,
            )
            ini = pooler.write_pooler_files(files, where, owner=run_as)
            _announce(files, shown, listen=listen, port=port, pool_size=pool_size, max_clients=max_clients)
            kept = " (removed once PgBouncer has read them)" if temporary else ""
            out.print(f"files in {where}{kept}; Ctrl-C or SIGTERM stops it")
            out.file.flush()
            code = pooler.run_foreground(
                pooler.pgbouncer_argv(executable, ini),
                run_as=run_as,
                secret=where / pooler.USERLIST_NAME,
                pidfile=where / pooler.PID_NAME,
                discard=where if temporary else None,
            )
        finally:
            # Gone once PgBouncer has read it; still here when it never got that far.
            (where / pooler.USERLIST_NAME).unlink(missing_ok=True)
            if temporary:
                shutil.rmtree(where, ignore_errors=True)
    if code not in (0, pooler.EXIT_FORCED):
        err.print(f"[bold red]failed:[/] pgbouncer exited with code {code} (its log lines are above)", markup=True)
    raise typer.Exit(code)


def _announce(files: PoolerFiles, shown: str, *, listen: str, port: int, pool_size: int, max_clients: int) -> None:
    """What the person starting the pooler needs: where it listens, what workers export, and the password's way."""
    from edgesearch.services.pooler import CLIENT_CONNECTIONS_PER_WORKER, is_loopback

    workers = max_clients // CLIENT_CONNECTIONS_PER_WORKER
    out.print(
        f"pooler: PgBouncer on {listen}:{port} for {shown}, transaction pooling; "
        f"at most {pool_size} server connections and {max_clients} clients (about {workers} workers)"
    )
    out.print(f"workers: export EDGESEARCH_STORAGE={files.client_url}")
    if files.auth_type == "trust":
        if not is_loopback(listen):
            warn(
                "the database asks no password, so neither does the pooler: anyone who "
                f"reaches {listen}:{port} uses the database as its user. Prefer a password (URL, PGPASSWORD, "
                "~/.pgpass)."
            )
    else:
        out.print(
            "workers give the database password as they would to the database: PGPASSWORD, or a ~/.pgpass line "
            "naming the pooler's host and port (it is never printed)"
        )
