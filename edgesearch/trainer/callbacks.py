"""The Callback hooks of :func:`edgesearch.trainer.train`.

A callback is the only way code outside the trainer reaches into the loop (the searcher's
pruning callback, the CLI's progress bar). Hooks are no-ops by default, so a callback
overrides only what it needs. ``on_epoch_end`` may raise to stop training: the exception
propagates out of ``train()`` after that epoch's checkpoints and history are on disk (a
:class:`StopForGood` says that nothing will resume the run: its ``last.pt`` is then not written).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from edgesearch.trainer.records import EpochRecord

__all__ = ["Callback", "StopForGood", "describe_data"]


def describe_data(*, train: int, val: int, source: str) -> str:
    """The line that says what a run trains on: ``data: 33 train + 4 val images from DIR``."""
    return f"data: {train} train + {val} val images from {source}"


class StopForGood(Exception):
    """Raised by a callback's ``on_epoch_end`` to end a run that nothing will resume (a pruned study trial).

    It propagates out of ``train()`` as any other exception does, and ``best.pt`` is written as for any
    end; but the run's state is not written to ``last.pt``, the largest write of a run's end, since no
    one would read it.
    """


class Callback:
    """Base class of training callbacks; every hook does nothing unless overridden."""

    def on_data(self, *, train: int, val: int, source: str) -> None:
        """Called once the data is checked and split: the images of each split, and the folder (or
        ``synthetic shapes``) they come from; before the model is built."""

    def on_train_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int) -> None:
        """Called once, before the first epoch (``start_epoch`` > 0 when resuming)."""

    def on_batch_end(self, *, epoch: int, step: int, loss: torch.Tensor) -> None:
        """Called after each optimiser step; ``loss`` is a detached device tensor.

        Reading it (``.item()``) synchronises with the device: do so sparingly.
        """

    def on_epoch_end(self, record: EpochRecord) -> None:
        """Called with the epoch's record once its checkpoints are written."""

    def on_train_end(self, history: list[EpochRecord]) -> None:
        """Called when training finishes normally."""
