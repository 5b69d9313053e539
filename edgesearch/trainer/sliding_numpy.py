"""The sliding window without torch: its options, MONAI's windows and Gaussian weights, and a NumPy loop.

:mod:`~edgesearch.trainer.sliding` runs a PyTorch model through MONAI's ``sliding_window_inference``;
an exported model (:mod:`~edgesearch.trainer.onnx_model`) predicts through :func:`sliding_window_numpy`
here, which cuts the same windows, weighs them with the same importance map and blends them the same
way, so that both give one image the same probability map (up to the last bits of the sums):

- **Padding**: an axis shorter than the window ``s`` is padded with zeros to ``s``, half before and
  half after (the extra pixel after); the output is cropped back.
- **Windows** (MONAI's ``_get_scan_interval`` and ``dense_patch_slices``): along an axis of (padded)
  length ``L``, the stride is ``s`` when ``L == s``, else ``t = max(1, int(s * (1 - overlap)))``; the
  windows start at ``min(i * t, L - s)`` for ``i = 0, 1, ...`` up to the first that reaches the end.
  Windows are visited row by row, ``batch_size`` at a time.
- **Weights** (MONAI's ``compute_importance_map``): ``blend="mean"``: 1; ``blend="gaussian"``: the outer
  product of ``g(u) = exp(-(u - (s - 1) / 2)**2 / (2 * (s * SIGMA_SCALE)**2))`` with itself, in float32,
  clamped below at ``max(its minimum, 1e-3)``.
- **Blend**: ``P = sum_k w p_k / sum_k w`` over the windows that hold a pixel, in float32.

Nothing here imports torch or MONAI, so a predictor that has only onnxruntime pays for neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from edgesearch.errors import ConfigError, raise_problems

__all__ = [
    "BLENDS",
    "SIGMA_SCALE",
    "TTA_FLIPS",
    "WINDOW_MULTIPLE",
    "Blend",
    "Predictor",
    "check_sliding_options",
    "flip_mean",
    "importance_map",
    "sliding_window_numpy",
    "window_starts",
]

Blend = Literal["gaussian", "mean"]
"""How overlapping windows are weighted: a Gaussian centred on each window, or all pixels alike."""

BLENDS: tuple[Blend, ...] = ("gaussian", "mean")

WINDOW_MULTIPLE = 32
"""smp encoders halve the resolution five times: a window's side must divide by 2**5."""

SIGMA_SCALE = 0.125
"""The Gaussian's standard deviation as a share of the window's side (nnU-Net's and MONAI's 1/8)."""

MIN_WEIGHT = 1e-3
"""MONAI's floor under the Gaussian's weights, so that every pixel of a window counts a little."""

TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))
"""The flips averaged by ``tta``: identity, flip H, flip W, flip both (dims of an N,C,H,W batch)."""

Predictor = Callable[[np.ndarray], np.ndarray]
"""A model as the sliding window calls it: an (N, C, s, s) float32 batch in, (N, 1, s, s) probabilities out."""


def check_sliding_options(
    *, window: int, overlap: float, blend: str, batch_size: int, stitch_on_cpu_above: int | None = None
) -> None:
    """Raise one :class:`ConfigError` listing every option outside what is allowed."""
    problems: list[str] = []
    if not _is_int(window) or window < WINDOW_MULTIPLE or window % WINDOW_MULTIPLE:
        problems.append(f"window: {window!r} is not allowed; allowed: a multiple of {WINDOW_MULTIPLE}, >= 32")
    if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not 0.0 <= overlap < 1.0:
        problems.append(f"overlap: {overlap!r} is out of range; allowed: 0 <= overlap < 1")
    if blend not in BLENDS:
        problems.append(f"blend: {blend!r} is not allowed; allowed: {', '.join(BLENDS)}")
    if not _is_int(batch_size) or batch_size < 1:
        problems.append(f"batch_size: {batch_size!r} is not allowed; allowed: an integer >= 1")
    if stitch_on_cpu_above is not None and (not _is_int(stitch_on_cpu_above) or stitch_on_cpu_above < 0):
        problems.append(
            f"stitch_on_cpu_above: {stitch_on_cpu_above!r} is not allowed; allowed: None or an integer >= 0 (pixels)"
        )
    raise_problems(problems, ConfigError)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Where the windows of side ``window`` start along an axis of ``length >= window`` pixels (module docstring)."""
    if length < window:
        raise ValueError(f"an axis of {length} pixels is shorter than the window ({window}); pad it first")
    # MONAI's arithmetic as it is (int() of a float product), so that both cut the very same windows.
    stride = window if length == window else max(1, int(window * (1 - overlap)))
    starts = [0]
    while starts[-1] + window < length:
        starts.append(min(len(starts) * stride, length - window))
    return starts


def _padding(length: int, window: int) -> tuple[int, int]:
    """The zeros before and after an axis of ``length`` pixels that make it ``window`` long (the odd one after)."""
    extra = max(window - length, 0)
    return extra // 2, extra - extra // 2


def importance_map(window: int, blend: Blend) -> np.ndarray:
    """The (window, window) float32 weight of each pixel of a window's prediction (module docstring)."""
    if blend == "mean":
        return np.ones((window, window), np.float32)
    sigma = window * SIGMA_SCALE
    # float32 throughout, as MONAI computes it: the map matches its own to the last bit or two of exp.
    offsets = np.arange(window, dtype=np.float32) - np.float32((window - 1) / 2)
    gauss = np.exp(offsets**2 / np.float32(-2 * sigma**2))
    weights = np.outer(gauss, gauss).astype(np.float32)
    return np.maximum(weights, np.float32(max(float(weights.min()), MIN_WEIGHT)))


def flip_mean(predict: Predictor, batch: np.ndarray, *, tta: bool) -> np.ndarray:
    """``predict(batch)``; with ``tta`` the mean over :data:`TTA_FLIPS` F of F(predict(F(batch))) instead."""
    if not tta:
        return predict(batch)
    total = np.zeros((), dtype=np.float32)
    for dims in TTA_FLIPS:
        probs = predict(np.ascontiguousarray(np.flip(batch, dims)) if dims else batch)
        total = total + (np.flip(probs, dims) if dims else probs)
    return total / np.float32(len(TTA_FLIPS))


def sliding_window_numpy(
    predict: Predictor,
    image: np.ndarray,
    *,
    window: int,
    overlap: float = 0.5,
    blend: Blend = "gaussian",
    tta: bool = False,
    batch_size: int = 4,
) -> np.ndarray:
    """The (H, W) float32 foreground probabilities of one normalised (C, H, W) float32 image, window by window.

    What :func:`~edgesearch.trainer.sliding.sliding_window_probabilities` gives for a model whose
    probabilities ``predict`` returns (module docstring); ``tta`` as there. Bad options raise a
    :class:`ConfigError` naming each; an image of another shape or dtype a ValueError.
    """
    check_sliding_options(window=window, overlap=overlap, blend=blend, batch_size=batch_size)
    if image.ndim != 3 or image.dtype != np.float32 or 0 in image.shape:
        raise ValueError(f"image must be a (C, H, W) float32 array with C, H, W >= 1, got {image.shape} {image.dtype}")
    height, width = image.shape[1:]
    pads = [_padding(height, window), _padding(width, window)]
    padded = np.pad(image, [(0, 0), *pads]) if any(sum(pad) for pad in pads) else image
    rows, cols = padded.shape[1:]
    corners = [
        (top, left) for top in window_starts(rows, window, overlap) for left in window_starts(cols, window, overlap)
    ]
    weights = importance_map(window, blend)
    output = np.zeros((rows, cols), np.float32)
    total = np.zeros((rows, cols), np.float32)
    for top, left in corners:  # every window's weight first, in window order, as MONAI adds them
        total[top : top + window, left : left + window] += weights
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        batch = np.stack([padded[:, top : top + window, left : left + window] for top, left in chunk])
        probs = flip_mean(predict, batch, tta=tta)
        if probs.shape != (len(chunk), 1, window, window):
            raise ValueError(f"the model must return (N, 1, {window}, {window}) probabilities, got {probs.shape}")
        for (top, left), prob in zip(chunk, probs, strict=True):
            output[top : top + window, left : left + window] += prob[0] * weights
    output /= total
    (before_h, _), (before_w, _) = pads
    return np.ascontiguousarray(output[before_h : before_h + height, before_w : before_w + width])
