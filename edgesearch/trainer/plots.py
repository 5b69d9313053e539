"""curves.png: loss and validation metrics per epoch, the stage switch marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

__all__ = ["plot_curves"]


def plot_curves(history: list[dict[str, Any]], path: Path, *, title: str = "") -> None:
    """Write a two-panel PNG (losses; IoU, boundary IoU, edge correlation) for ``history``."""
    fig = Figure(figsize=(10, 4), dpi=100)
    ax_loss, ax_metric = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    ax_loss.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train loss")
    ax_loss.plot(epochs, [row["val_loss"] for row in history], marker="o", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    for key, label in (("val_iou", "IoU"), ("val_boundary_iou", "boundary IoU"), ("val_edge_corr", "edge corr")):
        ax_metric.plot(epochs, [row[key] for row in history], marker="o", label=label)
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylim(min(0.0, *(row["val_edge_corr"] for row in history)) if history else 0.0, 1.0)
    switch = next((row["epoch"] for row in history if row["stage"] == 2), None)
    if switch is not None and history[0]["stage"] == 1:
        for ax in (ax_loss, ax_metric):
            ax.axvline(switch - 0.5, color="grey", linestyle="--", linewidth=1)
        ax_metric.text(switch - 0.5, 0.02, " backbone joins", color="grey", fontsize=8)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
