"""``edgesearch predict``: masks for new images from a study's best trial or from a checkpoint."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from edgesearch.cli.console import out, user_errors
from edgesearch.cli.options import DeviceOption, PickOption, StorageOption

__all__ = ["app"]

app = typer.Typer()


class Blend(str, Enum):
    """How the sliding window weights overlapping windows (:data:`edgesearch.trainer.sliding.BLENDS`)."""

    gaussian = "gaussian"
    mean = "mean"


@app.command("predict")
def predict_command(
    inputs: Annotated[
        list[Path], typer.Argument(metavar="INPUT", help="Images, or folders of images (png, jpg, tif).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the masks (<stem>.png, 0/255); new or empty.")],
    study: Annotated[
        str | None, typer.Option(help="Use the best trial of this study (of two objectives: the --pick point).")
    ] = None,
    pick: PickOption = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Use this best.pt; its config is the config.json beside it (or --config).")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="Trainer config or study file for --checkpoint.")
    ] = None,
    threshold: Annotated[float, typer.Option(help="Foreground where the probability is >= this, in (0, 1).")] = 0.5,
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write <stem>.overlay.png: the predicted edges over the image.")
    ] = False,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average the predictions of the 4 flips of each input (4x the work).")
    ] = False,
    overlap: Annotated[
        float | None,
        typer.Option(
            metavar="X", help="How much sliding windows overlap, 0 <= X < 1; default: the run's data.overlap."
        ),
    ] = None,
    blend: Annotated[
        Blend | None, typer.Option(help="How overlapping windows are weighted; default: gaussian.")
    ] = None,
    storage: StorageOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Predict a mask for every INPUT image with a trained model, at the input's own size.

    A model trained on patches predicts each image whole by sliding window at the scale it trained
    at; one trained on resized images (data.image_size) predicts at that size.
    """
    with user_errors():
        from edgesearch.errors import ConfigError, UserError
        from edgesearch.trainer.device import device_problem
        from edgesearch.trainer.predict import (
            check_inference_options,
            check_output_options,
            checkpoint_config,
            predict_files,
        )

        # The cheap checks first: a typo in an option is reported before a study or checkpoint is loaded.
        check_output_options(threshold=threshold, out_dir=out_dir)
        check_inference_options(overlap=overlap)
        problem = device_problem(device)
        if problem is not None:
            raise ConfigError(f"--device: {problem}")
        if study is not None and checkpoint is None:
            if config_file is not None:
                raise UserError("--config goes with --checkpoint; a study stores its trials' configs")
            from edgesearch.searcher.storage.urls import resolve_storage_url
            from edgesearch.searcher.study.best import best_model
            from edgesearch.searcher.study.studies import load_study

            found, study_config = load_study(study, resolve_storage_url(storage), read_only=True)
            model = best_model(found, study_config, pick=pick.value if pick is not None else None)
            config, best, source = model.config, model.checkpoint, model.description
        elif checkpoint is not None and study is None:
            if pick is not None:
                raise UserError("--pick goes with --study (a point of its Pareto front); a checkpoint is one model")
            config, best, source = checkpoint_config(checkpoint, config_file), checkpoint, str(checkpoint)
        else:
            raise UserError("give exactly one of --study NAME or --checkpoint PATH")
        out.print(f"model: {source}", markup=False)
        written = predict_files(
            config,
            best,
            inputs,
            out_dir,
            threshold=threshold,
            overlay=overlay,
            device=device,
            overlap=overlap,
            blend=blend.value if blend is not None else None,
            tta=tta,
            on_image=lambda image, mask: out.print(f"{image} -> {mask}", markup=False),
        )
    out.print(f"wrote {len(written)} mask(s) to {out_dir}", markup=False)
