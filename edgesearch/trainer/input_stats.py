"""The per-channel mean and standard deviation a model's images (scaled to 0..1) are normalised with.

:func:`model_normalization` gives those its encoder's pretrained weights were trained on, and training (the
CPU loader, the device loader, patches), validation and prediction all take them from the model's config, so
a model sees every image as its encoder learnt to see them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, TypeAlias

import numpy as np

from edgesearch.errors import ConfigError, first_line
from edgesearch.trainer.config import ModelConfig
from edgesearch.trainer.packaged_weights import PACKAGED, PACKAGED_NAME
from edgesearch.trainer.registry import is_local_weights

_log = logging.getLogger(__name__)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalization",
    "model_normalization",
    "normalization",
    "unit_statistics",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Normalization: TypeAlias = tuple[tuple[float, ...], tuple[float, ...]]
"""(mean, std), one value per input channel, for images in 0..1."""


def normalization(
    channels: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Normalization:
    """(mean, std) per channel for ``channels`` inputs of an encoder whose RGB inputs were normalised with
    ``mean`` and ``std`` (ImageNet's by default): those for 3 channels; for other channel counts the average
    of the three for every channel."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if channels == 3:
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    # A pretrained first convolution takes 1 or N channels by summing or cycling its RGB weights, as smp
    # adapts its own (model.input_conv_weight): a grey image x then gets about the response the RGB network
    # gave the colour image (x, x, x), exactly when all three channels share one mean and std. Grey or
    # multi-channel images have no colour order, so every channel gets the same pair: the colours' average.
    return (float(np.mean(mean)),) * channels, (float(np.mean(std)),) * channels


def model_normalization(model: ModelConfig) -> Normalization:
    """(mean, std) per input channel for ``model``'s images: those its encoder's weights were trained on.

    - ``encoder_weights: packaged``: the encoder's :class:`~edgesearch.trainer.packaged_weights.PackagedWeights`
      mean and std (0.5 and 0.5 for EfficientNet-Lite0, ImageNet's for MobileNetV2);
    - a name smp knows (``imagenet``): smp's statistics for that encoder and those weights
      (``get_preprocessing_params``): timm's table for a ``tu-`` encoder; for smp's own encoders the
      ``config.json`` that smp downloads with the weights from the Hugging Face Hub (cached there);
    - null (random init) or a local file: ImageNet's.

    Other channel counts than 3 as :func:`normalization`. Raises ConfigError when smp has no statistics
    for those weights. When the Hub is out of reach and its cache lacks them (``predict`` of a trained model
    on a machine without network: the weights are in the checkpoint, only the statistics are asked for),
    ImageNet's are used with a warning: what every smp encoder's ``imagenet`` weights but a few were trained on.
    """
    weights = model.encoder_weights
    if weights is None or is_local_weights(weights):
        return normalization(model.in_channels)
    if weights == PACKAGED_NAME:
        packaged = PACKAGED.get(model.encoder)
        if packaged is None:  # a stored config is not validated again
            raise ConfigError(
                f"model.encoder_weights: no packaged weights for encoder {model.encoder!r}; "
                f"allowed: packaged with encoder {' or '.join(PACKAGED)}"
            )
        return normalization(model.in_channels, packaged.mean, packaged.std)
    try:
        mean, std = _smp_statistics(model.encoder, weights)
    except _Unreachable as exc:
        _log.warning("%s; using ImageNet's statistics", exc)
        return normalization(model.in_channels)
    return normalization(model.in_channels, mean, std)


class _Unreachable(Exception):
    """smp's statistics for some weights are on the Hugging Face Hub, which cannot be reached."""


@cache  # smp's own encoders ask the Hub (or its cache) each time
def _smp_statistics(encoder: str, weights: str) -> Normalization:
    from segmentation_models_pytorch.encoders import get_preprocessing_params

    try:
        params = get_preprocessing_params(encoder, pretrained=weights)
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"model.encoder_weights: smp has no {weights!r} weights (nor their normalisation statistics) for "
            f"encoder {encoder!r} ({first_line(exc)}); allowed: null, imagenet, packaged or a local file"
        ) from None
    except OSError as exc:  # the Hub is out of reach and its cache does not have the file
        raise _Unreachable(
            f"could not fetch the normalisation statistics of {weights!r} weights for {encoder!r} from the "
            f"Hugging Face Hub, where smp keeps them beside the weights ({first_line(exc)})"
        ) from None
    return unit_statistics(params)


def unit_statistics(params: Mapping[str, Any]) -> Normalization:
    """(mean, std) for 0..1 pixels from smp's preprocessing parameters, whose ``mean`` and ``std`` are on
    the scale of their ``input_range`` (0..1, or 0..255 for a network fed bytes)."""
    top = float(params.get("input_range", (0, 1))[1])
    return tuple(float(v) / top for v in params["mean"]), tuple(float(v) / top for v in params["std"])
