"""What a model sees of an image, and its map brought back to the image's size: NumPy and OpenCV only.

An image as read (:func:`~edgesearch.trainer.images.read_image`) reaches a model as training prepared
it: its channels checked, scaled to 0..1 (:func:`~edgesearch.trainer.images.to_unit_range`, per
``data.normalize``), resampled by ``data.scale`` (:func:`rescale`) and normalised with the model's mean
and std. The PyTorch path (:mod:`~edgesearch.trainer.inference`) and the onnxruntime path
(:mod:`~edgesearch.trainer.onnx_model`) both take their inputs from here, so that they cannot drift
apart, and neither does the resampling of a map back to its image's size (:func:`at_size`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edgesearch.trainer.images import to_unit_range

__all__ = ["at_size", "normalized_input", "rescale", "unit_image"]


def rescale(image: np.ndarray, mask: np.ndarray | None, scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (H, W[, C]) resampled by ``scale`` (area averaging to shrink, bilinear to grow) and ``mask``
    by nearest neighbour, each side ``max(1, round(side * scale))``; unchanged (not copied) at scale 1."""
    if scale == 1.0:
        return image, mask
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(image, size, interpolation=interpolation)
    if image.ndim == 3 and resized.ndim == 2:  # OpenCV drops a single channel
        resized = resized[:, :, None]
    small_mask = None if mask is None else cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    return resized, small_mask


def unit_image(image: np.ndarray, *, channels: int, normalize: str) -> np.ndarray:
    """An (H, W[, C]) image as read, as (H, W, ``channels``) float32 in 0..1 per ``data.normalize``
    ``normalize``; a ValueError when it has another number of channels."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] != channels:
        raise ValueError(f"image of shape {image.shape} does not have model.in_channels = {channels} channels")
    return to_unit_range(image, normalize)


def normalized_input(
    image: np.ndarray,
    *,
    channels: int,
    normalize: str,
    scale: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """The (h, w, C) float32 array a model trained on patches reads of an image as read: 0..1, resampled
    by ``scale``, normalised with ``mean`` and ``std``.

    One float array normalised in place: the intermediate arrays are gone when this returns, before the
    sliding window allocates its output; the caller's pixels are never written.
    """
    unit, _ = rescale(unit_image(image, channels=channels, normalize=normalize), None, scale)
    if np.may_share_memory(unit, image):  # normalised in place below: never the caller's pixels
        unit = unit.copy()
    unit -= np.asarray(mean, dtype=np.float32)
    unit /= np.asarray(std, dtype=np.float32)
    return unit


def at_size(prob: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """``prob`` (float32) resampled (bilinear) to ``size`` (height, width) unless it has that size."""
    height, width = size[0], size[1]
    if prob.shape != (height, width):
        prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    return prob.astype(np.float32, copy=False)
