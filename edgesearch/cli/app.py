"""The ``edgesearch`` command: composes the sub-apps, nothing else.

Heavy libraries (torch, smp, optuna) are imported inside the commands that need them, so
``edgesearch --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from edgesearch import __version__
from edgesearch.cli import dashboard, export_model, pooler, predict, study, train, worker
from edgesearch.cli.console import out, settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="edgesearch",
    help="Hyperparameter search for edge-aware binary segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        out.print(f"edgesearch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    settings.debug = debug


app.add_typer(train.app)
app.add_typer(study.app, name="study")
app.add_typer(worker.app)
app.add_typer(dashboard.app)
app.add_typer(pooler.app)
app.add_typer(predict.app)
app.add_typer(export_model.app)


def main() -> None:
    app()
