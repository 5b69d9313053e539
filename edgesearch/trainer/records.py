"""EpochRecord: what one epoch of training reports, the contract between the loop and its readers.

The loop builds one record per epoch; the history (``history.json``, ``last.pt``), the progress
views, the curves plot, the searcher's pruning callback and the study report all read it by
these names. A ``TypedDict``, so the record stays plain JSON on disk and mypy checks every key.
"""

from __future__ import annotations

from typing import Final, TypedDict

__all__ = ["METRIC_KEYS", "STORED_KEYS", "EpochRecord", "stored_record"]


class EpochRecord(TypedDict):
    epoch: int
    """1-based number of the epoch."""
    stage: int
    """1: encoder frozen; 2: the whole model trains."""
    train_loss: float
    val_loss: float
    val_iou: float
    val_boundary_iou: float
    val_edge_corr: float
    lrs: dict[str, float]
    """Learning rate per parameter group (``head``, ``backbone``) at the end of the epoch."""
    lr_cut: bool
    """Whether the plateau tracker cut the learning rates after this epoch."""
    seconds: float


METRIC_KEYS: Final = ("val_iou", "val_boundary_iou", "val_edge_corr")
"""The validation metrics of a record; a study maximises one of them."""

STORED_KEYS: Final = ("epoch", "stage", "train_loss", "val_iou", "val_boundary_iou", "val_edge_corr")
"""The fields of a record kept per epoch in a trial's stored history (the rest is in history.json)."""


def stored_record(record: EpochRecord) -> dict[str, float | int]:
    """The :data:`STORED_KEYS` of ``record``: what a study stores per epoch of a trial."""
    return {key: record[key] for key in STORED_KEYS}
