"""``edgesearch export-model``: a study's best model, or a checkpoint, as one ONNX file for serving stacks."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from edgesearch.cli.console import out, user_errors
from edgesearch.cli.options import PickOption, StorageOption

__all__ = ["app"]

app = typer.Typer()


class ModelFormat(str, Enum):
    """The file formats a model is exported to."""

    onnx = "onnx"


@app.command("export-model")
def export_model_command(
    out_file: Annotated[
        Path, typer.Option("--out", help="The file to write (written whole; an existing file is replaced).")
    ],
    study: Annotated[
        str | None, typer.Option(help="Export the best trial of this study (of two objectives: the --pick point).")
    ] = None,
    pick: PickOption = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Export this best.pt; its config is the config.json beside it (or --config).")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="Trainer config or study file for --checkpoint.")
    ] = None,
    fmt: Annotated[ModelFormat, typer.Option("--format", help="onnx: one file, weights included.")] = (
        ModelFormat.onnx
    ),
    storage: StorageOption = None,
) -> None:
    """Export a trained model with what a predictor needs to use it (normalisation, sliding window).

    The ONNX graph takes an (N, C, H, W) float32 batch, normalised as in training, with H and W multiples
    of the encoder's output stride (32 for the usual encoders), and gives (N, 1, H, W) probabilities.
    `edgesearch predict --onnx FILE` predicts with it using onnxruntime alone.
    """
    with user_errors():
        from edgesearch.cli.predict import chosen_model
        from edgesearch.errors import UserError
        from edgesearch.files import writable_target

        try:  # cheap, before a study or a checkpoint is loaded: its folder exists, and it is no folder itself
            writable_target(out_file)
        except UserError as exc:
            raise UserError(f"--out: {exc}") from None
        config, best, source = chosen_model(
            study=study, pick=pick, checkpoint=checkpoint, config_file=config_file, storage=storage
        )
        out.print(f"model: {source}", markup=False)
        from edgesearch.trainer.onnx_export import export_onnx

        exported = export_onnx(config, best, out_file, source=source)
    info = exported.info
    shape = f"(N, {info.in_channels}, H, W) float32, H and W multiples of {info.stride}"
    out.print(
        f"wrote {out_file} ({fmt.value}, opset {exported.opset}): image {shape} -> probability (N, 1, H, W)",
        markup=False,
    )
