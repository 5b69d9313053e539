"""The datasets of a run on native-resolution patches: training patches and whole validation images.

:class:`PatchDataset` is the CPU path's training set: item ``(epoch_seed, k)`` is patch ``k`` of
that epoch's plan (:func:`~edgesearch.trainer.patches.patch_plan`), cut, augmented by
albumentations and normalised, with its three target channels. :class:`WholeImages` holds the
validation images whole, at native resolution, for the sliding window
(:meth:`~edgesearch.trainer.epoch.EpochRunner.validate_whole`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from edgesearch.trainer.config import DataConfig
from edgesearch.trainer.data import SegmentationDataset, build_transforms
from edgesearch.trainer.images import to_unit_range
from edgesearch.trainer.patches import (
    EpochSampler,
    PatchSource,
    as_tensor,
    patch_plan,
    patch_targets,
    patches_per_epoch,
    rescale,
)

__all__ = ["PatchDataset", "WholeImages"]


class PatchDataset(SegmentationDataset):
    """Training patches of ``source``'s images: item ``(epoch_seed, k)`` is ``(image (C, P, P), targets (3, P, P))``.

    The targets are the mask, ``valid`` and ``edge_valid`` (:mod:`~edgesearch.trainer.patches`). Load
    it with :meth:`epoch_sampler` (``build_loader`` does), and call ``set_epoch`` on the sampler
    before each epoch. Patches are normalised as ``source``'s images are (:attr:`SegmentationDataset.stats`).
    """

    def __init__(self, source: SegmentationDataset, cfg: DataConfig, *, edge_width: int) -> None:
        super().__init__(
            build_transforms(image_size=None, stats=source.stats, augment=cfg.augment, mask_channels_first=True)
        )
        mean, _ = source.stats
        self.base = source
        self.patch = cfg.window
        self.edge_width = edge_width
        self.fraction = cfg.foreground_fraction
        self.images = PatchSource(
            source.raw, len(source), normalize=source.normalize, scale=cfg.scale, patch=self.patch, pad_value=mean
        )
        self.n = patches_per_epoch(
            self.images.sizes, patch=self.patch, batch_size=cfg.batch_size, requested=cfg.patches_per_epoch
        )
        self._sampler = EpochSampler(self.n)
        self._plan: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.n

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.base.raw(index)

    def load_all(self) -> bool:
        return self.base.load_all()

    def epoch_sampler(self) -> EpochSampler:
        return self._sampler

    def reseed(self, seed: int) -> None:
        """Seed the augmentation and make ``seed`` the epoch the sampler draws patches of."""
        super().reseed(seed)
        self._sampler.set_epoch(seed)

    def plan(self, epoch_seed: int) -> np.ndarray:
        """The (n, 4) patch plan of the epoch whose seed is ``epoch_seed`` (the last one is kept)."""
        if self._plan is None or self._plan[0] != epoch_seed:
            plan = patch_plan(
                self.images.sizes,
                self.images.foreground,
                patch=self.patch,
                n=self.n,
                fraction=self.fraction,
                seed=epoch_seed,
            )
            self._plan = (epoch_seed, plan)
        return self._plan[1]

    def cut(self, epoch_seed: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch ``k`` of the epoch before augmentation: the (P, P, C) 0..1 image and its (P, P, 3) targets."""
        index, top, left, _ = (int(v) for v in self.plan(epoch_seed)[k])
        image, mask = self.images.prepared(index)
        size = self.images.sizes[index]
        crop = image[top : top + self.patch, left : left + self.patch]
        targets = patch_targets(mask, top, left, patch=self.patch, size=size, edge_width=self.edge_width)
        return crop, targets

    # The index is the sampler's (epoch_seed, k), not a position: the dataset is a plan per epoch.
    def __getitem__(self, index: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        crop, targets = self.cut(*index)
        out = self.transform(image=crop, mask=targets)
        return out["image"], out["mask"].float()


class WholeImages:
    """Validation images at native resolution: ``(image (C, h, w) normalised and scaled, mask (1, H, W) 0/1)``.

    The image is what the model sees (resampled by ``data.scale``, normalised as ``source``'s images
    are); the mask stays at the image's own size, where the metrics are taken. Items are made on demand
    from ``source``, whose decoded images the data cache keeps.
    """

    def __init__(self, source: SegmentationDataset, cfg: DataConfig) -> None:
        self.source = source
        self.scale = cfg.scale
        mean, std = source.stats
        self._mean = np.asarray(mean, dtype=np.float32)
        self._std = np.asarray(std, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.source)

    def item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.source.raw(index)
        if image.ndim == 2:
            image = image[:, :, None]
        unit, _ = rescale(to_unit_range(image, self.source.normalize), None, self.scale)
        normalised = (unit - self._mean) / self._std
        return as_tensor(normalised.astype(np.float32, copy=False)), torch.from_numpy(np.array(mask, dtype=np.uint8))[
            None
        ]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return (self.item(i) for i in range(len(self)))
