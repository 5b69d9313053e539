"""The edge overlay: true and predicted edge bands painted over an image, as a uint8 array.

The bands are the ones the edge loss and Boundary IoU look at (:func:`~edgesearch.trainer.edges.edge_map`
of width ``loss.edge_width``), so the picture shows what the metric scores: where the predicted
boundary lies on the true one, where it misses it, and where it invents one. Pure drawing, with
NumPy and OpenCV (``predict`` of an exported model draws it without torch):
:func:`edgesearch.trainer.plots.write_edge_overlay` runs the model and lays out the figure.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["BOTH_EDGE_COLOUR", "PRED_EDGE_COLOUR", "TRUE_EDGE_COLOUR", "edge_overlay"]

TRUE_EDGE_COLOUR = (0, 255, 0)
"""Green: the true mask's edge band where the prediction has none."""
PRED_EDGE_COLOUR = (255, 0, 255)
"""Magenta: the predicted mask's edge band where the true mask has none."""
BOTH_EDGE_COLOUR = (255, 255, 0)
"""Yellow: pixels in both edge bands."""


def _edge_band(mask: np.ndarray, width: int) -> np.ndarray:
    """``edge_map``'s band of a binary mask: the mask less its erosion by a square of side ``2 * width + 1``,
    with the outside of the image as background (so a mask touching the border has a band along it)."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    eroded = cv2.erode(binary, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return binary > eroded


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
