"""Probability maps of whole images from a trained model, each at its image's own size.

The model sees a new image as it saw its validation images (:class:`~edgesearch.trainer.config.DataConfig`):

- **Patches** (``data.image_size`` unset, the default): each image whole, at native resolution, by
  sliding window. The image as read is scaled to 0..1 as training scales it, resampled by
  ``data.scale`` (:func:`~edgesearch.trainer.model_input.rescale`), normalised with the model's mean and std
  (:func:`~edgesearch.trainer.input_stats.model_normalization`, as in training), and cut into
  ``data.window`` windows that overlap by ``overlap`` (default ``data.overlap``) and are blended by
  ``blend`` (default ``gaussian``) (:func:`~edgesearch.trainer.sliding.sliding_window_probabilities`,
  ``data.batch_size`` windows at once). When ``data.scale`` made it another size, the map is resampled
  back (bilinear, OpenCV's ``INTER_LINEAR``) to the image's exact size. Validation does the same
  (:meth:`~edgesearch.trainer.epoch.EpochRunner.validate_whole`), so a mask at threshold 0.5 is the one
  ``val_iou`` scored, up to the last bits of the resampling.
- **Resize** (``data.image_size`` set: runs made before patches, and small uniform data): the images of a
  call go through the validation transform (resize to the square, normalise) as one batch, and each map
  is resized back (bilinear) to its image's size.

``tta`` (either way): the map is the mean over the four flips F of the model's input (identity, flip
H, flip W, flip both) of F(sigmoid(f(F(x)))), each flipped back: four times the work.

Memory, patches, per pixel of an image of C channels predicted at scale s (bytes): the image as read
(C x 1, 2 or 4; the caller's), its 0..1 float32 copy (4C), which is normalised in place and handed to
the sliding window as a view, not copied again (at s != 1 the resampled copy, 4C s^2, replaces it,
both held while resampling), the sliding window's output and weight sum (8 s^2: on the CPU for a model
there or past its pixel budget, else on the device, which then also holds the input, 4C s^2), the
output itself as the map (no copy on the CPU), the map resampled back at s != 1 (4) and the mask (1).
Measured on the CPU for an 8-bit RGB image: about 23 bytes a pixel beyond the decoded image (3) at
scale 1 (20 of them counted above), some 2.6 GB in all at 10,000 x 10,000;
about 13 at scale 0.5. ``data.normalize: percentile`` (deeper images) takes two more float copies
while it finds the image's percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from edgesearch.trainer.config import TrainConfig
from edgesearch.trainer.data import build_transforms
from edgesearch.trainer.input_stats import model_normalization
from edgesearch.trainer.model_input import at_size, normalized_input, unit_image
from edgesearch.trainer.predict_io import check_window_options
from edgesearch.trainer.sliding import TTA_FLIPS, Blend, sliding_window_probabilities

__all__ = [
    "check_inference_options",
    "predict_probabilities",
    "prepare_image",
    "probability_maps",
]


def check_inference_options(
    *, overlap: float | None = None, blend: str | None = None, config: TrainConfig | None = None
) -> None:
    """Raise one :class:`ConfigError` naming every bad option: ``overlap`` outside 0 <= x < 1, an unknown
    ``blend``, and (given the model's ``config``) either of them for a model that resizes its images,
    which has no windows. None means the default: ``data.overlap``, ``gaussian``."""
    check_window_options(
        overlap=overlap, blend=blend, resizes_to=config.data.image_size if config is not None else None
    )


def predict_probabilities(model: nn.Module, images: torch.Tensor, *, tta: bool = False) -> torch.Tensor:
    """Foreground probabilities (N,1,H,W), float32 on the CPU, for a batch of normalised images.

    One forward pass of the whole batch (with ``tta``: four, the mean of the flips in the module
    docstring): how a model that resizes its images predicts; one trained on patches goes through the
    sliding window instead.
    """
    device = next(model.parameters()).device
    flips = TTA_FLIPS if tta else ((),)

    def flipped(batch: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """sigmoid(f(F(x))) flipped back by F, for the flip F over ``dims`` (none: the identity)."""
        probs = torch.sigmoid(model(batch.flip(dims) if dims else batch).float())
        return probs.flip(dims) if dims else probs

    with torch.inference_mode():
        batch = images.to(device)
        total = flipped(batch, flips[0])
        for dims in flips[1:]:
            total = total + flipped(batch, dims)
        return (total / len(flips) if tta else total).cpu()


def prepare_image(image: np.ndarray, config: TrainConfig) -> np.ndarray:
    """An image as read (:func:`~edgesearch.trainer.images.read_image`) scaled to 0..1 as training scales it."""
    return unit_image(image, channels=config.model.in_channels, normalize=config.data.normalize)


def probability_maps(
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    config: TrainConfig,
    overlap: float | None = None,
    blend: Blend | None = None,
    tta: bool = False,
) -> list[np.ndarray]:
    """One (H,W) float32 probability map per (H,W,C) image as read, each at its image's own size.

    Patches: each image by sliding window, one at a time, ``overlap`` (None: ``data.overlap``) and
    ``blend`` (None: ``gaussian``) as there. Resize: the images go through the validation transform
    as one batch (callers keep batches small), and ``overlap`` and ``blend`` are refused. See the
    module docstring for both, and for ``tta``. Bad options raise a :class:`ConfigError`.
    """
    check_inference_options(overlap=overlap, blend=blend, config=config)
    if config.data.resize:
        return _resized_maps(model, images, config=config, tta=tta)
    return [
        _native_map(
            model,
            image,
            config=config,
            overlap=config.data.overlap if overlap is None else overlap,
            blend="gaussian" if blend is None else blend,
            tta=tta,
        )
        for image in images
    ]


def _resized_maps(
    model: nn.Module, images: Sequence[np.ndarray], *, config: TrainConfig, tta: bool
) -> list[np.ndarray]:
    if not images:
        return []
    stats = model_normalization(config.model)
    transform = build_transforms(image_size=config.data.image_size, stats=stats, augment=False)
    batch = torch.stack([transform(image=prepare_image(image, config))["image"] for image in images])
    probs = predict_probabilities(model, batch, tta=tta)[:, 0].numpy()
    return [at_size(prob, image.shape[:2]) for prob, image in zip(probs, images, strict=True)]


def _native_map(
    model: nn.Module, image: np.ndarray, *, config: TrainConfig, overlap: float, blend: Blend, tta: bool
) -> np.ndarray:
    data = config.data
    prob = sliding_window_probabilities(
        model,
        _native_input(image, config),
        window=data.window,
        overlap=overlap,
        blend=blend,
        tta=tta,
        batch_size=data.batch_size,
    )
    return at_size(prob.cpu().numpy(), image.shape[:2])


def _native_input(image: np.ndarray, config: TrainConfig) -> torch.Tensor:
    """The (C, h, w) float32 tensor the sliding window reads: 0..1, scaled, normalised
    (:func:`~edgesearch.trainer.model_input.normalized_input`), as a view of that one array."""
    mean, std = model_normalization(config.model)
    model = config.model
    unit = normalized_input(
        image, channels=model.in_channels, normalize=config.data.normalize, scale=config.data.scale, mean=mean, std=std
    )
    return torch.from_numpy(unit).permute(2, 0, 1)
