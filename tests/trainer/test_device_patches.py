"""The device path of patch training against the CPU path (``PatchDataset`` through ``build_loader``).

Unaugmented, both paths cut the same patches of the same epoch: batches are compared one by one.
Augmented, each output patch is identified with the patch it was cut as (the CPU path's own cut of
the plan, unaugmented) under one of the 8 symmetries of the square, by a least-squares fit of
``alpha * x + beta`` (the brightness/contrast step) against each; the shares of the symmetries and
of patches holding foreground are then compared between the paths, each with its own epoch seeds,
and with what the configuration asks for. The tests are seeded, so the p-values are fixed numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy import stats  # type: ignore[import-untyped]  # no stubs installed

from edgesearch.errors import ConfigError
from edgesearch.trainer import Callback, TrainConfig, train
from edgesearch.trainer import device_data as device_data_module
from edgesearch.trainer.checkpoint_files import load_checkpoint
from edgesearch.trainer.config import DataConfig, ModelConfig
from edgesearch.trainer.data import SegmentationDataset, build_datasets, build_loader, normalization
from edgesearch.trainer.device_data import augment_batch, device_batches
from edgesearch.trainer.device_patches import (
    DeviceImages,
    DevicePatches,
    patch_resident_bytes,
    raw_sizes,
)
from edgesearch.trainer.patch_data import PatchDataset, WholeImages
from edgesearch.trainer.records import EpochRecord

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
PATCH = 32
EDGE_WIDTH = 2
P_MIN = 0.001
EXPECTED_SYMMETRIES = np.array([3, 1, 3, 1, 3, 1, 3, 1]) / 16
"""Probability of ``rot90(hflip^h(x), k)`` at index ``4 * h + k`` (module docstring of device_data)."""


def _write_folder(
    root: Path, sizes: dict[str, list[tuple[int, int]]], *, channels: int, depth: int, seed: int = 0
) -> Path:
    """``train/`` and ``val/`` folders of images of the given (height, width): 8-bit PNGs or 16-bit TIFFs
    of ``channels`` channels, masks of a few rectangles (the first image of each part: none)."""
    rng = np.random.default_rng(seed)
    for part, part_sizes in sizes.items():
        (root / part / "images").mkdir(parents=True)
        (root / part / "masks").mkdir(parents=True)
        for i, (height, width) in enumerate(part_sizes):
            mask = np.zeros((height, width), np.uint8)
            for _ in range(3 if i else 0):
                top, left = int(rng.integers(height)), int(rng.integers(width))
                mask[top : top + int(rng.integers(2, 12)), left : left + int(rng.integers(2, 12))] = 1
            high = 255 if depth == 8 else 4095  # 12-bit data in 16-bit files, as microscopes write it
            shape = (height, width) if channels == 1 else (height, width, channels)
            image = rng.integers(0, high // 2, shape) + (high // 3) * (
                mask if channels == 1 else mask[..., None]
            ).astype(np.int64)
            if depth == 8:
                Image.fromarray(image.astype(np.uint8)).save(root / part / "images" / f"{i}.png")
            else:
                tifffile.imwrite(root / part / "images" / f"{i}.tif", image.astype(np.uint16))
            Image.fromarray(mask * 255).save(root / part / "masks" / f"{i}.png")
    return root


def _data(root: Path | None = None, **overrides: Any) -> DataConfig:
    base = {"root": root, "patch_size": PATCH, "batch_size": 4, "num_workers": 0, "loader": "device"}
    return DataConfig.model_validate(base | overrides)


def _both(cfg: DataConfig, channels: int) -> tuple[PatchDataset, SegmentationDataset, DevicePatches, DeviceImages]:
    """(CPU training set, validation set, device patches, device validation images) of ``cfg``."""
    train_ds, val_ds = build_datasets(cfg, model=ModelConfig(in_channels=channels), seed=0)
    paths = device_batches(train_ds, val_ds, cfg, channels=channels, edge_width=EDGE_WIDTH, device=CPU)
    assert paths is not None
    patches, images = paths
    assert isinstance(patches, DevicePatches) and isinstance(images, DeviceImages)
    return PatchDataset(train_ds, cfg, edge_width=EDGE_WIDTH), val_ds, patches, images


def _cpu_batches(dataset: PatchDataset, cfg: DataConfig, epoch_seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of the CPU path, seeded as ``train()`` seeds it."""
    loader = build_loader(dataset, cfg, train=True, generator=torch.Generator().manual_seed(epoch_seed))
    dataset.reseed(epoch_seed)
    return list(loader)


def _device_batches(patches: DevicePatches, epoch_seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    patches.reseed(epoch_seed)
    return list(patches)


# Images smaller than a patch along one axis and both, non-square ones, an image without foreground.
SIZES = {"train": [(70, 45), (20, 50), (25, 25), (64, 96), (40, 33)], "val": [(50, 37), (21, 64)]}


@pytest.mark.parametrize(
    ("channels", "depth", "scale"),
    [(3, 8, 1.0), (1, 8, 0.5), (1, 16, 1.0), (3, 16, 0.5)],
    ids=["rgb-8bit", "grey-8bit-half", "grey-16bit", "rgb-16bit-half"],
)
def test_unaugmented_batches_and_validation_images_are_those_of_the_cpu_path(
    tmp_path: Path, channels: int, depth: int, scale: float
) -> None:
    cfg = _data(_write_folder(tmp_path, SIZES, channels=channels, depth=depth), augment=False, scale=scale)
    cpu_set, val_ds, patches, images = _both(cfg, channels)
    assert all(image.dtype == (torch.uint8 if depth == 8 else torch.float16) for image in patches.images)
    _, std = normalization(channels)
    # Half a level of the storage (uint8: 0.5/255; float16: 11 significant bits), after the normalisation.
    tolerance = (0.5 / 255 if depth == 8 else 2.0**-12) / min(std) + 1e-5
    for epoch_seed in (7, 8):
        ours, theirs = _device_batches(patches, epoch_seed), _cpu_batches(cpu_set, cfg, epoch_seed)
        assert len(patches) == len(ours) == len(theirs) == cpu_set.n // cfg.batch_size
        for (image, targets), (cpu_image, cpu_targets) in zip(ours, theirs, strict=True):
            assert image.dtype == targets.dtype == torch.float32
            assert image.shape == cpu_image.shape == (cfg.batch_size, channels, PATCH, PATCH)
            assert torch.equal(targets, cpu_targets)
            assert (image - cpu_image).abs().max().item() <= tolerance
    # The padding (images smaller than a patch) is in the batches: some targets are not valid everywhere.
    assert any(not bool(targets[:, 1].all()) for _, targets in ours)

    whole = list(WholeImages(val_ds, cfg))
    assert len(images) == len(whole) == len(SIZES["val"])
    for (image, mask), (cpu_image, cpu_mask) in zip(images, whole, strict=True):
        assert image.shape == cpu_image.shape and image.dtype == torch.float32
        assert (image - cpu_image).abs().max().item() <= tolerance
        assert mask.dtype == cpu_mask.dtype and torch.equal(mask, cpu_mask)


@pytest.mark.parametrize("depth", [8, 16])
def test_the_memory_check_counts_what_is_kept(tmp_path: Path, depth: int) -> None:
    cfg = _data(_write_folder(tmp_path, SIZES, channels=3, depth=depth), scale=0.5)
    cpu_set, val_ds, patches, images = _both(cfg, 3)
    kept = sum(t.nbytes for t in [*patches.images, *patches.masks, *images.images, *images.masks])
    dtype = torch.uint8 if depth == 8 else torch.float16
    assert kept == patch_resident_bytes(
        raw_sizes(cpu_set.base), raw_sizes(val_ds), channels=3, scale=0.5, patch=PATCH, dtype=dtype
    )


# Synthetic data: 12 images of 48 x 48 x 3, 10 for training and 2 for validation. Kept at 2 bytes a
# pixel for the check: at scale 1 each takes 48 * 48 * (3 * 2 + 1) bytes (an image, its mask);
# at scale 0.5 a training image is padded to 32 x 32, and a validation mask stays at 48 x 48.
SYNTHETIC: dict[str, Any] = {"synthetic": {"n_images": 12, "size": 48}}
NEED = {1.0: 12 * 48 * 48 * 7, 0.5: 10 * 32 * 32 * 7 + 2 * (24 * 24 * 6 + 48 * 48)}


def _choose(cfg: DataConfig, device: torch.device) -> object:
    train_ds, val_ds = build_datasets(cfg, model=ModelConfig(), seed=0)
    return device_batches(train_ds, val_ds, cfg, channels=3, edge_width=EDGE_WIDTH, device=device)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_auto_on_cuda_keeps_the_cpu_path_when_the_patch_images_take_over_a_quarter_of_free_memory(
    monkeypatch: pytest.MonkeyPatch, scale: float
) -> None:
    # No GPU here: the free memory is set, and only the refusals can run.
    monkeypatch.setattr(device_data_module, "_free_bytes", lambda device: 4 * NEED[scale] - 1)
    assert _choose(_data(loader="auto", scale=scale, **SYNTHETIC), CUDA) is None
    monkeypatch.setattr(device_data_module, "_free_bytes", lambda device: NEED[scale] - 1)
    with pytest.raises(ConfigError, match=rf"data\.loader: device: .* at scale {scale:g} .* allowed here: cpu or auto"):
        _choose(_data(loader="device", scale=scale, **SYNTHETIC), CUDA)


def test_auto_and_cpu_keep_the_cpu_path_off_cuda() -> None:
    assert _choose(_data(loader="auto", **SYNTHETIC), CPU) is None
    assert _choose(_data(loader="cpu", **SYNTHETIC), CPU) is None


def test_the_same_epoch_seed_gives_the_same_augmented_batches_and_another_seed_others() -> None:
    _, _, patches, _ = _both(_data(**SYNTHETIC), 3)
    first = _device_batches(patches, 3)
    again = _device_batches(patches, 3)
    other = _device_batches(patches, 4)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0][0], other[0][0])


def test_patches_are_cut_on_the_data_device_with_only_the_plan_on_the_cpu() -> None:
    # The meta device stands in for a GPU: any operation mixing it with CPU data, or reading a value
    # back from it (a host sync), would raise.
    sizes = [(40, 70), (20, 25)]
    mean, std = normalization(3)
    patches = DevicePatches(
        [torch.empty(3, max(h, PATCH), max(w, PATCH), dtype=torch.uint8, device="meta") for h, w in sizes],
        [torch.empty(1, max(h, PATCH), max(w, PATCH), dtype=torch.uint8, device="meta") for h, w in sizes],
        sizes=sizes,
        foreground=[np.array([5, 300]), np.array([], dtype=np.int64)],
        patch=PATCH,
        n=8,
        fraction=0.5,
        edge_width=EDGE_WIDTH,
        batch_size=4,
        augment=augment_batch,
        mean=mean,
        std=std,
    )
    patches.reseed(1)
    out = list(patches)
    assert [(tuple(image.shape), tuple(targets.shape)) for image, targets in out] == [
        ((4, 3, PATCH, PATCH), (4, 3, PATCH, PATCH))
    ] * 2
    assert all(t.device.type == "meta" and t.dtype == torch.float32 for batch in out for t in batch)
    images = DeviceImages(
        [torch.empty(3, 20, 30, dtype=torch.float16, device="meta")],
        [torch.empty(1, 40, 60, dtype=torch.uint8, device="meta")],
        mean=mean,
        std=std,
    )
    ((image, mask),) = list(images)
    assert image.device.type == mask.device.type == "meta" and image.dtype == torch.float32


# --------------------------------------------------------------------------- augmentation


def _symmetry(a: np.ndarray, index: int) -> np.ndarray:
    """``np.rot90(hflip^h(a), k)`` of (N, P, P, C) patches on their (P, P) axes, for ``index = 4 * h + k``."""
    return np.rot90(a[:, :, ::-1] if index >= 4 else a, index % 4, axes=(1, 2))


def _identify(outputs: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(symmetry, changed) of each output patch (N, P, P, C), 0..1, given its unaugmented cut: the one
    symmetry of the cut that the output is an exact ``alpha * x + beta`` of, and whether alpha, beta
    differ from 1, 0 (brightness/contrast applied)."""
    n = len(outputs)
    y = outputs.reshape(n, -1).astype(np.float64)
    dy = y - y.mean(axis=1, keepdims=True)
    alpha, beta, residual = np.empty((8, n)), np.empty((8, n)), np.empty((8, n))
    for index in range(8):
        x = _symmetry(cuts, index).reshape(n, -1).astype(np.float64)
        dx = x - x.mean(axis=1, keepdims=True)
        alpha[index] = (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)
        beta[index] = y.mean(axis=1) - alpha[index] * x.mean(axis=1)
        residual[index] = np.abs(y - (alpha[index, :, None] * x + beta[index, :, None])).max(axis=1)
    symmetry = residual.argmin(axis=0)
    ranked = np.sort(residual, axis=0)
    assert (ranked[0] < 1e-4).all() and (ranked[1] > 1e-2).all(), "an output is not a flip/turn of its cut"
    picked = np.arange(n)
    changed = (np.abs(alpha[symmetry, picked] - 1.0) > 1e-5) | (np.abs(beta[symmetry, picked]) > 1e-5)
    return symmetry, changed


AUGMENTED = 2000


def _outcomes(
    batches: list[tuple[torch.Tensor, torch.Tensor]], reference: PatchDataset, epoch_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symmetry, changed, holds foreground) of each patch of one augmented epoch."""
    mean, std = (np.array(v, np.float32) for v in normalization(3))
    images = np.concatenate([b[0].numpy().transpose(0, 2, 3, 1) for b in batches]) * std + mean
    targets = np.concatenate([b[1].numpy().transpose(0, 2, 3, 1) for b in batches])
    cuts = [reference.cut(epoch_seed, k) for k in range(len(images))]
    symmetry, changed = _identify(images, np.stack([c[0] for c in cuts]))
    # The targets got the image's flips and turns.
    planned = np.stack([c[1] for c in cuts])
    for index in range(8):
        np.testing.assert_array_equal(targets[symmetry == index], _symmetry(planned[symmetry == index], index))
    return symmetry, changed, np.asarray(targets[..., 0].any(axis=(1, 2)))


@pytest.mark.slow
def test_augmented_patches_have_the_cpu_paths_distribution(tmp_path: Path) -> None:
    # 64 x 64 images of texture within 0.2..0.8 (no brightness draw clips it), foreground only at pixel
    # (0, 0): a patch holds it when centred on it (a share foreground_fraction of them), or when a
    # uniform origin lands on (0, 0): 1 in 33 * 33.
    root = tmp_path / "data"
    rng = np.random.default_rng(4)
    for part in ("train", "val"):
        (root / part / "images").mkdir(parents=True)
        (root / part / "masks").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(52, 204, (64, 64, 3), dtype=np.uint8)).save(
                root / part / "images" / f"{i}.png"
            )
            mask = np.zeros((64, 64), np.uint8)
            mask[0, 0] = 255
            Image.fromarray(mask).save(root / part / "masks" / f"{i}.png")
    cfg = _data(root, batch_size=100, patches_per_epoch=AUGMENTED)
    cpu_set, _, patches, _ = _both(cfg, 3)
    # Each path its own epoch seed: two samples of the same distribution, not the same sample twice.
    # The reference cut of each patch is the CPU path's, before its augmentation.
    cpu = _outcomes(_cpu_batches(cpu_set, cfg, 11), cpu_set, 11)
    device = _outcomes(_device_batches(patches, 13), cpu_set, 13)

    counts = np.stack([np.bincount(o[0], minlength=8) for o in (cpu, device)])
    assert stats.chi2_contingency(counts).pvalue > P_MIN, counts
    for row in counts:
        assert stats.chisquare(row, EXPECTED_SYMMETRIES * AUGMENTED).pvalue > P_MIN, row

    holding = np.array([[o[2].sum(), AUGMENTED - o[2].sum()] for o in (cpu, device)])
    assert stats.chi2_contingency(holding).pvalue > P_MIN, holding
    expected = cfg.foreground_fraction + (1 - cfg.foreground_fraction) / 33**2
    for held, _ in holding:
        assert stats.binomtest(int(held), AUGMENTED, expected).pvalue > P_MIN, held / AUGMENTED

    for _, changed, _ in (cpu, device):
        assert stats.binomtest(int(changed.sum()), AUGMENTED, 0.3).pvalue > P_MIN, changed.mean()


# --------------------------------------------------------------------------- training


PATCH_RUN = {"data": {"image_size": None, "patch_size": PATCH, "loader": "device", **SYNTHETIC}}


class _StopAfter(Callback):
    class Stop(Exception):
        pass

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, record: EpochRecord) -> None:
        if record["epoch"] == self.epoch:
            raise self.Stop


def _comparable(history: list[Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.slow
def test_training_on_device_patches_resumes_where_it_stopped(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = tiny_config(epochs=3, **PATCH_RUN)
    straight = train(config, run_dir=tmp_path / "straight")
    assert len(straight.history) == 3
    # The device path made the batches: the CPU path's augmentation draws from other streams.
    on_cpu = train(tiny_config(epochs=1, data={**PATCH_RUN["data"], "loader": "cpu"}))
    assert on_cpu.history[0]["train_loss"] != straight.history[0]["train_loss"]

    with pytest.raises(_StopAfter.Stop):
        train(config, run_dir=tmp_path / "crashed", callbacks=[_StopAfter(2)])
    resumed = train(config, run_dir=tmp_path / "crashed", resume_from=tmp_path / "crashed" / "last.pt")
    assert _comparable(resumed.history) == _comparable(straight.history)
    final_resumed = load_checkpoint(tmp_path / "crashed" / "last.pt")
    final_straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    for name, tensor in final_straight["model"].items():
        torch.testing.assert_close(final_resumed["model"][name], tensor, rtol=0, atol=0, msg=name)
