"""Datasets kept on the training device and augmented a whole batch at a time.

A GPU trains a small U-Net on thousands of images a second. The CPU path (:mod:`edgesearch.trainer.data`)
decodes, resizes and augments one image at a time with albumentations in loader processes, and two
such processes cannot keep up: the GPU waits on its data. A dataset that fits in
device memory is instead resized once (:func:`resident_tensors`), kept on the device, and
augmented there a batch at a time (:func:`augment_batch`, :class:`DeviceBatches`). Training on
native-resolution patches (no ``data.image_size``) keeps the images whole there and cuts the patches
on the device (:mod:`~edgesearch.trainer.device_patches`), augmented by the same :func:`augment_batch`.

The augmentation draws from the same distribution as ``build_transforms(augment=True)``, step for
step as albumentations 2.0 implements it (each step independently per image, in this order):

* ``HorizontalFlip(p=0.5)``: ``x[..., ::-1]`` (columns reversed).
* ``VerticalFlip(p=0.5)``: ``x[..., ::-1, :]`` (rows reversed).
* ``RandomRotate90(p=0.5)``: when applied, a factor ``k`` uniform on {0, 1, 2, 3} (so ``k = 0``, the
  identity, has probability 1/2 + 1/8 = 5/8 overall, and 1, 2, 3 have 1/8 each), then
  ``np.rot90(x, k)`` on the (H, W) axes: ``k`` quarter turns counter-clockwise as displayed (row 0
  at the top). ``torch.rot90(x, k, dims=(-2, -1))`` is the same map.
* ``RandomBrightnessContrast(0.1, 0.1, p=0.3)``: ``alpha = 1 + U(-0.1, 0.1)``, then
  ``beta = U(-0.1, 0.1) * max_value`` (``brightness_by_max``; ``max_value`` is 1.0 for float32
  images), then ``clip(alpha * x + beta, 0, 1)``. A plain multiply-add for every pixel: the
  contrast is not taken about the image mean.

Together the flips and quarter turns give each of the 8 symmetries of the square: the rotations
by 0 and 180 degrees and their mirror images with probability 3/16 each, the rotations by 90 and
270 degrees and their mirror images with 1/16 each. That is what the steps define when each draws
from its own random stream, as ``SegmentationDataset.reseed`` seeds them.

``data.loader`` chooses the path (:func:`device_batches`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import albumentations as A
import numpy as np
import torch

from edgesearch.errors import ConfigError
from edgesearch.trainer.config import DataConfig
from edgesearch.trainer.data import SegmentationDataset
from edgesearch.trainer.device_patches import (
    DeviceImages,
    DevicePatches,
    patch_batches,
    patch_resident_bytes,
    raw_sizes,
)
from edgesearch.trainer.images import to_unit_range

__all__ = [
    "BRIGHTNESS_LIMIT",
    "BRIGHTNESS_P",
    "CONTRAST_LIMIT",
    "FLIP_P",
    "ROTATE_P",
    "DeviceBatches",
    "augment_batch",
    "device_batches",
    "dihedral",
    "resident_bytes",
    "resident_tensors",
]

# The parameters of build_transforms(augment=True); tests/trainer/test_device_data.py checks that the
# two paths draw from the same distribution.
FLIP_P = 0.5
ROTATE_P = 0.5
BRIGHTNESS_P = 0.3
BRIGHTNESS_LIMIT = 0.1
CONTRAST_LIMIT = 0.1


# --------------------------------------------------------------------------- resident tensors


def resident_tensors(dataset: SegmentationDataset, *, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image and mask of ``dataset`` resized to ``image_size``: images ``(N, C, S, S)``, masks
    ``(N, 1, S, S)`` uint8 0/1, on the CPU (the caller moves them).

    Each image is scaled to 0..1 by ``to_unit_range(raw, dataset.normalize)`` at full size and then
    resized by ``A.Resize`` (bilinear for the image, nearest for the mask), exactly as the CPU path.

    Storage: ``torch.uint8`` holding ``round(255 * x)`` when every raw image is 8-bit: the rounding
    moves a pixel by at most half a level (0.5/255), and the source had no finer levels to lose
    before resizing. Otherwise ``torch.float16`` holding 0..1: 11 significant bits, a step of at
    most 2**-11 (near 1, finer below), so 12- and 16-bit images keep about 8 times the depth
    that 8 bits would leave them, at twice the memory. (In a dataset of both, the 8-bit images read
    before the first deeper one keep their 8-bit rounding.)
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    resize = A.Resize(image_size, image_size)
    images: torch.Tensor | None = None
    masks = torch.empty((n, 1, image_size, image_size), dtype=torch.uint8)
    for i in range(n):
        raw_image, raw_mask = dataset.raw(i)
        if raw_image.ndim == 2:
            raw_image = raw_image[:, :, None]
        if raw_image.ndim != 3 or raw_mask.ndim != 2 or raw_image.shape[:2] != raw_mask.shape:
            raise ValueError(
                f"item {i}: image of shape {raw_image.shape} and mask of shape {raw_mask.shape}; "
                "expected (H, W[, C]) and (H, W)"
            )
        out = resize(image=to_unit_range(raw_image, dataset.normalize), mask=raw_mask)
        unit = np.clip(out["image"].reshape(image_size, image_size, -1), 0.0, 1.0)
        channels = unit.shape[2]
        if images is None:
            images = torch.empty((n, channels, image_size, image_size), dtype=torch.uint8)
        elif images.shape[1] != channels:
            raise ValueError(f"item {i}: image has {channels} channels, earlier ones {images.shape[1]}")
        if raw_image.dtype != np.uint8 and images.dtype == torch.uint8:
            # The first deeper image: what is stored so far becomes float16 too.
            images = images.to(torch.float16).div_(255.0)
        chw = torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1)))
        if images.dtype == torch.uint8:
            images[i] = torch.round(chw * 255.0).to(torch.uint8)
        else:
            images[i] = chw.to(torch.float16)
        masks[i, 0] = torch.from_numpy(np.array(out["mask"], dtype=np.uint8))  # a copy: may be read-only
    if images is None:  # unreachable: n >= 1; keeps the type checker informed
        raise ValueError("the dataset is empty")
    return images, masks


def resident_bytes(n_images: int, channels: int, image_size: int, dtype: torch.dtype) -> int:
    """Bytes that :func:`resident_tensors` output takes: images of ``dtype`` plus uint8 masks."""
    pixels = n_images * image_size * image_size
    return pixels * channels * dtype.itemsize + pixels


# --------------------------------------------------------------------------- augmentation


def dihedral(x: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor, quarter_turns: torch.Tensor) -> torch.Tensor:
    """Per sample of ``x`` (B, C, S, S): flip left-right where ``hflip``, then up-down where ``vflip``,
    then ``quarter_turns`` (0..3) counter-clockwise quarter turns, as ``np.rot90`` turns an (H, W) array.

    ``hflip``, ``vflip`` (bool) and ``quarter_turns`` (int) are (B,) CPU tensors: the rotation groups are
    found on the CPU, so nothing waits on the device. One ``torch.where`` per flip; for the turns,
    the batch is sorted by factor and each of the (at most 4) groups turned at once.
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must be (B, C, S, S), got shape {tuple(x.shape)}")
    batch = x.shape[0]
    for name, flags in (("hflip", hflip), ("vflip", vflip), ("quarter_turns", quarter_turns)):
        if flags.shape != (batch,) or flags.device.type != "cpu":
            raise ValueError(f"{name} must be a ({batch},) CPU tensor, got {tuple(flags.shape)} on {flags.device}")
    flips = torch.stack([hflip, vflip]).to(device=x.device).view(2, batch, 1, 1, 1)
    x = torch.where(flips[0], x.flip(-1), x)
    x = torch.where(flips[1], x.flip(-2), x)
    turns = quarter_turns.long() % 4
    counts = torch.bincount(turns, minlength=4).tolist()
    if counts[0] == batch:
        return x
    order = torch.argsort(turns, stable=True)
    both = torch.stack([order, torch.argsort(order)]).to(x.device)
    groups = torch.split(x.index_select(0, both[0]), counts)
    turned = torch.cat([torch.rot90(group, k, dims=(-2, -1)) if k else group for k, group in enumerate(groups)])
    return turned.index_select(0, both[1])


def augment_batch(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips, quarter turns and brightness/contrast of a batch, drawn as the CPU path draws them
    (see the module docstring), independently per sample.

    ``images``: float (B, C, S, S) in 0..1; ``masks``: (B, K, S, S), any dtype: a mask, or a patch's K
    target channels. The masks of a sample get the same flips and turns as its image, and no brightness
    change. Every random number comes from ``generator`` (a CPU generator; a fixed number of draws per
    batch), so a seed fixes the result whatever the data's device.
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be (B, C, S, S), got shape {tuple(images.shape)}")
    batch = images.shape[0]
    if masks.dim() != 4 or masks.shape[0] != batch or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"masks must be ({batch}, K, S, S) to match the images, got {tuple(masks.shape)}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU generator, got one on {generator.device}")
    u = torch.rand((6, batch), generator=generator)
    factor = torch.randint(0, 4, (batch,), generator=generator)
    hflip, vflip = u[0] < FLIP_P, u[1] < FLIP_P
    turns = torch.where(u[2] < ROTATE_P, factor, 0)
    images = dihedral(images, hflip, vflip, turns)
    masks = dihedral(masks, hflip, vflip, turns)
    # albumentations: alpha = 1 + uniform(-c, c), beta = uniform(-b, b) * 1.0, as low + (high - low) * u.
    # Unchanged samples get (1, 0), an exact identity, so one multiply-add serves the whole batch.
    change = u[3] < BRIGHTNESS_P
    alpha = torch.where(change, 1.0 + (-CONTRAST_LIMIT + 2.0 * CONTRAST_LIMIT * u[4]), 1.0)
    beta = torch.where(change, -BRIGHTNESS_LIMIT + 2.0 * BRIGHTNESS_LIMIT * u[5], 0.0)
    affine = torch.stack([alpha, beta]).to(device=images.device, dtype=images.dtype).view(2, batch, 1, 1, 1)
    # The clip of a float32 image to 0..1 is albumentations' too; it leaves a 0..1 image unchanged.
    images = torch.clamp(images * affine[0] + affine[1], 0.0, 1.0)
    return images, masks


# --------------------------------------------------------------------------- batches


class DeviceBatches:
    """Batches of resident tensors, on their device: what ``build_loader`` yields, without a loader.

    ``images`` (N, C, S, S) uint8 (0..255) or float (0..1) and ``masks`` (N, 1, S, S) 0/1, both already on
    the training device. Each pass yields ``(images, masks)``: float32 ``(x - mean) / std`` and float32
    0/1 masks. Training passes shuffle and, with ``augment``, augment (:func:`augment_batch`); the
    last batch is dropped when ``train`` and there are more images than one batch holds, as
    ``build_loader`` does (BatchNorm cannot train on a batch of one).
    """

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        *,
        batch_size: int,
        train: bool,
        augment: bool,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be (N, C, S, S), got shape {tuple(images.shape)}")
        n, channels = images.shape[0], images.shape[1]
        if masks.shape != (n, 1, *images.shape[-2:]):
            raise ValueError(f"masks must be ({n}, 1, S, S) to match the images, got {tuple(masks.shape)}")
        if masks.device != images.device:
            raise ValueError(f"images are on {images.device} but masks on {masks.device}")
        if n == 0:
            raise ValueError("no images")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values each, got {len(mean)} and {len(std)}")
        self.images = images
        self.masks = masks
        self.batch_size = batch_size
        self.train = train
        self.augment = augment
        self._mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, channels, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, channels, 1, 1)
        self._drop_last = train and n > batch_size
        self._generator = torch.Generator()
        self.reseed(0)

    def reseed(self, seed: int) -> None:
        """Seed the shuffle and the augmentation (called per epoch, as ``SegmentationDataset.reseed``)."""
        self._generator.manual_seed(seed)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self._drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.images.shape[0]
        # One permutation per pass, moved to the device once; evaluation keeps the stored order.
        order = torch.randperm(n, generator=self._generator).to(self.images.device) if self.train else None
        for b in range(len(self)):
            start, stop = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order is None:
                images, masks = self.images[start:stop], self.masks[start:stop]
            else:
                index = order[start:stop]
                images, masks = self.images.index_select(0, index), self.masks.index_select(0, index)
            unit = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
            target = masks.float()
            if self.train and self.augment:
                unit, target = augment_batch(unit, target, self._generator)
            yield (unit - self._mean) / self._std, target


# --------------------------------------------------------------------------- choosing the path

AUTO_SHARE = 0.25
"""``loader: auto`` keeps a dataset on a CUDA device when it takes at most this share of the free memory."""


def _free_bytes(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def device_batches(
    train_ds: SegmentationDataset,
    val_ds: SegmentationDataset,
    cfg: DataConfig,
    *,
    channels: int,
    edge_width: int,
    device: torch.device,
) -> tuple[DeviceBatches, DeviceBatches] | tuple[DevicePatches, DeviceImages] | None:
    """(train, val) batches of the device path when ``data.loader`` picks it, else None (the CPU path).

    With ``data.image_size`` (resize): :class:`DeviceBatches` both. With patches: training patches and
    whole validation images (:mod:`~edgesearch.trainer.device_patches`; ``edge_width`` is the loss's, for
    the patches' edge_valid targets). The size check counts 2 bytes a pixel (float16; 8-bit data then
    takes half of it), of the images as kept: resized, or scaled and (training images) padded to a patch.
    ``device`` asked for on a CUDA device where the data takes more than the free memory is a ConfigError.
    Both are normalised as ``train_ds``'s images are (:attr:`~edgesearch.trainer.data.SegmentationDataset.stats`).
    """
    if cfg.loader == "cpu" or (cfg.loader == "auto" and device.type != "cuda"):
        return None
    if cfg.image_size is not None:
        need = resident_bytes(len(train_ds) + len(val_ds), channels, cfg.image_size, torch.float16)
        kept_as = f"at {cfg.image_size} px"
    else:
        need = patch_resident_bytes(
            raw_sizes(train_ds),
            raw_sizes(val_ds),
            channels=channels,
            scale=cfg.scale,
            patch=cfg.window,
            dtype=torch.float16,
        )
        kept_as = f"at scale {cfg.scale:g}"
    free = _free_bytes(device)
    if cfg.loader == "auto" and (free is None or need > AUTO_SHARE * free):
        return None
    if free is not None and need > free:
        raise ConfigError(
            f"data.loader: device: the dataset takes {need / 2**30:.1f} GiB {kept_as} but {device} "
            f"has {free / 2**30:.1f} GiB free; allowed here: cpu or auto"
        )
    if cfg.image_size is None:
        return patch_batches(train_ds, val_ds, cfg, edge_width=edge_width, augment=augment_batch, device=device)
    mean, std = train_ds.stats

    def batches(dataset: SegmentationDataset, *, train: bool) -> DeviceBatches:
        images, masks = resident_tensors(dataset, image_size=cfg.window)
        return DeviceBatches(
            images.to(device),
            masks.to(device),
            batch_size=cfg.batch_size,
            train=train,
            augment=cfg.augment,
            mean=mean,
            std=std,
        )

    return batches(train_ds, train=True), batches(val_ds, train=False)
