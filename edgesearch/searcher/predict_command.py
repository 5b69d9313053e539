"""``edgesearch predict``: masks for new images from a study's best trial or from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgesearch.console import out, user_errors

if TYPE_CHECKING:
    from edgesearch.trainer.config import TrainConfig

app = typer.Typer()

StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage", help="SQLAlchemy URL (for --study); default $EDGESEARCH_STORAGE, sqlite:///edgesearch.db"
    ),
]

# The checkpoint holds every weight, and the encoder_weights a run started from (a download, or
# a file on the training machine) may be out of reach here: prediction never loads them.
_NO_ENCODER_WEIGHTS: dict[str, Any] = {"model": {"encoder_weights": None}}


@app.command("predict")
def predict_command(
    inputs: Annotated[
        list[Path], typer.Argument(metavar="INPUT", help="Images, or folders of images (png, jpg, tif).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the masks (<stem>.png, 0/255); new or empty.")],
    study: Annotated[str | None, typer.Option(help="Use the best trial of this study.")] = None,
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
    storage: StorageOption = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = "auto",
) -> None:
    """Predict a mask for every INPUT image with a trained model, at the input's own size."""
    with user_errors():
        from edgesearch.errors import ConfigError, UserError
        from edgesearch.trainer.config import device_problem
        from edgesearch.trainer.predict import check_output_options, predict_files

        # The cheap checks first: a typo in an option is reported before a study or checkpoint is loaded.
        check_output_options(threshold=threshold, out_dir=out_dir)
        problem = device_problem(device)
        if problem is not None:
            raise ConfigError(f"--device: {problem}")
        if study is not None and checkpoint is None:
            if config_file is not None:
                raise UserError("--config goes with --checkpoint; a study stores its trials' configs")
            config, best, source = _from_study(study, storage)
        elif checkpoint is not None and study is None:
            config, best, source = _from_checkpoint(checkpoint, config_file)
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
            on_image=lambda image, mask: out.print(f"{image} -> {mask}", markup=False),
        )
    out.print(f"wrote {len(written)} mask(s) to {out_dir}", markup=False)


def _from_study(name: str, storage: str | None) -> tuple[TrainConfig, Path, str]:
    """The best trial's config, checkpoint and a description of it."""
    from edgesearch.errors import UserError
    from edgesearch.searcher.storage import resolve_storage_url
    from edgesearch.searcher.study import load_study
    from edgesearch.trainer.config import validate_train_config

    study, _ = load_study(name, resolve_storage_url(storage))
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(f"study {name!r} has no completed trial yet") from None
    where = f"study {name} trial {best.number}"
    raw, checkpoint = best.user_attrs.get("config"), best.user_attrs.get("best_checkpoint")
    if raw is None or checkpoint is None:
        raise UserError(f"{where}: no stored config or best_checkpoint (was it run by edgesearch worker?)")
    config = validate_train_config(raw, source=where, overrides=_NO_ENCODER_WEIGHTS)
    return config, Path(checkpoint), f"{where} (value {best.value:.4f}), {checkpoint}"


def _from_checkpoint(checkpoint: Path, config_file: Path | None) -> tuple[TrainConfig, Path, str]:
    """The checkpoint's config: ``--config`` or the run directory's config.json."""
    from edgesearch.errors import ConfigError
    from edgesearch.trainer.config import load_train_config, validate_train_config

    if not checkpoint.is_file():
        raise ConfigError(f"{checkpoint}: checkpoint not found")
    if config_file is not None:
        return load_train_config(config_file, overrides=_NO_ENCODER_WEIGHTS), checkpoint, f"{checkpoint}"
    path = checkpoint.parent / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; a run directory has one beside best.pt, or pass --config FILE") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable config.json ({exc})") from None
    return validate_train_config(raw, source=str(path), overrides=_NO_ENCODER_WEIGHTS), checkpoint, f"{checkpoint}"
