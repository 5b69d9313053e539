"""The pictures of a run: curves.png (metrics per epoch) and edges.png (the edge overlay of its model).

``curves.png``: loss and validation metrics per epoch, the stage switch marked. ``edges.png``:
the best- and worst-IoU validation images with their true and predicted edge bands, the
report's "good" and "bad" figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import nn

from edgesearch.files import atomic_write
from edgesearch.trainer.config import TrainConfig
from edgesearch.trainer.data import SegmentationDataset, build_datasets
from edgesearch.trainer.device import resolve_device
from edgesearch.trainer.images import to_display
from edgesearch.trainer.inference import probability_maps
from edgesearch.trainer.metrics import image_edge_correlations, iou
from edgesearch.trainer.overlay import BOTH_EDGE_COLOUR, PRED_EDGE_COLOUR, TRUE_EDGE_COLOUR, edge_overlay
from edgesearch.trainer.predict import load_model
from edgesearch.trainer.records import EpochRecord

__all__ = ["draw_edge_overlay", "plot_curves", "write_edge_overlay"]

Ranking = list[tuple[int, float]]


def _save(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_curves(history: list[EpochRecord], path: Path, *, title: str = "") -> None:
    """Write a two-panel PNG (losses; IoU, boundary IoU, edge correlation) for ``history``."""
    fig = Figure(figsize=(10, 4), dpi=100)
    ax_loss, ax_metric = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    ax_loss.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train loss")
    ax_loss.plot(epochs, [row["val_loss"] for row in history], marker="o", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_metric.plot(epochs, [row["val_iou"] for row in history], marker="o", label="IoU")
    ax_metric.plot(epochs, [row["val_boundary_iou"] for row in history], marker="o", label="boundary IoU")
    ax_metric.plot(epochs, [row["val_edge_corr"] for row in history], marker="o", label="edge corr")
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
        # No panel title; a fixed y spares its automatic placement, which measures the ticks at every draw.
        ax.set_title("", y=1.0)
    if title:
        fig.suptitle(title)
    # Fixed margins: an automatic layout measures every label first and doubles the drawing time.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.88 if title else 0.95, wspace=0.2)
    _save(fig, path)


def _image_iou(pred: np.ndarray, target: np.ndarray) -> float:
    return iou(torch.from_numpy(pred > 0)[None, None], torch.from_numpy(target > 0)[None, None])


def _image_edge_corr(prob: np.ndarray, target: np.ndarray, width: int) -> float:
    prob_t = torch.from_numpy(prob.astype(np.float32))[None, None]
    target_t = torch.from_numpy((target > 0).astype(np.float32))[None, None]
    return float(image_edge_correlations(prob_t, target_t, width)[0])


def _predict_masks(model: nn.Module, images: list[np.ndarray], config: TrainConfig) -> list[np.ndarray]:
    return [(prob >= 0.5).astype(np.uint8) for prob in probability_maps(model, images, config=config)]


def write_edge_overlay(
    config: TrainConfig,
    checkpoint: Path,
    path: Path,
    *,
    n_good: int = 2,
    n_bad: int = 2,
    device: str = "cpu",
) -> dict[str, Ranking]:
    """Write one PNG: the ``n_good`` best- and ``n_bad`` worst-IoU validation images with their edges.

    The validation split is rebuilt as training builds it, every image is predicted (threshold
    0.5) at its own size, and IoU is taken per image (both masks empty counts as 1.0); each panel
    also names the image's edge correlation (:func:`~edgesearch.trainer.metrics.image_edge_correlations`). A split
    with fewer images than ``n_good + n_bad`` shows each image once, the good row first.
    Returns ``{"good": [(val index, IoU), ...], "bad": [...]}``, best and worst first.
    """
    _check_counts(n_good, n_bad)
    _, val_ds = build_datasets(config.data, model=config.model, seed=config.seed)
    model = load_model(config, checkpoint, device=resolve_device(device))
    return draw_edge_overlay(model, val_ds, config, path, n_good=n_good, n_bad=n_bad)


def _check_counts(n_good: int, n_bad: int) -> None:
    if n_good < 0 or n_bad < 0 or n_good + n_bad < 1:
        raise ValueError(f"n_good and n_bad must be >= 0 with at least one image shown, got {n_good} and {n_bad}")


def _rank_all(model: nn.Module, val_ds: SegmentationDataset, config: TrainConfig) -> list[float]:
    # One IoU per image, not the images: a folder's validation split may be large.
    scores: list[float] = []
    for start in range(0, len(val_ds), config.data.batch_size):
        samples = [val_ds.raw(i) for i in range(start, min(start + config.data.batch_size, len(val_ds)))]
        preds = _predict_masks(model, [image for image, _ in samples], config)
        scores += [_image_iou(pred, mask) for pred, (_, mask) in zip(preds, samples, strict=True)]
    return scores


def draw_edge_overlay(
    model: nn.Module,
    val_ds: SegmentationDataset,
    config: TrainConfig,
    path: Path,
    *,
    image_ious: Sequence[float] | None = None,
    n_good: int = 2,
    n_bad: int = 2,
) -> dict[str, Ranking]:
    """:func:`write_edge_overlay` for a model in memory (in eval mode, on its device).

    ``image_ious`` (one per validation image, in order) ranks the images without predicting the
    whole split again: training passes the per-image IoU of its best epoch's validation
    (:attr:`~edgesearch.trainer.epoch.EpochRunner.image_ious`: at ``data.image_size``, or at the image's
    own size for a model trained on patches). The IoU shown is the one of the picture's own prediction
    (:func:`~edgesearch.trainer.inference.probability_maps`, by sliding window for patches), at the image's size.
    """
    _check_counts(n_good, n_bad)
    if image_ious is not None and len(image_ious) != len(val_ds):
        raise ValueError(f"image_ious has {len(image_ious)} values for {len(val_ds)} validation images")
    scores = list(image_ious) if image_ious is not None else _rank_all(model, val_ds, config)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    good_idx = order[:n_good]
    bad_idx = order[max(len(good_idx), len(order) - n_bad) :][::-1]

    # Only the shown images are predicted; in eval mode a prediction ignores the rest of its batch.
    shown = good_idx + bad_idx
    samples = [val_ds.raw(i) for i in shown]
    probs = dict(zip(shown, probability_maps(model, [image for image, _ in samples], config=config), strict=True))
    drawn = {index: (prob >= 0.5).astype(np.uint8) for index, prob in probs.items()}
    truth = {index: mask for index, (_, mask) in zip(shown, samples, strict=True)}
    pictures = {
        index: to_display(image, config.data.normalize) for index, (image, _) in zip(shown, samples, strict=True)
    }
    good = [(i, _image_iou(drawn[i], truth[i])) for i in good_idx]
    bad = [(i, _image_iou(drawn[i], truth[i])) for i in bad_idx]

    rows = [(label, row) for label, row in (("good", good), ("bad", bad)) if row]
    n_cols = max(len(row) for _, row in rows)
    # At least as wide as the legend, which sits below the panels.
    width_in, height_in = max(3.0 * n_cols, 4.8), 3.3 * len(rows) + 0.4
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    # Fixed margins (see plot_curves): two title lines above each panel, the legend in the bottom 0.4 in.
    fig.subplots_adjust(
        left=0.02, right=0.98, top=1 - 0.45 / height_in, bottom=0.4 / height_in, hspace=0.25, wspace=0.05
    )
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    width = config.loss.edge_width
    for (label, row), row_axes in zip(rows, axes, strict=True):
        for ax in row_axes:
            ax.set_axis_off()
        for ax, (index, value) in zip(row_axes, row, strict=False):
            ax.imshow(edge_overlay(pictures[index], truth[index], drawn[index], width=width))
            corr = _image_edge_corr(probs[index], truth[index], width)
            # A fixed y: a title placed automatically measures the (hidden) axis' ticks at every draw.
            ax.set_title(f"{label} IoU {value:.2f}, edge corr {corr:.2f}\nval image {index}", fontsize=10, y=1.0)
    handles = [
        Patch(color=(r / 255, g / 255, b / 255), label=label)
        for (r, g, b), label in (
            (TRUE_EDGE_COLOUR, "true edge"),
            (PRED_EDGE_COLOUR, "predicted edge"),
            (BOTH_EDGE_COLOUR, "both"),
        )
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False)
    _save(fig, path)
    return {"good": good, "bad": bad}
