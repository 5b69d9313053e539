"""The device path of patch training: native-resolution images kept on the training device.

The CPU path (:class:`~edgesearch.trainer.patch_data.PatchDataset`) cuts, augments and normalises
one patch at a time with numpy and albumentations. Here the training images are prepared once as
the CPU path prepares them (:class:`~edgesearch.trainer.patches.PatchSource`: 0..1, resampled by
``data.scale``, padded to a patch with the ImageNet mean; masks and foreground pixels to match) and
kept on the device, one tensor per image (their sizes differ), stored as
:func:`~edgesearch.trainer.device_data.resident_tensors` stores its images: uint8 when every image
is 8-bit, else float16 (:func:`storage_dtype`).

Each epoch's plan is the CPU path's: the same :func:`~edgesearch.trainer.patches.patch_plan` call
(sizes, foreground, patch side, count, ``foreground_fraction`` and the epoch's seed), so for an
epoch seed both paths cut the same patches, and a resumed run cuts those it would have cut without
the interruption. A batch (:class:`DevicePatches`) is cut by slicing at the plan's coordinates,
which stay on the CPU (nothing waits on the device); its targets (mask, ``valid``, ``edge_valid``)
are made on the device as outer products of each patch's 1-D
:func:`~edgesearch.trainer.patches.patch_weights` vectors; then the batch is augmented at once
(:func:`~edgesearch.trainer.device_data.augment_batch`: the distribution of the CPU path's
albumentations steps) and normalised.

The augmentation is a parameter, as a dataset's transform is:
:func:`~edgesearch.trainer.device_data.device_batches` chooses the path and passes
:func:`~edgesearch.trainer.device_data.augment_batch` (this module stays below that one).

Validation images are kept whole (:class:`DeviceImages`): what
:class:`~edgesearch.trainer.patch_data.WholeImages` yields, from the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from edgesearch.trainer.config import DataConfig
from edgesearch.trainer.data import SegmentationDataset
from edgesearch.trainer.images import to_unit_range
from edgesearch.trainer.patches import PatchSource, patch_plan, patch_weights, patches_per_epoch, rescale

__all__ = [
    "BatchAugment",
    "DeviceImages",
    "DevicePatches",
    "patch_batches",
    "patch_resident_bytes",
    "raw_sizes",
    "resident_images",
    "resident_patches",
    "storage_dtype",
]


BatchAugment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""Augments a batch: (images (B, C, P, P) 0..1, targets (B, K, P, P), CPU generator) -> (images, targets),
as :func:`~edgesearch.trainer.device_data.augment_batch` does."""


# --------------------------------------------------------------------------- storage


def raw_sizes(dataset: SegmentationDataset) -> list[tuple[int, int]]:
    """Each image's (height, width) as read."""
    sizes = []
    for i in range(len(dataset)):
        image, _ = dataset.raw(i)
        sizes.append((int(image.shape[0]), int(image.shape[1])))
    return sizes


def storage_dtype(dataset: SegmentationDataset) -> torch.dtype:
    """uint8 when every image of ``dataset`` is 8-bit, else float16 (``resident_tensors``' docstring says why)."""
    eight_bit = all(dataset.raw(i)[0].dtype == np.uint8 for i in range(len(dataset)))
    return torch.uint8 if eight_bit else torch.float16


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(height, width) after :func:`~edgesearch.trainer.patches.rescale` by ``scale``."""
    if scale == 1.0:
        return size
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def patch_resident_bytes(
    train: Sequence[tuple[int, int]],
    val: Sequence[tuple[int, int]],
    *,
    channels: int,
    scale: float,
    patch: int,
    dtype: torch.dtype,
) -> int:
    """Bytes the device path keeps for images of these (height, width) sizes as read: training images
    scaled and padded to a patch, with uint8 masks; validation images scaled, with uint8 masks at their
    own size."""
    total = 0
    for size in train:
        height, width = _scaled(size, scale)
        total += max(height, patch) * max(width, patch) * (channels * dtype.itemsize + 1)
    for size in val:
        height, width = _scaled(size, scale)
        total += height * width * channels * dtype.itemsize + size[0] * size[1]
    return total


def _stored(unit: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """An (H, W, C) 0..1 float image as a (C, H, W) tensor of ``dtype``: uint8 holds ``round(255 * x)``."""
    chw = torch.from_numpy(np.ascontiguousarray(np.clip(unit, 0.0, 1.0).transpose(2, 0, 1), dtype=np.float32))
    return torch.round(chw * 255.0).to(torch.uint8) if dtype == torch.uint8 else chw.to(dtype)


def _unit(image: torch.Tensor) -> torch.Tensor:
    """A stored image (:func:`_stored`) as float32 0..1."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()


# --------------------------------------------------------------------------- training patches


class DevicePatches:
    """Training batches of patches cut from resident images: what ``build_loader`` yields for a
    :class:`~edgesearch.trainer.patch_data.PatchDataset`, without a loader.

    ``images[i]`` (C, H', W') uint8 (0..255) or float16 (0..1) and ``masks[i]`` (1, H', W') 0/1 are image
    ``i`` prepared as :class:`~edgesearch.trainer.patches.PatchSource` prepares it, already on the training
    device; ``sizes`` and ``foreground`` are its (before padding). Each pass yields ``n / batch_size``
    batches of ``(images, targets)``: float32 ``(x - mean) / std`` (B, C, P, P) and float32 (B, 3, P, P)
    mask, valid and edge_valid, cut in the order of the epoch's plan (:meth:`reseed` picks the epoch),
    augmented by ``augment`` (None: not augmented).
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor],
        *,
        sizes: Sequence[tuple[int, int]],
        foreground: Sequence[np.ndarray],
        patch: int,
        n: int,
        fraction: float,
        edge_width: int,
        batch_size: int,
        augment: BatchAugment | None,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        if not images or not len(images) == len(masks) == len(sizes) == len(foreground):
            raise ValueError(
                f"need images, masks, sizes and foreground for each image, got {len(images)}, {len(masks)}, "
                f"{len(sizes)} and {len(foreground)}"
            )
        if batch_size < 1 or n < batch_size or n % batch_size:
            raise ValueError(f"n must be a whole number of batches of {batch_size}, got {n}")
        channels, device = images[0].shape[0], images[0].device
        for i, (image, mask, size) in enumerate(zip(images, masks, sizes, strict=True)):
            shape = (channels, max(size[0], patch), max(size[1], patch))
            if tuple(image.shape) != shape or tuple(mask.shape) != (1, *shape[1:]):
                raise ValueError(
                    f"image {i}: image {tuple(image.shape)} and mask {tuple(mask.shape)}; expected {shape} and "
                    f"(1, {shape[1]}, {shape[2]}) for size {size} and patch {patch}"
                )
            if image.device != device or mask.device != device or image.dtype != images[0].dtype:
                raise ValueError(f"image {i}: on {image.device} as {image.dtype}, image 0 on {device}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values each, got {len(mean)} and {len(std)}")
        self.images = list(images)
        self.masks = list(masks)
        self.sizes = list(sizes)
        self.foreground = list(foreground)
        self.patch = patch
        self.n = n
        self.fraction = fraction
        self.edge_width = edge_width
        self.batch_size = batch_size
        self.augment = augment
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, channels, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, channels, 1, 1)
        self._generator = torch.Generator()
        self._plan: tuple[int, np.ndarray] | None = None
        self.reseed(0)

    def reseed(self, epoch_seed: int) -> None:
        """Make ``epoch_seed`` the epoch whose plan the next passes cut, and seed the augmentation with it."""
        self.epoch_seed = epoch_seed
        self._generator.manual_seed(epoch_seed)

    def plan(self) -> np.ndarray:
        """The (n, 4) plan of the current epoch: ``PatchDataset.plan`` of the same seed (the last one is kept)."""
        if self._plan is None or self._plan[0] != self.epoch_seed:
            plan = patch_plan(
                self.sizes, self.foreground, patch=self.patch, n=self.n, fraction=self.fraction, seed=self.epoch_seed
            )
            self._plan = (self.epoch_seed, plan)
        return self._plan[1]

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self.plan()
        for start in range(0, self.n, self.batch_size):
            yield self._batch(plan[start : start + self.batch_size, :3].tolist())

    def _weights(self, coords: list[list[int]]) -> np.ndarray:
        """(B, 4, P): each patch's row valid, column valid, row edge_valid and column edge_valid vectors."""
        out = np.empty((len(coords), 4, self.patch), dtype=np.float32)
        for j, (i, top, left) in enumerate(coords):
            height, width = self.sizes[i]
            out[j, 0], out[j, 2] = patch_weights(top, self.patch, height, self.edge_width)
            out[j, 1], out[j, 3] = patch_weights(left, self.patch, width, self.edge_width)
        return out

    def _batch(self, coords: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.patch
        images = torch.stack([self.images[i][:, top : top + p, left : left + p] for i, top, left in coords])
        masks = torch.stack([self.masks[i][:, top : top + p, left : left + p] for i, top, left in coords])
        # A host-to-device copy of a few vectors a patch; the (P, P) planes are made on the device.
        weights = torch.from_numpy(self._weights(coords)).to(images.device, non_blocking=True)
        valid = weights[:, 0, :, None] * weights[:, 1, None, :]
        edge_valid = weights[:, 2, :, None] * weights[:, 3, None, :]
        targets = torch.cat([masks.float(), valid[:, None], edge_valid[:, None]], dim=1)
        unit = _unit(images)
        if self.augment is not None:
            unit, targets = self.augment(unit, targets, self._generator)
        return (unit - self._mean) / self._std, targets


def resident_patches(
    dataset: SegmentationDataset,
    cfg: DataConfig,
    *,
    edge_width: int,
    augment: BatchAugment | None,
    device: torch.device,
) -> DevicePatches:
    """The training images of ``dataset`` prepared for patches (as ``PatchDataset`` prepares them) on ``device``,
    augmented by ``augment`` when ``data.augment`` asks for it, normalised as ``dataset``'s images are."""
    mean, std = dataset.stats
    source = PatchSource(
        dataset.raw, len(dataset), normalize=dataset.normalize, scale=cfg.scale, patch=cfg.window, pad_value=mean
    )
    dtype = storage_dtype(dataset)
    images, masks = [], []
    for i in range(len(dataset)):
        unit, mask = source.prepared(i)
        images.append(_stored(unit, dtype).to(device))
        masks.append(torch.from_numpy(np.array(mask, dtype=np.uint8))[None].to(device))  # a copy: may be read-only
    n = patches_per_epoch(source.sizes, patch=cfg.window, batch_size=cfg.batch_size, requested=cfg.patches_per_epoch)
    return DevicePatches(
        images,
        masks,
        sizes=source.sizes,
        foreground=source.foreground,
        patch=cfg.window,
        n=n,
        fraction=cfg.foreground_fraction,
        edge_width=edge_width,
        batch_size=cfg.batch_size,
        augment=augment if cfg.augment else None,
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------- whole validation images


class DeviceImages:
    """Validation images kept whole on the device: ``(image (C, h, w), mask (1, H, W))`` as
    :class:`~edgesearch.trainer.patch_data.WholeImages` yields them (the image normalised and resampled
    by ``data.scale``, float32; the mask uint8 0/1 at the image's own size), but for the storage's rounding.

    ``images[i]`` (C, h, w) uint8 (0..255) or float16 (0..1) and ``masks[i]`` are on the training device.
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor],
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        if not images or len(images) != len(masks):
            raise ValueError(f"need a mask for each image, got {len(images)} images and {len(masks)} masks")
        channels, device = images[0].shape[0], images[0].device
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values each, got {len(mean)} and {len(std)}")
        self.images = list(images)
        self.masks = list(masks)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(channels, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(channels, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for image, mask in zip(self.images, self.masks, strict=True):
            yield (_unit(image) - self._mean) / self._std, mask


def resident_images(dataset: SegmentationDataset, cfg: DataConfig, *, device: torch.device) -> DeviceImages:
    """The validation images of ``dataset``, scaled to 0..1, resampled and normalised as ``WholeImages`` does,
    on ``device``."""
    dtype = storage_dtype(dataset)
    images, masks = [], []
    for i in range(len(dataset)):
        image, mask = dataset.raw(i)
        if image.ndim == 2:
            image = image[:, :, None]
        unit, _ = rescale(to_unit_range(image, dataset.normalize), None, cfg.scale)
        images.append(_stored(unit, dtype).to(device))
        masks.append(torch.from_numpy(np.array(mask, dtype=np.uint8))[None].to(device))
    mean, std = dataset.stats
    return DeviceImages(images, masks, mean=mean, std=std)


def patch_batches(
    train_ds: SegmentationDataset,
    val_ds: SegmentationDataset,
    cfg: DataConfig,
    *,
    edge_width: int,
    augment: BatchAugment,
    device: torch.device,
) -> tuple[DevicePatches, DeviceImages]:
    """(training patches, whole validation images) of the device path, resident on ``device``."""
    return (
        resident_patches(train_ds, cfg, edge_width=edge_width, augment=augment, device=device),
        resident_images(val_ds, cfg, device=device),
    )
