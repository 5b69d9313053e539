"""Options several commands share, defined once, and the small formatting helpers they share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["ArtifactsOption", "DeviceOption", "RunsOption", "StorageOption", "format_value", "quiet_optuna"]

StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage", help="SQLAlchemy URL; default $EDGESEARCH_STORAGE, the study file's, sqlite:///edgesearch.db"
    ),
]
RunsOption = Annotated[Path, typer.Option("--runs-dir", help="Where trial run directories go (<dir>/<study>/...).")]
ArtifactsOption = Annotated[
    Path | None,
    typer.Option(
        "--artifacts", help="Folder for trial pictures and weights; default $EDGESEARCH_ARTIFACTS, ./artifacts"
    ),
]
DeviceOption = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")]


def format_value(value: Any) -> str:
    """A parameter value for a table or a log line: floats to 4 significant digits, None as ``-``."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def quiet_optuna() -> None:
    """Optuna's own INFO lines ("A new study created ...", "Trial 3 finished ...") repeat ours."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
