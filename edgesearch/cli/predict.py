"""``edgesearch predict``: masks for new images from a study's best trial, a checkpoint or an exported model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgesearch.cli.console import out, user_errors
from edgesearch.cli.options import DeviceOption, Pick, PickOption, StorageOption

if TYPE_CHECKING:
    from edgesearch.trainer.config import TrainConfig

__all__ = ["app", "chosen_model"]

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
    onnx: Annotated[
        Path | None,
        typer.Option(help="Use this model written by export-model, with onnxruntime on the CPU (no torch)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Foreground where the probability is >= this, in (0, 1); default 0.5 (--onnx: the file's)."),
    ] = None,
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
    at; one trained on resized images (data.image_size) predicts at that size. --onnx predicts the
    same way with a model exported by export-model, with onnxruntime alone.
    """
    with user_errors():
        from edgesearch.errors import ConfigError
        from edgesearch.trainer.device import device_problem
        from edgesearch.trainer.predict_io import check_output_options, check_window_options

        # The cheap checks first: a typo in an option is reported before a study or checkpoint is loaded.
        check_output_options(threshold=0.5 if threshold is None else threshold, out_dir=out_dir)
        check_window_options(overlap=overlap)
        problem = device_problem(device)
        if problem is not None:
            raise ConfigError(f"--device: {problem}")
        if onnx is not None:
            _check_onnx_options(study=study, pick=pick, checkpoint=checkpoint, config_file=config_file, device=device)
            # Only onnxruntime, NumPy and OpenCV from here on: torch is never imported.
            from edgesearch.trainer.onnx_model import load_onnx_model, predict_onnx_files

            exported = load_onnx_model(onnx)
            info = exported.info
            out.print(f"model: {onnx} ({info.arch}/{info.encoder} of {info.source})", markup=False)
            written = predict_onnx_files(
                exported,
                inputs,
                out_dir,
                threshold=threshold,
                overlay=overlay,
                overlap=overlap,
                blend=blend.value if blend is not None else None,
                tta=tta,
                on_image=lambda image, mask: out.print(f"{image} -> {mask}", markup=False),
            )
        else:
            from edgesearch.trainer.predict import predict_files

            config, best, source = chosen_model(
                study=study,
                pick=pick,
                checkpoint=checkpoint,
                config_file=config_file,
                storage=storage,
                or_else=" (or --onnx FILE, a model written by export-model)",
            )
            out.print(f"model: {source}", markup=False)
            written = predict_files(
                config,
                best,
                inputs,
                out_dir,
                threshold=0.5 if threshold is None else threshold,
                overlay=overlay,
                device=device,
                overlap=overlap,
                blend=blend.value if blend is not None else None,
                tta=tta,
                on_image=lambda image, mask: out.print(f"{image} -> {mask}", markup=False),
            )
    out.print(f"wrote {len(written)} mask(s) to {out_dir}", markup=False)


def chosen_model(
    *,
    study: str | None,
    pick: Pick | None,
    checkpoint: Path | None,
    config_file: Path | None,
    storage: str | None,
    or_else: str = "",
) -> tuple[TrainConfig, Path, str]:
    """(config, checkpoint, a line saying which model) of ``--study NAME [--pick P]`` (its best trial) or
    ``--checkpoint FILE [--config FILE]``: exactly one of them, each with its own options only (``or_else``
    ends the message that asks for one: the command's other way to give a model)."""
    from edgesearch.errors import UserError

    if study is not None and checkpoint is None:
        if config_file is not None:
            raise UserError("--config goes with --checkpoint; a study stores its trials' configs")
        from edgesearch.searcher.storage.urls import resolve_storage_url
        from edgesearch.searcher.study.best import best_model
        from edgesearch.searcher.study.studies import load_study

        found, study_config = load_study(study, resolve_storage_url(storage), read_only=True)
        model = best_model(found, study_config, pick=pick.value if pick is not None else None)
        return model.config, model.checkpoint, model.description
    if checkpoint is not None and study is None:
        if pick is not None:
            raise UserError("--pick goes with --study (a point of its Pareto front); a checkpoint is one model")
        from edgesearch.trainer.predict import checkpoint_config

        return checkpoint_config(checkpoint, config_file), checkpoint, str(checkpoint)
    raise UserError(f"give exactly one of --study NAME or --checkpoint PATH{or_else}")


def _check_onnx_options(
    *, study: str | None, pick: Pick | None, checkpoint: Path | None, config_file: Path | None, device: str
) -> None:
    """Raise a UserError for an option that chooses another model than ``--onnx``'s, or a device it cannot use."""
    from edgesearch.errors import UserError

    given = [
        name
        for name, value in (
            ("--study", study),
            ("--pick", pick),
            ("--checkpoint", checkpoint),
            ("--config", config_file),
        )
        if value is not None
    ]
    if given:
        raise UserError(
            f"{', '.join(given)}: not with --onnx FILE, which is the model; "
            "give exactly one of --study NAME, --checkpoint PATH or --onnx FILE"
        )
    if device not in ("auto", "cpu"):
        raise UserError(f"--device {device}: --onnx runs on onnxruntime's CPU; allowed with --onnx: auto, cpu")
