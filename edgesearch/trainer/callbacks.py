"""The Callback hooks of :func:`edgesearch.trainer.train`, and checkpoint files.

A callback is the only way code outside the trainer reaches into the loop (the searcher's
pruning callback, the CLI's progress bar). Hooks are no-ops by default, so a callback
overrides only what it needs. ``on_epoch_end`` may raise to stop training: the exception
propagates out of ``train()`` after that epoch's checkpoints and history are on disk.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["Callback", "load_checkpoint", "save_atomic"]


class Callback:
    """Base class of training callbacks; every hook does nothing unless overridden."""

    def on_train_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int) -> None:
        """Called once, before the first epoch (``start_epoch`` > 0 when resuming)."""

    def on_batch_end(self, *, epoch: int, step: int, loss: torch.Tensor) -> None:
        """Called after each optimiser step; ``loss`` is a detached device tensor.

        Reading it (``.item()``) synchronises with the device: do so sparingly.
        """

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """Called with the epoch's history record once its checkpoints are written."""

    def on_train_end(self, history: list[dict[str, Any]]) -> None:
        """Called when training finishes normally."""


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a checkpoint."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers, no pickled code."""
    return torch.load(path, map_location="cpu", weights_only=True)
