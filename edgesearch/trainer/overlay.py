"""The edge overlay picture: true and predicted edge bands drawn over validation images.

The bands are the ones the edge loss and Boundary IoU look at (:func:`edge_map` of width
``loss.edge_width``), so the picture shows what the metric scores: where the predicted
boundary lies on the true one, where it misses it, and where it invents one. The report's
"good" and "bad" figures are the best- and worst-IoU validation images drawn this way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import nn

from edgesearch.trainer.config import TrainConfig
from edgesearch.trainer.data import build_datasets
from edgesearch.trainer.edges import edge_map
from edgesearch.trainer.loop import resolve_device
from edgesearch.trainer.metrics import iou
from edgesearch.trainer.predict import load_model, probability_maps

__all__ = ["BOTH_EDGE_COLOUR", "PRED_EDGE_COLOUR", "TRUE_EDGE_COLOUR", "edge_overlay", "write_edge_overlay"]

TRUE_EDGE_COLOUR = (0, 255, 0)
"""Green: the true mask's edge band where the prediction has none."""
PRED_EDGE_COLOUR = (255, 0, 255)
"""Magenta: the predicted mask's edge band where the true mask has none."""
BOTH_EDGE_COLOUR = (255, 255, 0)
"""Yellow: pixels in both edge bands."""

Ranking = list[tuple[int, float]]


def _edge_band(mask: np.ndarray, width: int) -> np.ndarray:
    binary = torch.from_numpy(np.asarray(mask) > 0).float()[None, None]
    return edge_map(binary, width)[0, 0].numpy() > 0.5


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 from a grey (H,W) / (H,W,1) or RGB image; other channel counts show channel 0."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"image must be (H,W) or (H,W,C), got shape {image.shape}")
    if image.shape[2] == 3:
        return image.copy()
    return np.repeat(image[:, :, :1], 3, axis=2)


def edge_overlay(image: np.ndarray, true_mask: np.ndarray, pred_mask: np.ndarray, *, width: int) -> np.ndarray:
    """``image`` (uint8, H x W) with the edge bands of width ``width`` of both masks painted on.

    True-only edge pixels are :data:`TRUE_EDGE_COLOUR`, predicted-only ones
    :data:`PRED_EDGE_COLOUR`, pixels in both bands :data:`BOTH_EDGE_COLOUR`; every other
    pixel is the image's. Masks are 0/1 (any non-zero value is foreground).
    """
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    for name, mask in (("true_mask", true_mask), ("pred_mask", pred_mask)):
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{name} has shape {mask.shape}, the image is {image.shape[:2]}")
    picture = _as_rgb(image)
    true_edge, pred_edge = _edge_band(true_mask, width), _edge_band(pred_mask, width)
    picture[true_edge & ~pred_edge] = TRUE_EDGE_COLOUR
    picture[pred_edge & ~true_edge] = PRED_EDGE_COLOUR
    picture[true_edge & pred_edge] = BOTH_EDGE_COLOUR
    return picture


def _image_iou(pred: np.ndarray, target: np.ndarray) -> float:
    return iou(torch.from_numpy(pred > 0)[None, None], torch.from_numpy(target > 0)[None, None])


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
    0.5) at its own size, and IoU is taken per image (both masks empty counts as 1.0). A split
    with fewer images than ``n_good + n_bad`` shows each image once, the good row first.
    Returns ``{"good": [(val index, IoU), ...], "bad": [...]}``, best and worst first.
    """
    if n_good < 0 or n_bad < 0 or n_good + n_bad < 1:
        raise ValueError(f"n_good and n_bad must be >= 0 with at least one image shown, got {n_good} and {n_bad}")
    _, val_ds = build_datasets(config.data, channels=config.model.in_channels, seed=config.seed)
    model = load_model(config, checkpoint, device=resolve_device(device))

    # Pass 1 keeps one IoU per image, not the images: a folder's validation split may be large.
    scores: Ranking = []
    for start in range(0, len(val_ds), config.data.batch_size):
        indices = range(start, min(start + config.data.batch_size, len(val_ds)))
        samples = [val_ds.raw(i) for i in indices]
        preds = _predict_masks(model, [image for image, _ in samples], config)
        scores += [(i, _image_iou(pred, mask)) for i, pred, (_, mask) in zip(indices, preds, samples, strict=True)]
    ranked = sorted(scores, key=lambda item: (-item[1], item[0]))
    good = ranked[:n_good]
    bad = ranked[max(len(good), len(ranked) - n_bad) :][::-1]

    # Pass 2 predicts the few shown images again; in eval mode a prediction ignores the rest of its batch.
    shown = [index for index, _ in good + bad]
    samples = [val_ds.raw(i) for i in shown]
    drawn = dict(zip(shown, _predict_masks(model, [image for image, _ in samples], config), strict=True))
    truth = {index: mask for index, (_, mask) in zip(shown, samples, strict=True)}
    pictures = {index: image for index, (image, _) in zip(shown, samples, strict=True)}

    rows = [(label, row) for label, row in (("good", good), ("bad", bad)) if row]
    n_cols = max(len(row) for _, row in rows)
    # At least as wide as the legend, which sits below the panels.
    fig = Figure(figsize=(max(3.0 * n_cols, 4.8), 3.3 * len(rows) + 0.4), dpi=100, layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    width = config.loss.edge_width
    for (label, row), row_axes in zip(rows, axes, strict=True):
        for ax in row_axes:
            ax.set_axis_off()
        for ax, (index, value) in zip(row_axes, row, strict=False):
            ax.imshow(edge_overlay(pictures[index], truth[index], drawn[index], width=width))
            ax.set_title(f"{label} IoU {value:.2f}\nval image {index}", fontsize=10)
    handles = [
        Patch(color=(r / 255, g / 255, b / 255), label=label)
        for (r, g, b), label in (
            (TRUE_EDGE_COLOUR, "true edge"),
            (PRED_EDGE_COLOUR, "predicted edge"),
            (BOTH_EDGE_COLOUR, "both"),
        )
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return {"good": good, "bad": bad}
