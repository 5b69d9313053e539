"""The ``edgesearch`` command: composes the sub-apps, nothing else.

Heavy libraries (torch, smp, optuna) are imported inside the commands that need them, so
``edgesearch --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from edgesearch.console import settings
from edgesearch.searcher import commands as searcher_commands
from edgesearch.searcher import dashboard as dashboard_commands
from edgesearch.searcher import predict_command, worker_commands
from edgesearch.trainer import commands as trainer_commands

app = typer.Typer(
    name="edgesearch",
    help="Hyperparameter search for edge-aware binary segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks for errors.")] = False,
) -> None:
    settings.debug = debug


app.add_typer(trainer_commands.app)
app.add_typer(searcher_commands.study_app, name="study")
app.add_typer(worker_commands.worker_app)
app.add_typer(dashboard_commands.dashboard_app)
app.add_typer(predict_command.app)


def main() -> None:
    app()
