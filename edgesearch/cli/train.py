"""``edgesearch train``: one training run from a study file or a trainer config."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgesearch.cli.console import EXIT_RUN_FAILED, fail, out, user_errors

if TYPE_CHECKING:
    from edgesearch.trainer import TrainConfig, TrainResult

__all__ = ["app"]

app = typer.Typer()


@app.command("train")
def train_command(
    file: Annotated[Path, typer.Argument(help="Study file (its trainer: block is used) or trainer config, YAML.")],
    data: Annotated[Path | None, typer.Option(help="Data folder; overrides data.root (synthetic if unset).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Overrides epochs.")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Run directory (default runs/<file>-<time>); must be new or empty.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N | mps; overrides device.")] = None,
    resume: Annotated[Path | None, typer.Option(help="A last.pt to continue from (same config).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --resume: continue although loss, optim or data settings differ.")
    ] = False,
) -> None:
    """Train one model: progress per batch, one line per epoch, checkpoints in the run directory."""
    overrides: dict[str, Any] = {}
    if data is not None:
        overrides["data"] = {"root": str(data)}
    if epochs is not None:
        overrides["epochs"] = epochs
    if device is not None:
        overrides["device"] = device
    with user_errors():
        from edgesearch.errors import ConfigError
        from edgesearch.files import check_new_or_empty
        from edgesearch.trainer.config import load_train_config
        from edgesearch.trainer.device import device_problem

        # Checked before the file, so the message names the option rather than the file's device field.
        problem = device_problem(device) if device is not None else None
        if problem is not None:
            raise ConfigError(f"--device: {problem}")
        config = load_train_config(file, overrides=overrides)
        run_dir = out_dir or Path("runs") / f"{file.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        if resume is None:
            check_new_or_empty(run_dir, label="--out", hint="choose a new one (or --resume its last.pt)")
        elif run_dir.exists() and not run_dir.is_dir():
            check_new_or_empty(run_dir, label="--out")
        if force and resume is None:
            raise ConfigError("--force goes with --resume")
        result = _train_with_progress(config, run_dir, resume, force=force)
    out.print(
        f"best val IoU [bold]{result.best_val_iou:.4f}[/] at epoch {result.best_epoch}; "
        f"model: {result.best_checkpoint}; run directory: {run_dir}"
    )


def _train_with_progress(config: TrainConfig, run_dir: Path, resume: Path | None, *, force: bool) -> TrainResult:
    from edgesearch.cli.train_progress import RichProgress
    from edgesearch.trainer import NonFiniteLossError, train
    from edgesearch.trainer.device import resolve_device

    m, d = config.model, config.data
    source = f"folder {d.root}" if d.root else f"synthetic data ({d.synthetic.n_images} images)"
    out.print(
        f"training {m.arch}/{m.encoder} on {source}, {d.image_size}px, {config.epochs} epochs, "
        f"device {resolve_device(config.device)}; run directory {run_dir}"
    )
    try:
        with RichProgress(console=out) as progress:
            return train(config, callbacks=[progress], run_dir=run_dir, resume_from=resume, force_resume=force)
    except NonFiniteLossError as exc:
        fail(f"{exc} (try a lower optim.lr)", EXIT_RUN_FAILED)
