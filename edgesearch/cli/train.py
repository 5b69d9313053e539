"""``edgesearch train``: one training run from a study file or a trainer config."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from edgesearch.cli.console import EXIT_INTERRUPTED, EXIT_RUN_FAILED, err, fail, out, user_errors
from edgesearch.errors import DiskFullError
from edgesearch.trainer.callbacks import Callback

if TYPE_CHECKING:
    import torch

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
        from edgesearch.trainer.data_cache import check_budget

        check_budget()
        if resume is None:
            run_dir = out_dir or Path("runs") / f"{file.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
            check_new_or_empty(run_dir, label="--out", hint="choose a new one (or --resume its last.pt)")
        else:  # a resumed run goes on in its own folder unless told otherwise
            run_dir = out_dir or resume.parent
            if not _same_folder(run_dir, resume.parent):
                resumed = resume.parent
                hint = f"it is not the run being resumed ({resumed}); choose a new one, or --out {resumed}"
                check_new_or_empty(run_dir, label="--out", hint=hint)
        if force and resume is None:
            raise ConfigError("--force goes with --resume")
        result = _train_with_progress(config, run_dir, resume, force=force, file=file)
    out.print(
        f"best val IoU [bold]{result.best_val_iou:.4f}[/] at epoch {result.best_epoch}; "
        f"model: {escape(str(result.best_checkpoint))}; run directory: {escape(str(run_dir))}",
        markup=True,
    )


def _same_folder(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one existing folder (by any path to it)."""
    try:
        return a.is_dir() and b.is_dir() and a.samefile(b)
    except OSError:
        return False


class _Stopped(Exception):
    """Raised at the next batch once SIGTERM or Ctrl-C arrived."""


class _StopOnSignal(Callback):
    """Ends training at the next batch once ``stop`` is set: a checkpoint being written is finished first."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def on_batch_end(self, *, epoch: int, step: int, loss: torch.Tensor) -> None:
        if self.stop.is_set():
            raise _Stopped(f"stopped during epoch {epoch + 1}")


def _train_with_progress(
    config: TrainConfig, run_dir: Path, resume: Path | None, *, force: bool, file: Path
) -> TrainResult:
    from edgesearch.cli.train_progress import RichProgress
    from edgesearch.searcher.run.processes import stop_on_signals
    from edgesearch.trainer import NonFiniteLossError, train
    from edgesearch.trainer.device import resolve_device

    m, d = config.model, config.data
    source = f"folder {d.root}" if d.root else f"synthetic data ({d.synthetic.n_images} images)"
    seen = f"resized to {d.image_size}px" if d.resize else f"{d.window}px patches at scale {d.scale:g}"
    out.print(
        f"training {m.arch}/{m.encoder} on {source}, {seen}, {config.epochs} epochs, "
        f"device {resolve_device(config.device)}; run directory {run_dir}"
    )

    def announce(signal_name: str) -> None:
        err.print(f"{signal_name}: stopping at the next batch, the last checkpoint kept whole (again to force)")

    try:
        with RichProgress(console=out) as progress, stop_on_signals(announce) as stop:
            callbacks = [progress, _StopOnSignal(stop)]
            return train(config, callbacks=callbacks, run_dir=run_dir, resume_from=resume, force_resume=force)
    except NonFiniteLossError as exc:
        fail(f"{exc} (try a lower optim.lr)", EXIT_RUN_FAILED)
    except _Stopped as exc:
        _stopped(f"interrupted: {exc}", run_dir, file, "before the first epoch ended", EXIT_INTERRUPTED)
    except DiskFullError as exc:
        _stopped(str(exc), run_dir, file, "no epoch was saved", EXIT_RUN_FAILED, after="once there is space")


def _stopped(message: str, run_dir: Path, file: Path, nothing: str, code: int, *, after: str = "") -> NoReturn:
    """Fail with ``message`` and the command that resumes the run from its ``last.pt``, when there is one."""
    from edgesearch.trainer.run_files import LAST

    last = run_dir / LAST
    if not last.is_file():
        fail(f"{message}; {nothing}, nothing to resume from", code)
    when = f" {after}" if after else ""
    fail(f"{message}; continue{when} with: edgesearch train {file} --out {run_dir} --resume {last}", code)
