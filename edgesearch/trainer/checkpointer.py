"""Checkpoints that cost the training loop almost nothing: copied off the device, written behind it.

Why: on a GPU an epoch of a typical dataset takes about a second, and writing ``last.pt`` (the
model with its Adam state: 172 MB for U-Net/resnet18) every epoch took a quarter of the run, on
every worker of a study sharing one runs folder. So:

- at each epoch's end the state is copied to host memory (a snapshot: training goes on changing
  the tensors in place), and the best weights are copied when they improve;
- ``last.pt`` (and ``best.pt`` when it changed) is written from the latest snapshot by a background
  thread, at most every ``interval`` seconds, and always by :meth:`Checkpointer.close`: at the end,
  on a requested stop, when pruned and when failed. One write is in flight at most; the next one
  waits for it.

The promise: a ``kill -9`` loses at most max(one epoch, ``interval``) of training; any other end
loses nothing but the epoch under way. Files are written by :func:`~edgesearch.trainer.checkpoint.save_checkpoint`
(atomic), so a kill mid-write leaves the previous file whole.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch

from edgesearch.trainer.checkpoint import save_checkpoint

__all__ = ["Checkpointer", "to_host"]


def to_host(obj: Any) -> Any:
    """A deep copy of ``obj`` whose tensors live in host memory, detached from anything training changes."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: to_host(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [to_host(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(to_host(value) for value in obj)
    return obj


class Checkpointer:
    """``best.pt`` and ``last.pt`` of one run, written by one background thread on a cadence.

    ``interval``: seconds between writes of ``last.pt``; 0 writes after every epoch.
    """

    def __init__(self, last: Path, best: Path, *, interval: float) -> None:
        self.last, self.best = last, best
        self.interval = interval
        self._snapshot: dict[str, Any] | None = None
        self._best_weights: dict[str, Any] | None = None
        self._unwritten = False
        self._best_unwritten = False
        self._written_at = time.monotonic()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.blocked_s = 0.0
        """Seconds the training loop spent in this object (copies, waiting for a write): the cost it pays."""

    def improved(self, model_state: dict[str, Any]) -> None:
        """The model just reached its best metric: keep a host copy of its weights."""
        started = time.perf_counter()
        self._best_weights = to_host(model_state)
        self._best_unwritten = True
        self.blocked_s += time.perf_counter() - started

    def epoch_end(self, state: dict[str, Any]) -> None:
        """Snapshot ``state`` (what ``last.pt`` holds); write it when ``interval`` has passed."""
        started = time.perf_counter()
        self._raise_pending()
        self._snapshot = to_host(state)
        self._unwritten = True
        if time.monotonic() - self._written_at >= self.interval:
            self._write_in_background()
        self.blocked_s += time.perf_counter() - started

    def close(self) -> None:
        """Write what is not written yet (the latest snapshot and best weights) and wait for it.

        Raises the error of a write that failed (e.g. :class:`~edgesearch.errors.DiskFullError`).
        """
        started = time.perf_counter()
        try:
            self._join()
            self._raise_pending()
            if self._unwritten or self._best_unwritten:
                self._write(*self._take())
        finally:
            self.blocked_s += time.perf_counter() - started

    def _take(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        snapshot = self._snapshot if self._unwritten else None
        best = self._best_weights if self._best_unwritten else None
        self._unwritten = self._best_unwritten = False
        self._written_at = time.monotonic()
        return snapshot, best

    def _write(self, snapshot: dict[str, Any] | None, best: dict[str, Any] | None) -> None:
        # best.pt first: a last.pt on disk never names a best epoch whose weights are not there yet.
        if best is not None:
            save_checkpoint(best, self.best)
        if snapshot is not None:
            save_checkpoint(snapshot, self.last)

    def _write_in_background(self) -> None:
        self._join()  # one write in flight at most
        self._raise_pending()
        snapshot, best = self._take()

        def write() -> None:
            try:
                self._write(snapshot, best)
            except BaseException as exc:  # handed to the training thread at its next call
                self._error = exc

        self._thread = threading.Thread(target=write, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
