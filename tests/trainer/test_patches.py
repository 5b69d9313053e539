"""Training patches: the epoch plan, the weight maps and the patch dataset, against hand-computed values,
scipy's morphology and the loss's own unweighted path on the unpadded region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy import ndimage

from edgesearch.trainer.config import LossConfig, TrainConfig
from edgesearch.trainer.data import build_datasets
from edgesearch.trainer.edges import edge_map
from edgesearch.trainer.images import to_unit_range
from edgesearch.trainer.losses import total_loss
from edgesearch.trainer.patch_data import PatchDataset, WholeImages
from edgesearch.trainer.patches import (
    pad_to,
    patch_plan,
    patch_targets,
    patch_weights,
    patches_per_epoch,
    rescale,
)

# --------------------------------------------------------------------------- how many, from where


@pytest.mark.parametrize(
    ("sizes", "patch", "batch", "requested", "expected"),
    [
        ([(192, 512), (192, 512)], 128, 8, None, 16),  # 6 + 6 tiles, rounded up to 2 batches of 8
        ([(192, 512), (192, 512)], 128, 4, None, 12),  # 12 tiles: 3 whole batches
        ([(50, 70)], 256, 16, None, 16),  # smaller than a patch: 1 tile, at least one batch
        ([(1000, 1000)], 256, 2, 5, 6),  # asked for 5: whole batches
        ([(2048, 2048), (10, 10)], 256, 16, None, 80),  # 64 + 1 tiles -> 5 batches
    ],
)
def test_patches_per_epoch(
    sizes: list[tuple[int, int]], patch: int, batch: int, requested: int | None, expected: int
) -> None:
    assert patches_per_epoch(sizes, patch=patch, batch_size=batch, requested=requested) == expected


def _foreground(masks: list[np.ndarray]) -> list[np.ndarray]:
    return [np.flatnonzero(mask) for mask in masks]


def test_plan_centres_exactly_the_fraction_on_foreground() -> None:
    rng = np.random.default_rng(0)
    masks = [(rng.random((300, 500)) > 0.995).astype(np.uint8), np.zeros((200, 90), np.uint8)]
    masks[1][150:160, 40:50] = 1
    sizes = [m.shape for m in masks]
    for fraction in (0.0, 0.33, 0.5, 1.0):
        plan = patch_plan(sizes, _foreground(masks), patch=64, n=600, fraction=fraction, seed=3)
        assert plan[:, 3].sum() == round(fraction * 600)
        for image, top, left, centred in plan:
            height, width = sizes[image]
            # every patch lies inside the image padded to a patch
            assert 0 <= top <= max(height, 64) - 64 and 0 <= left <= max(width, 64) - 64
            if centred:  # a foreground pixel inside the patch
                assert masks[image][top : top + 64, left : left + 64].any()


def test_uniform_patches_on_sparse_foreground_rarely_hold_any() -> None:
    """The centred share is what makes sparse objects seen: uniform patches mostly miss a single small object."""
    mask = np.zeros((1000, 1000), np.uint8)
    mask[500:510, 500:510] = 1
    plan = patch_plan([mask.shape], _foreground([mask]), patch=64, n=400, fraction=0.25, seed=1)
    hits = np.array([mask[t : t + 64, left : left + 64].any() for _, t, left, _ in plan])
    centred = plan[:, 3] == 1
    assert hits[centred].all()
    assert hits[~centred].mean() < 0.05


def test_plan_draws_images_by_area_and_is_a_function_of_the_seed() -> None:
    sizes = [(128, 128), (256, 512)]  # 1 and 8 tiles of 128
    fg = [np.zeros(0, np.int64), np.zeros(0, np.int64)]
    plan = patch_plan(sizes, fg, patch=128, n=9, fraction=0.33, seed=0)
    assert np.bincount(plan[:, 0], minlength=2).tolist() == [1, 8]
    assert plan[:, 3].sum() == 0  # no foreground anywhere: every patch is uniform
    same = patch_plan(sizes, fg, patch=128, n=9, fraction=0.33, seed=0)
    other = patch_plan(sizes, fg, patch=128, n=9, fraction=0.33, seed=1)
    assert np.array_equal(plan, same)
    assert not np.array_equal(plan, other)


def test_plan_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="one foreground"):
        patch_plan([(10, 10)], [], patch=32, n=2, fraction=0.5, seed=0)


# --------------------------------------------------------------------------- padding and weights


@pytest.mark.parametrize(
    ("start", "length", "valid", "edge_valid"),
    [
        (0, 20, [1] * 8, [1] * 6 + [0] * 2),  # at the image's start: only the far side is a cut
        (12, 20, [1] * 8, [0] * 2 + [1] * 6),  # at its end: only the near side is a cut
        (6, 20, [1] * 8, [0] * 2 + [1] * 4 + [0] * 2),  # inside: both sides are cuts
        (0, 5, [1] * 5 + [0] * 3, [1] * 8),  # smaller than the patch: padding, no cut
        (0, 8, [1] * 8, [1] * 8),  # exactly the image
    ],
)
def test_patch_weights_by_hand(start: int, length: int, valid: list[int], edge_valid: list[int]) -> None:
    got_valid, got_edge = patch_weights(start, 8, length, 2)
    assert got_valid.tolist() == valid
    assert got_edge.tolist() == edge_valid


def test_pad_to_pads_after_the_end_with_the_value() -> None:
    image = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    padded = pad_to(image, 4, [0.5])
    assert padded.shape == (4, 4, 1)
    assert np.array_equal(padded[:2, :3], image)
    assert (padded[2:] == 0.5).all() and (padded[:, 3:] == 0.5).all()
    big = np.zeros((5, 6), np.uint8)
    assert pad_to(big, 4) is big


def _scipy_band(mask: np.ndarray, width: int) -> np.ndarray:
    """The inner band of width ``width`` by scipy: mask minus its erosion by a (2w+1) square, outside = background."""
    eroded = ndimage.binary_erosion(mask, structure=np.ones((2 * width + 1,) * 2), border_value=0)
    return (mask.astype(bool) & ~eroded).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_crop_borders_get_no_edge_and_the_rest_is_the_whole_images_band(seed: int) -> None:
    """Where a patch's edge_valid is 1, its edge map is the whole mask's (scipy); every pixel of a cut
    through an object (a band scipy does not have) has edge_valid 0."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((90, 110), np.uint8)
    for _ in range(6):
        y, x, r = (int(v) for v in rng.integers(0, 90, 3))
        mask[max(0, y - r // 2) : y + r // 2, max(0, x - r // 3) : x + r // 2] = 1
    width, patch = 3, 32
    whole = _scipy_band(mask, width)
    for _ in range(20):
        top, left = int(rng.integers(0, 90 - patch + 1)), int(rng.integers(0, 110 - patch + 1))
        targets = patch_targets(mask, top, left, patch=patch, size=mask.shape, edge_width=width)
        crop_band = edge_map(torch.from_numpy(targets[None, None, :, :, 0].copy()), width)[0, 0].numpy()
        counted = targets[:, :, 2] == 1
        truth = whole[top : top + patch, left : left + patch]
        assert np.array_equal(crop_band[counted], truth[counted])
        fake = (crop_band == 1) & (truth == 0)  # the cut's band: an edge of the crop, not of an object
        assert not counted[fake].any()


def test_padding_does_not_change_the_loss_and_equals_the_unpadded_loss() -> None:
    """A patch padded from 20x27 to 32x32: the weighted loss equals the plain loss of the 20x27 region,
    whatever the labels and logits in the padding."""
    gen = torch.Generator().manual_seed(0)
    cfg = LossConfig(kind="bce", round_ratio=0.2, edge_lambda=0.3, edge_width=2)
    logits = torch.randn(2, 1, 32, 32, generator=gen) * 3
    target = (torch.rand(2, 1, 32, 32, generator=gen) > 0.6).float()
    valid = torch.zeros(2, 1, 32, 32)
    valid[..., :20, :27] = 1
    target = target * valid
    padded = total_loss(logits, target, cfg, valid=valid, edge_valid=torch.ones_like(valid))
    plain = total_loss(logits[..., :20, :27], target[..., :20, :27], cfg)
    assert padded.item() == pytest.approx(plain.item(), rel=1e-5)
    noisy_target = torch.where(valid > 0, target, (torch.rand(2, 1, 32, 32, generator=gen) > 0.5).float())
    noisy_logits = torch.where(valid > 0, logits, torch.randn(2, 1, 32, 32, generator=gen) * 10)
    again = total_loss(noisy_logits, noisy_target, cfg, valid=valid, edge_valid=torch.ones_like(valid))
    assert again.item() == pytest.approx(padded.item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["bce", "focal"])
def test_the_edge_term_counts_only_edge_valid_pixels(kind: str) -> None:
    cfg = LossConfig(kind=kind, edge_lambda=1.0, edge_width=2)  # the edge term alone
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 1, 16, 16, generator=gen)
    target = (torch.rand(1, 1, 16, 16, generator=gen) > 0.5).float()
    edge_valid = torch.zeros(1, 1, 16, 16)
    edge_valid[..., 4:12, 4:12] = 1
    got = total_loss(logits, target, cfg, valid=torch.ones_like(target), edge_valid=edge_valid)
    diff = (edge_map(torch.sigmoid(logits), 2) - edge_map(target, 2)).abs()
    assert got.item() == pytest.approx(diff[..., 4:12, 4:12].mean().item(), rel=1e-5)


def test_rescale_keeps_mask_labels_and_sizes() -> None:
    image = np.random.default_rng(0).random((101, 57, 3)).astype(np.float32)
    mask = (image[:, :, 0] > 0.5).astype(np.uint8)
    small, small_mask = rescale(image, mask, 0.5)
    assert small.shape == (50, 28, 3) and small_mask is not None and small_mask.shape == (50, 28)
    assert set(np.unique(small_mask)) <= {0, 1}
    one, _ = rescale(image[:, :, :1], None, 0.5)
    assert one.shape == (50, 28, 1)
    same, same_mask = rescale(image, mask, 1.0)
    assert same is image and same_mask is mask


# --------------------------------------------------------------------------- the dataset


def _whole_config(root: Path, **data: object) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"arch": "unet", "encoder": "resnet18", "in_channels": 1},
            "data": {"root": str(root), "patch_size": 64, "batch_size": 4, "augment": False, **data},
        }
    )


@pytest.fixture(scope="module")
def whole_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgesearch.sample_data import write_whole

    root = tmp_path_factory.mktemp("whole")
    write_whole(root)
    return root


def test_patch_dataset_cuts_training_images_only(whole_root: Path) -> None:
    """Every patch is a region of a training file (read here with Pillow); the validation rows are other rows."""
    from edgesearch.sample_data import WHOLE_TRAIN_ROWS, WHOLE_VAL_ROWS

    train_rows = {row for start, stop in WHOLE_TRAIN_ROWS for row in range(start, stop)}
    assert train_rows.isdisjoint(row for start, stop in WHOLE_VAL_ROWS for row in range(start, stop))
    config = _whole_config(whole_root, foreground_fraction=0.5)
    train_ds, _ = build_datasets(config.data, model=config.model, seed=0)
    dataset = PatchDataset(train_ds, config.data, edge_width=2)
    files = sorted((whole_root / "train" / "images").iterdir())
    # scaled to 0..1 as data.normalize: auto scales the file (percentiles for 16-bit files)
    pixels = [to_unit_range(np.asarray(Image.open(path))) for path in files]
    assert dataset.images.sizes == [p.shape for p in pixels] == [(192, 512), (192, 512)]
    assert len(dataset) == 48  # 2 x ceil(192 * 512 / 64**2) = 2 x 24, whole batches of 4
    for epoch_seed in (0, 7):
        plan = dataset.plan(epoch_seed)
        assert plan[:, 3].sum() == 24
        for k, (image, top, left, _) in enumerate(plan):
            crop, targets = dataset.cut(epoch_seed, k)
            assert crop.shape == (64, 64, 1) and targets.shape == (64, 64, 3)
            np.testing.assert_allclose(crop[:, :, 0], pixels[image][top : top + 64, left : left + 64], atol=1e-6)


def test_patches_are_a_function_of_the_epoch_seed(whole_root: Path) -> None:
    """What a resumed run needs: a new dataset (another process) cuts the same patches for the same epoch."""
    config = _whole_config(whole_root)
    first = PatchDataset(build_datasets(config.data, model=config.model, seed=0)[0], config.data, edge_width=2)
    second = PatchDataset(build_datasets(config.data, model=config.model, seed=0)[0], config.data, edge_width=2)
    second.reseed(5)
    for k in (0, 13, 47):
        a, b = first.cut(5, k), second[(5, k)]
        np.testing.assert_allclose(b[1].numpy().transpose(1, 2, 0), a[1])
    assert not np.array_equal(first.plan(5), first.plan(6))


def test_small_images_are_padded_and_marked(tmp_path: Path) -> None:
    """A 20x27 16-bit image in a 64 patch: the image at the top left, valid 1 exactly there."""
    root = tmp_path / "data"
    for part in ("train", "val"):
        (root / part / "images").mkdir(parents=True)
        (root / part / "masks").mkdir(parents=True)
        for i in range(2):
            image = (np.random.default_rng(i).random((20, 27)) * 60000).astype(np.uint16)
            mask = np.zeros((20, 27), np.uint8)
            mask[5:15, 3:20] = 255
            tifffile.imwrite(root / part / "images" / f"a{i}.tif", image)
            Image.fromarray(mask).save(root / part / "masks" / f"a{i}.png")
    config = _whole_config(root)
    train_ds, val_ds = build_datasets(config.data, model=config.model, seed=0)
    dataset = PatchDataset(train_ds, config.data, edge_width=2)
    image, targets = dataset[(0, 0)]
    assert image.shape == (1, 64, 64) and targets.shape == (3, 64, 64)
    valid = torch.zeros(64, 64)
    valid[:20, :27] = 1
    assert torch.equal(targets[1], valid)
    assert torch.equal(targets[2], torch.ones(64, 64))  # no cut: the whole image is in the patch
    assert targets[0].sum().item() == 10 * 17
    whole_image, whole_mask = WholeImages(val_ds, config.data).item(0)
    assert whole_image.shape == (1, 20, 27) and whole_mask.shape == (1, 20, 27)
