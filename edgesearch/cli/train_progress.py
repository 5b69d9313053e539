"""What a person watching ``edgesearch train`` sees: a bar over batches and one line per epoch, with its
seconds and the run's ETA (epochs left x the mean seconds per epoch so far)."""

from __future__ import annotations

import statistics
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from edgesearch.formatting import format_duration
from edgesearch.trainer.callbacks import Callback, describe_data

if TYPE_CHECKING:
    import torch

    from edgesearch.trainer.records import EpochRecord

__all__ = ["RichProgress", "format_epoch"]


def format_epoch(record: EpochRecord, epochs: int, eta_s: float | None = None) -> str:
    """One epoch's line; ``eta_s``: the run's time left, shown until the last epoch."""
    lrs = " ".join(f"{name} {lr:.1e}" for name, lr in record["lrs"].items())
    cut = " (lr cut)" if record["lr_cut"] else ""
    eta = f"  ETA {format_duration(eta_s)}" if eta_s is not None and record["epoch"] < epochs else ""
    return (
        f"epoch {record['epoch']:>3}/{epochs} stage {record['stage']}  loss {record['train_loss']:.4f}  "
        f"val IoU {record['val_iou']:.4f}  boundary IoU {record['val_boundary_iou']:.4f}  "
        f"edge corr {record['val_edge_corr']:+.3f}  lr {lrs}{cut}  {record['seconds']:.1f} s/epoch{eta}"
    )


class RichProgress(Callback):
    """Callback that draws the batch bar and prints each epoch's metrics."""

    def __init__(self, *, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.epochs = 0
        self.seconds: list[float] = []

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def on_data(self, *, train: int, val: int, source: str) -> None:
        self.console.print(describe_data(train=train, val=val, source=source), markup=False)

    def on_train_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int) -> None:
        self.epochs = epochs
        if start_epoch:
            self.console.print(f"resuming after epoch {start_epoch}")
        self.task = self.progress.add_task("epoch", total=steps_per_epoch)

    def on_batch_end(self, *, epoch: int, step: int, loss: torch.Tensor) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=step + 1, description=f"epoch {epoch + 1}/{self.epochs}")

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.seconds.append(record["seconds"])
        # Epochs left x the mean epoch of this run so far (a resumed run counts only its own).
        eta = max(self.epochs - record["epoch"], 0) * statistics.fmean(self.seconds)
        self.progress.console.print(format_epoch(record, self.epochs, eta))
        if self.task is not None:
            self.progress.reset(self.task)
