"""Training patches cut from images at their native resolution (after ``data.scale``).

An epoch is a plan of ``n`` patches (:func:`patch_plan`), a pure function of the images' sizes,
their foreground pixels and the epoch's seed, so both loader paths (:class:`PatchDataset` here, in
loader processes or not, and the device path) cut the same patches, and a resumed run cuts the
ones it would have cut without the interruption.

- **How many** (:func:`patches_per_epoch`): ``data.patches_per_epoch``, or as many as it takes to
  cover the training images once: ``sum_i ceil(h_i * w_i / P**2)`` for patches of side ``P``, at
  least one batch; rounded up to whole batches either way.
- **From which image**: image ``i`` gets ``ceil(h_i * w_i / P**2)`` of them (a large image is seen
  as often as its area asks), any remainder drawn in proportion to those counts, in random order.
- **Where**: exactly ``round(foreground_fraction * n)`` patches are centred on a foreground pixel
  drawn uniformly from the image's foreground (nnU-Net's ``oversample_foreground_percent``), the
  rest have a uniform origin; an image without foreground gets uniform patches. A patch is moved
  inside the image where it would stick out.
- **Padding**: an image smaller than a patch along an axis is padded after its end (the image with
  the ImageNet mean, so that it normalises to 0 as the sliding window's padding does; the mask with
  background). The padding counts in no loss (:func:`patch_weights`).

Targets of a patch are three channels: the 0/1 mask, ``valid`` (1 on the image, 0 on padding)
and ``edge_valid``. The edge term compares edge maps, whose erosion treats everything outside
the map as background: cut from a whole mask, a patch would get an edge along every side that
cuts through an object, where the object has none. A pixel counts in the edge term only where
its ``(2w+1)`` square window lies inside the patch or outside the image (whose outside *is*
background): along each axis, row ``r`` of a patch starting at ``a`` over a length ``L`` is kept
when ``(a == 0 or r >= w) and (a + P >= L or r < P - w)``. On those pixels the patch's edge map is
the whole mask's, so the edge targets are those of the whole image and a crop border is no edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from edgesearch.trainer.images import to_unit_range
from edgesearch.trainer.model_input import rescale

__all__ = [
    "PLAN_COLUMNS",
    "EpochSampler",
    "PatchSource",
    "as_tensor",
    "pad_to",
    "patch_plan",
    "patch_targets",
    "patch_weights",
    "patches_per_epoch",
    "rescale",
]

PLAN_COLUMNS = ("image", "top", "left", "centred")
"""The columns of a :func:`patch_plan`: image index, the patch's first row and column, and 1 when it
is centred on a foreground pixel."""

_PLAN_SALT = 0x9A7C4E5
"""Keeps the plan's random stream apart from the other users of an epoch's seed."""


def pad_to(array: np.ndarray, patch: int, value: float | Sequence[float] = 0.0) -> np.ndarray:
    """``array`` (H, W[, C]) padded after its end to at least ``patch`` rows and columns with ``value``
    (one per channel allowed); unchanged when it is that large already."""
    height, width = array.shape[:2]
    if height >= patch and width >= patch:
        return array
    out = np.empty((max(height, patch), max(width, patch), *array.shape[2:]), dtype=array.dtype)
    out[...] = np.asarray(value, dtype=array.dtype)
    out[:height, :width] = array
    return out


def patches_per_epoch(sizes: Sequence[tuple[int, int]], *, patch: int, batch_size: int, requested: int | None) -> int:
    """Patches in one epoch (module docstring): ``requested`` or the images' cover, in whole batches."""
    if not sizes:
        raise ValueError("no training images")
    wanted = requested if requested is not None else sum(_tiles(size, patch) for size in sizes)
    return max(1, math.ceil(wanted / batch_size)) * batch_size


def _tiles(size: tuple[int, int], patch: int) -> int:
    return math.ceil(size[0] * size[1] / (patch * patch))


def patch_plan(
    sizes: Sequence[tuple[int, int]],
    foreground: Sequence[np.ndarray],
    *,
    patch: int,
    n: int,
    fraction: float,
    seed: int,
) -> np.ndarray:
    """The ``(n, 4)`` int64 plan of one epoch (columns :data:`PLAN_COLUMNS`; module docstring).

    ``sizes`` are the images' (height, width) before padding; ``foreground[i]`` the flat indices
    (row * width + column) of image ``i``'s foreground pixels. Origins are in the padded image
    (:func:`pad_to`), so every patch lies inside it.
    """
    if len(sizes) != len(foreground) or not sizes:
        raise ValueError(f"need one foreground index array per image, got {len(foreground)} for {len(sizes)} images")
    rng = np.random.default_rng([_PLAN_SALT, seed])
    tiles = np.array([_tiles(size, patch) for size in sizes], dtype=np.int64)
    base = np.repeat(np.arange(len(sizes)), tiles)
    if n <= base.size:
        images = rng.choice(base, size=n, replace=False)
    else:
        extra = rng.choice(len(sizes), size=n - base.size, p=tiles / tiles.sum())
        images = rng.permutation(np.concatenate([base, extra]))
    centred = np.zeros(n, dtype=np.int64)
    centred[rng.permutation(n)[: round(fraction * n)]] = 1
    plan = np.empty((n, 4), dtype=np.int64)
    for k in range(n):
        i = int(images[k])
        height, width = sizes[i]
        span_y, span_x = max(height, patch) - patch, max(width, patch) - patch
        fg = foreground[i]
        if centred[k] and fg.size:
            row, col = divmod(int(fg[rng.integers(fg.size)]), width)
            top, left = min(max(row - patch // 2, 0), span_y), min(max(col - patch // 2, 0), span_x)
        else:
            centred[k] = 0 if not fg.size else centred[k]
            top, left = int(rng.integers(span_y + 1)), int(rng.integers(span_x + 1))
        plan[k] = (i, top, left, centred[k])
    return plan


def patch_weights(start: int, patch: int, length: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis of a patch starting at ``start`` over an image axis of ``length`` pixels:
    (``valid``, ``edge_valid``) float32 vectors of ``patch`` values (module docstring)."""
    r = np.arange(patch)
    valid = start + r < length
    low_ok = (start == 0) | (r >= width)
    high_ok = (start + patch >= length) | (r < patch - width)
    return valid.astype(np.float32), (low_ok & high_ok).astype(np.float32)


def patch_targets(
    mask: np.ndarray, top: int, left: int, *, patch: int, size: tuple[int, int], edge_width: int
) -> np.ndarray:
    """The (patch, patch, 3) float32 targets of a patch at (``top``, ``left``) of a padded 0/1 ``mask``
    whose image is ``size`` (height, width) before padding: mask, valid, edge_valid."""
    rows_valid, rows_edge = patch_weights(top, patch, size[0], edge_width)
    cols_valid, cols_edge = patch_weights(left, patch, size[1], edge_width)
    out = np.empty((patch, patch, 3), dtype=np.float32)
    out[:, :, 0] = mask[top : top + patch, left : left + patch]
    out[:, :, 1] = np.outer(rows_valid, cols_valid)
    out[:, :, 2] = np.outer(rows_edge, cols_edge)
    return out


class EpochSampler(Sampler[tuple[int, int]]):
    """Indices ``(epoch_seed, k)`` for ``k < n``: a :class:`PatchSource` item knows its epoch from its index,
    so loader processes (which keep their own copy of the dataset) cut the epoch's plan too."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.epoch_seed = 0

    def set_epoch(self, epoch_seed: int) -> None:
        self.epoch_seed = epoch_seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seed = self.epoch_seed
        return ((seed, k) for k in range(self.n))


class PatchSource:
    """The training images of one run, prepared for patches: scaled to 0..1 (``data.normalize``),
    resampled by ``scale``, padded to a patch; masks and foreground pixels to match.

    Prepared once per process, on first use. ``raw(i)`` gives image ``i`` as read (an (H, W, C)
    array and its (H, W) 0/1 mask), as :class:`~edgesearch.trainer.data.SegmentationDataset` does.
    """

    def __init__(
        self,
        raw: Callable[[int], tuple[np.ndarray, np.ndarray]],
        count: int,
        *,
        normalize: str,
        scale: float,
        patch: int,
        pad_value: Sequence[float],
    ) -> None:
        self._raw = raw
        self.count = count
        self.normalize = normalize
        self.scale = scale
        self.patch = patch
        self.pad_value = tuple(pad_value)
        self._prepared: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._sizes: list[tuple[int, int]] | None = None
        self._foreground: list[np.ndarray] | None = None

    def prepared(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index`` as float32 (H', W', C) in 0..1 and its uint8 0/1 mask, scaled and padded."""
        kept = self._prepared.get(index)
        if kept is None:
            image, mask = self._raw(index)
            if image.ndim == 2:
                image = image[:, :, None]
            unit, small = rescale(to_unit_range(image, self.normalize), np.asarray(mask, dtype=np.uint8), self.scale)
            kept = (pad_to(unit, self.patch, self.pad_value), pad_to(np.asarray(small), self.patch, 0))
            self._prepared[index] = kept
        return kept

    def _scan(self) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
        """(sizes, foreground) of every image, computed once."""
        if self._sizes is not None and self._foreground is not None:
            return self._sizes, self._foreground
        sizes: list[tuple[int, int]] = []
        foreground: list[np.ndarray] = []
        for i in range(self.count):
            image, _ = self._raw(i)
            height, width = image.shape[:2]
            if self.scale != 1.0:
                height, width = max(1, round(height * self.scale)), max(1, round(width * self.scale))
            sizes.append((height, width))
            _, mask = self.prepared(i)
            foreground.append(np.flatnonzero(mask[:height, :width]).astype(np.int64))
        self._sizes, self._foreground = sizes, foreground
        return sizes, foreground

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """Each image's (height, width) after scaling, before padding."""
        return self._scan()[0]

    @property
    def foreground(self) -> list[np.ndarray]:
        """Each image's foreground pixels as flat indices into its (scaled, unpadded) mask."""
        return self._scan()[1]


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """An (H, W, C) array as a (C, H, W) tensor (a copy, contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
