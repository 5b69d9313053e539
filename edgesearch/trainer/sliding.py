"""Whole-image probability maps by sliding window, at the image's native resolution.

A model trained on patches sees a whole image of any size and aspect one window at a time, as
nnU-Net and MONAI do it; the windows' probabilities are blended into one map of the image's own
size. Validation and ``predict`` at native resolution are built on this; nothing here resizes.

The tiling, padding and blending are MONAI's ``sliding_window_inference``; what this module adds
is the model side (sigmoid per window, autocast, flips) and the choice of where the output is
stitched. MONAI is imported inside the function: importing it costs several seconds (it loads all
of its subpackages, SciPy and torchvision among them), which no command that does not predict pays.
The options and the window geometry live in :mod:`~edgesearch.trainer.sliding_numpy`, whose NumPy
loop gives an exported model the same windows and weights without torch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from edgesearch.trainer.sliding_numpy import (
    BLENDS,
    SIGMA_SCALE,
    TTA_FLIPS,
    WINDOW_MULTIPLE,
    Blend,
    check_sliding_options,
)

__all__ = [
    "BLENDS",
    "DEFAULT_STITCH_ON_CPU_ABOVE",
    "SIGMA_SCALE",
    "TTA_FLIPS",
    "WINDOW_MULTIPLE",
    "Blend",
    "check_sliding_options",
    "sliding_window_probabilities",
]

_MONAI_MODE = {"gaussian": "gaussian", "mean": "constant"}

DEFAULT_STITCH_ON_CPU_ABOVE = 4096 * 4096
"""Pixels past which the output is stitched on the CPU: on the device the output and its weight
sum take 8 bytes per pixel (128 MiB at 4096 x 4096, 800 MB at 10k x 10k)."""


def sliding_window_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    *,
    window: int,
    overlap: float = 0.5,
    blend: Blend = "gaussian",
    tta: bool = False,
    batch_size: int = 4,
    stitch_on_cpu_above: int | None = DEFAULT_STITCH_ON_CPU_ABOVE,
) -> torch.Tensor:
    """The (H, W) float32 foreground probabilities of one normalised image, window by window.

    ``image`` is (C, H, W) or (1, C, H, W), already normalised as the model was trained; any
    H, W >= 1 and any aspect. ``model`` maps an (N, C, s, s) batch to (N, 1, s, s) logits (an smp
    model); it is run in eval mode (each module's own mode is restored after) on its device, under
    ``torch.inference_mode`` and, on CUDA, bf16 autocast (fp16 where bf16 is missing).

    With s = ``window`` and stride t = max(1, floor(s * (1 - overlap))), an image axis shorter
    than s is first padded with zeros (ImageNet normalisation's mean) to s, half before and half after
    (the extra pixel after); the output is cropped back. Along an axis of length L >= s the
    windows start at a_i = min(i * t, L - s) for i = 0, 1, ... up to the first window that
    reaches the end, so every pixel is covered and every window lies inside the image: the model
    only ever sees s x s inputs, whatever H and W are. Each window k gives probabilities
    p_k = sigmoid(f(x_k)) (probabilities are blended, not logits, as nnU-Net blends after its
    softmax), and a pixel x gets

        P(x) = sum_k w(x - a_k) p_k(x - a_k) / sum_k w(x - a_k)

    over the windows that hold it. ``blend="mean"``: w = 1. ``blend="gaussian"``: with
    g(u) = exp(-(u - (s - 1) / 2)**2 / (2 * (s / 8)**2)) for u = 0 .. s - 1,
    w(u, v) = max(g(u) * g(v), 1e-3): the centre of a window counts most, its border (where the
    model saw least context) least, and the floor keeps every weight positive. P lies in [0, 1].

    ``tta``: p_k is instead the mean over the 4 flips F of the window (identity, flip H, flip W,
    flip both) of F(sigmoid(f(F(x_k)))), each flipped back (a flip is its own inverse); 4x the
    model's work.

    ``batch_size`` windows go through the model at once; with ``tta`` the four flips of a batch run
    one after another, so a forward pass still holds ``batch_size`` windows. The image is moved to
    the model's device and the windows are cut, run and added up there, with no host sync per
    window. Past ``stitch_on_cpu_above`` pixels (None: never) the output and its weight sum live on
    the CPU instead, added a column of windows at a time (one copy per column), so the device holds
    the input, one column and the model's activations. The result is on the device it was stitched
    on. Bad options raise a :class:`ConfigError` naming each; an image of another shape or dtype a
    ValueError.
    """
    check_sliding_options(
        window=window, overlap=overlap, blend=blend, batch_size=batch_size, stitch_on_cpu_above=stitch_on_cpu_above
    )
    batch = _as_batch(image)
    height, width = batch.shape[-2:]
    device = _model_device(model, batch)
    on_cpu = stitch_on_cpu_above is not None and height * width > stitch_on_cpu_above
    from monai.inferers.utils import sliding_window_inference  # here, not at the top: see the module's docstring

    # Each module's own mode: a frozen encoder stays in eval while the rest of a model trains.
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            stitched = sliding_window_inference(
                batch.to(device=device, dtype=torch.float32),
                roi_size=(window, window),
                sw_batch_size=batch_size,
                predictor=_window_probabilities(model, device=device, tta=tta),
                overlap=overlap,
                mode=_MONAI_MODE[blend],
                sigma_scale=SIGMA_SCALE,
                padding_mode="constant",
                cval=0.0,
                sw_device=device,
                device=torch.device("cpu") if on_cpu else device,
                # One column of windows (full height, one window wide) is added up on the device, then
                # added into the CPU output in one copy: a sync per column, not per window.
                buffer_steps=1 if on_cpu else None,
                buffer_dim=-1,
            )
    finally:
        for module, training in modes:
            module.training = training
    # One tensor out of the predictor gives one tensor back (MONAI's return type also allows tuples and dicts).
    return cast(torch.Tensor, stitched)[0, 0].contiguous()


def _as_batch(image: torch.Tensor) -> torch.Tensor:
    """``image`` as a (1, C, H, W) batch; a ValueError for any other shape or a non-float dtype."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise ValueError(f"image must be a float tensor, got {getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1 or math.prod(image.shape[1:]) == 0:
        raise ValueError(f"image must be (C, H, W) or (1, C, H, W) with C, H, W >= 1, got {tuple(image.shape)}")
    return image


def _model_device(model: nn.Module, batch: torch.Tensor) -> torch.device:
    """Where the model's weights are; the image's device for a model without any."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return batch.device


def _window_probabilities(
    model: nn.Module, *, device: torch.device, tta: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The predictor MONAI calls on each batch of windows: (N, C, s, s) in, (N, 1, s, s) float32 probabilities out."""
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    flips = TTA_FLIPS if tta else ((),)

    def flipped(windows: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """sigmoid(f(F(x))) flipped back by F, for the flip F over ``dims`` (none: the identity)."""
        with torch.autocast("cuda", dtype=dtype) if device.type == "cuda" else contextlib.nullcontext():
            logits = model(windows.flip(dims) if dims else windows)
        if logits.shape[1] != 1:  # a shape, not a value: no sync
            raise ValueError(f"the model must return one logit channel, got shape {tuple(logits.shape)}")
        probs = torch.sigmoid(logits.float())
        return probs.flip(dims) if dims else probs

    def probabilities(windows: torch.Tensor) -> torch.Tensor:
        total = flipped(windows, flips[0])
        for dims in flips[1:]:
            total = total + flipped(windows, dims)
        return total / len(flips) if tta else total

    return probabilities
