"""Options several commands share, defined once, and the small formatting helpers they share."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from edgesearch.formatting import format_value

__all__ = [
    "ArtifactsOption",
    "DeviceOption",
    "Pick",
    "PickOption",
    "RunsOption",
    "StorageOption",
    "format_value",
    "quiet_optuna",
]

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


class Pick(str, Enum):
    """The points of a two-objective study's Pareto front (:data:`edgesearch.searcher.study.front.PICKS`)."""

    val_iou = "val_iou"
    val_boundary_iou = "val_boundary_iou"
    knee = "knee"


PickOption = Annotated[
    Pick | None,
    typer.Option(
        "--pick",
        help="For a study of two objectives: which point of its Pareto front (the best of a metric, or the knee).",
    ),
]


def quiet_optuna() -> None:
    """Optuna's own INFO lines ("A new study created ...", "Trial 3 finished ...") repeat ours."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
