"""Datasets and loaders: image folders (checked by :mod:`~edgesearch.trainer.folders`) or the built-in
synthetic shapes, their transforms, and the loaders.

Images are read at full depth and scaled to 0..1 by :mod:`edgesearch.trainer.images`. Per process, a
checked folder and the decoded images are kept for the next run while they fit the cache budget
(:mod:`~edgesearch.trainer.data_cache`), and ``data.num_workers: auto`` starts no loader processes for
data held in memory unless a GPU's augmentation needs them (:func:`loader_workers`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset, Sampler

from edgesearch.errors import DataError
from edgesearch.trainer import data_cache
from edgesearch.trainer.config import IMAGE_SUFFIXES, DataConfig, ModelConfig
from edgesearch.trainer.folders import Pair, pair_key, scan_folder
from edgesearch.trainer.images import binarize_mask, is_lossy, read_image, read_mask, to_unit_range
from edgesearch.trainer.input_stats import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalization,
    model_normalization,
    normalization,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "FolderDataset",
    "SegmentationDataset",
    "SyntheticShapes",
    "build_datasets",
    "build_loader",
    "build_transforms",
    "loader_workers",
    "normalization",
]

# --------------------------------------------------------------------------- reading


# --------------------------------------------------------------------------- folder scan


# --------------------------------------------------------------------------- datasets


def build_transforms(
    *, image_size: int | None, stats: Normalization, augment: bool, mask_channels_first: bool = False
) -> A.Compose:
    """Joint image+mask pipeline for a float32 0..1 image (:func:`to_unit_range`): resize (unless
    ``image_size`` is None), (flips, rotations and brightness), normalisation with ``stats``, the model's
    (mean, std) (:func:`~edgesearch.trainer.input_stats.model_normalization`).

    ``mask_channels_first``: an (H, W, K) mask (a patch's targets) comes out (K, H, W)."""
    mean, std = stats
    steps: list[Any] = [] if image_size is None else [A.Resize(image_size, image_size)]
    if augment:
        steps += [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.3),
        ]
    steps += [A.Normalize(mean=mean, std=std, max_pixel_value=1.0), ToTensorV2(transpose_mask=mask_channels_first)]
    return A.Compose(steps)


class SegmentationDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Base: subclasses return a raw (image, 0/1 mask) pair; this scales the image and applies the transform."""

    def __init__(self, transform: A.Compose, *, normalize: str = "auto") -> None:
        self.transform = transform
        self.normalize = normalize

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def stats(self) -> Normalization:
        """The (mean, std) this dataset's images are normalised with: its transform's. What is built on the
        same images (patches, whole validation images, the device's copies) takes them from here."""
        step = next(step for step in self.transform.transforms if isinstance(step, A.Normalize))
        return tuple(float(v) for v in np.atleast_1d(step.mean)), tuple(float(v) for v in np.atleast_1d(step.std))

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def load_all(self) -> bool:
        """Decode every item into the process's cache when they all fit its budget; True when all are there."""
        raise NotImplementedError

    def epoch_sampler(self) -> Sampler[Any] | None:
        """The sampler a loader must draw this dataset's items with (None: shuffled positions)."""
        return None

    def reseed(self, seed: int) -> None:
        """Seed the augmentation RNG (called per epoch, and per loader worker), one stream per step.

        Why per step: albumentations' ``Compose.set_random_seed`` gives every step the same seed, so
        each step's first draw was the same number: both flips flipped together (never a mirror
        image) and brightness came only with them.
        """
        self.transform.set_random_seed(seed)
        steps = self.transform.transforms
        for step, step_seed in zip(steps, np.random.SeedSequence(seed).generate_state(len(steps)), strict=True):
            step.set_random_seed(int(step_seed))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.raw(index)
        # A kept mask is read-only, and ToTensorV2 shares memory with what it is given.
        out = self.transform(image=to_unit_range(image, self.normalize), mask=np.array(mask))
        return out["image"], out["mask"].unsqueeze(0).float()


class FolderDataset(SegmentationDataset):
    def __init__(self, pairs: Sequence[Pair], *, channels: int, transform: A.Compose, normalize: str = "auto") -> None:
        super().__init__(transform, normalize=normalize)
        self.pairs = list(pairs)
        self.channels = channels

    def __len__(self) -> int:
        return len(self.pairs)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[index]
        key = pair_key(pair, self.channels)
        kept = data_cache.decoded().get(key)
        if kept is not None:
            return kept[0], kept[1]
        mask = binarize_mask(read_mask(pair.mask), lossy=is_lossy(pair.mask))
        if mask is None:  # scan_folder checked this; the file changed since
            raise DataError(f"{pair.mask}: mask is not binary")
        image, mask = data_cache.decoded().put(key, (read_image(pair.image, channels=self.channels), mask))
        return image, mask

    def load_all(self) -> bool:
        # scan_folder decoded every pair and kept what fit: what is missing did not fit.
        cache = data_cache.decoded()
        try:
            return all(pair_key(pair, self.channels) in cache for pair in self.pairs)
        except OSError:
            return False


class SyntheticShapes(SegmentationDataset):
    """Random ellipses, rectangles and polygons on a noisy textured background.

    Image ``i`` depends only on ``(seed, i)``, so the dataset needs no storage and any split
    of it is reproducible. Objects are brighter on average than the background but share
    its noise, so a model must use shape and texture, not a single threshold.
    """

    def __init__(self, indices: Sequence[int], *, size: int, seed: int, channels: int, transform: A.Compose) -> None:
        super().__init__(transform)
        self.indices = list(indices)
        self.size = size
        self.seed = seed
        self.channels = channels

    def __len__(self) -> int:
        return len(self.indices)

    def _key(self, index: int) -> tuple[Any, ...]:
        return ("synthetic", self.seed, self.indices[index], self.size, self.channels)

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        cache = data_cache.decoded()
        kept = cache.get(self._key(index))
        if kept is not None:
            return kept[0], kept[1]
        sample = synthetic_sample(self.indices[index], size=self.size, seed=self.seed, channels=self.channels)
        image, mask = cache.put(self._key(index), sample)
        return image, mask

    def load_all(self) -> bool:
        cache = data_cache.decoded()
        missing = [i for i in range(len(self)) if self._key(i) not in cache]
        if cache.used + len(missing) * self.size * self.size * (self.channels + 1) > cache.budget:
            return False
        for index in missing:
            self.raw(index)
        return True


def _smooth_noise(rng: np.random.Generator, size: int, channels: int, cells: int) -> np.ndarray:
    grid = rng.normal(0.0, 1.0, (cells, cells, channels)).astype(np.float32)
    field = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return field.reshape(size, size, channels)


def synthetic_sample(index: int, *, size: int, seed: int, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic (image, 0/1 mask) pair, a pure function of (seed, index)."""
    rng = np.random.default_rng([seed, index])
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.integers(0, 3)
        cx, cy = (int(v) for v in rng.integers(size // 8, size - size // 8, 2))
        rx, ry = (int(v) for v in rng.integers(max(2, size // 12), max(3, size // 4), 2))
        if kind == 0:
            cv2.ellipse(mask, (cx, cy), (rx, ry), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        elif kind == 1:
            cv2.rectangle(mask, (cx - rx, cy - ry), (cx + rx, cy + ry), 1, -1)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            radius = rng.uniform(0.5, 1.0, len(angles)) * max(rx, ry)
            pts = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1).astype(np.int32)
            cv2.fillPoly(mask, [pts], 1)
    background = 0.35 + 0.12 * _smooth_noise(rng, size, channels, cells=4)
    foreground = 0.62 + 0.12 * _smooth_noise(rng, size, channels, cells=8)
    image = np.where(mask[:, :, None] > 0, foreground, background)
    image += rng.normal(0.0, 0.08, image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), mask


# --------------------------------------------------------------------------- building


def _split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return sorted(order[n_val:]), sorted(order[:n_val])


def build_datasets(
    cfg: DataConfig, *, model: ModelConfig, seed: int
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, val) datasets of ``model.in_channels`` channels, normalised as ``model``'s encoder expects
    (:func:`~edgesearch.trainer.input_stats.model_normalization`); a folder is scanned and checked
    (DataError on problems)."""
    channels, stats = model.in_channels, model_normalization(model)
    train_tf = build_transforms(image_size=cfg.image_size, stats=stats, augment=cfg.augment)
    val_tf = build_transforms(image_size=cfg.image_size, stats=stats, augment=False)
    if cfg.root is None:
        syn = cfg.synthetic
        train_idx, val_idx = _split(syn.n_images, cfg.val_fraction, syn.seed)

        size = cfg.image_size if cfg.image_size is not None else syn.size

        def make(indices: list[int], transform: A.Compose) -> SyntheticShapes:
            return SyntheticShapes(indices, size=size, seed=syn.seed, channels=channels, transform=transform)

        _check_training_split(len(train_idx), "data.synthetic.n_images")
        return make(train_idx, train_tf), make(val_idx, val_tf)

    train_pairs, val_pairs = scan_folder(
        Path(cfg.root), channels=channels, normalize=cfg.normalize, mask_suffix=cfg.mask_suffix
    )
    if val_pairs is None:
        if len(train_pairs) < 2:
            raise DataError(f"data.root: {cfg.root}: need at least 2 image/mask pairs to split off validation")
        train_idx, val_idx = _split(len(train_pairs), cfg.val_fraction, seed)
        val_pairs = [train_pairs[i] for i in val_idx]
        train_pairs = [train_pairs[i] for i in train_idx]
    _check_training_split(len(train_pairs), f"data.root: {cfg.root}")
    return (
        FolderDataset(train_pairs, channels=channels, transform=train_tf, normalize=cfg.normalize),
        FolderDataset(val_pairs, channels=channels, transform=val_tf, normalize=cfg.normalize),
    )


def _check_training_split(n_train: int, where: str) -> None:
    # BatchNorm cannot train on a batch of one image; the loader drops a last batch that small,
    # but a split of one image has nothing else.
    if n_train < 2:
        raise DataError(
            f"{where}: the training split has {n_train} image; at least 2 are needed "
            "(add images, or lower data.val_fraction)"
        )


def _seed_worker(worker_id: int) -> None:
    # Each worker gets its own stream, derived from the loader's seeded generator.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, SegmentationDataset):
        info.dataset.reseed(seed)


AUTO_WORKERS = 2
"""Loader processes ``num_workers: auto`` starts when it starts any (fewer on a machine with fewer cores)."""


def loader_workers(dataset: SegmentationDataset, cfg: DataConfig, *, train: bool, device: torch.device) -> int:
    """How many loader processes to start: ``data.num_workers``, or for ``auto``:

    0 when the dataset is held in memory (it fits the cache budget) and the batches need no
    augmentation on the CPU while a GPU waits (validation, ``augment: false``, or a CPU device,
    where loader processes would only take cores from the step); otherwise 2. Starting the two
    cost 3.7 s of a 64 px run on a 2-core machine (``benchmarks/end_to_end.py``), paid by every trial.
    """
    if cfg.num_workers != "auto":
        return cfg.num_workers
    cpu_augment = train and cfg.augment and device.type != "cpu"
    if not cpu_augment and dataset.load_all():
        return 0
    return min(AUTO_WORKERS, len(os.sched_getaffinity(0)))


def build_loader(
    dataset: SegmentationDataset,
    cfg: DataConfig,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    pin_memory: bool = False,
    device: torch.device | None = None,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    workers = loader_workers(dataset, cfg, train=train, device=device or torch.device("cpu"))
    worker_init: Callable[[int], None] | None = _seed_worker if workers > 0 else None
    sampler = dataset.epoch_sampler()
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=train and len(dataset) > cfg.batch_size,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=worker_init,
        generator=generator,
    )
