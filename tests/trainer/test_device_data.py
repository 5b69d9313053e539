"""The device-resident data path against the CPU path it replaces.

The augmentation is checked as a distribution: one small asymmetric image goes many times through
albumentations (``build_transforms(augment=True)``) and through :func:`augment_batch`. Each output
is identified by its mask as one of the 8 symmetries of the square (brightness leaves masks alone),
and its brightness/contrast recovered by a least-squares fit of the output image against the
input under that symmetry. The tests are seeded, so the p-values are fixed numbers, not flaky ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from scipy import stats  # type: ignore[import-untyped]  # no stubs installed

from edgesearch.trainer.config import DataConfig
from edgesearch.trainer.data import FolderDataset, SyntheticShapes, build_loader, build_transforms, normalization
from edgesearch.trainer.device_data import DeviceBatches, augment_batch, dihedral, resident_bytes, resident_tensors
from edgesearch.trainer.folders import Pair

SIZE = 32
SAMPLES = 4000
P_MIN = 0.001
EXPECTED_SYMMETRIES = np.array([3, 1, 3, 1, 3, 1, 3, 1]) / 16
"""Probability of ``rot90(hflip^h(x), k)`` at index ``4 * h + k``: see the module docstring of device_data."""


def _asymmetric_input() -> tuple[np.ndarray, np.ndarray]:
    """(S, S, 3) float32 image and (S, S) uint8 mask, neither equal to any of its own flips or turns.

    The image stays within 0.2..0.8, so no brightness/contrast draw (alpha 0.9..1.1, beta -0.1..0.1)
    clips it and the fit recovers alpha and beta exactly.
    """
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, (SIZE, SIZE, 3)).astype(np.float32)
    mask = (rng.random((SIZE, SIZE)) < 0.5).astype(np.uint8)
    return image, mask


def _symmetries(a: np.ndarray) -> np.ndarray:
    """(8, S, S, ...): ``np.rot90(hflip^h(a), k)`` at index ``4 * h + k``: every flip and turn is one of them."""
    return np.stack([np.rot90(a[:, ::-1] if h else a, k) for h in (0, 1) for k in range(4)])


def _identify(masks: np.ndarray, variants: np.ndarray) -> np.ndarray:
    """Index into ``variants`` (8, S, S) of each of ``masks`` (N, S, S); fails unless exactly one matches."""
    matches = (masks[:, None] == variants[None]).all(axis=(-2, -1))
    assert (matches.sum(axis=1) == 1).all(), "an output mask is not a flip/turn of the input mask"
    return np.asarray(matches.argmax(axis=1))


@dataclass(frozen=True)
class Outcomes:
    symmetry: np.ndarray  # (N,) index into _symmetries
    alpha: np.ndarray  # (N,) fitted contrast factor
    beta: np.ndarray  # (N,) fitted brightness offset
    residual: float  # largest |output - (alpha * input + beta)| over all samples and pixels

    @property
    def changed(self) -> np.ndarray:
        return np.asarray((np.abs(self.alpha - 1.0) > 1e-5) | (np.abs(self.beta) > 1e-5))


def _outcomes(images: np.ndarray, masks: np.ndarray, image: np.ndarray, mask: np.ndarray) -> Outcomes:
    """``images`` (N, S, S, 3) un-normalised outputs and ``masks`` (N, S, S) of one ``image`` and ``mask``."""
    symmetry = _identify(masks, _symmetries(mask))
    n = len(images)
    x = _symmetries(image)[symmetry].reshape(n, -1).astype(np.float64)
    y = images.reshape(n, -1).astype(np.float64)
    dx, dy = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    alpha = (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)
    beta = y.mean(axis=1) - alpha * x.mean(axis=1)
    residual = float(np.abs(y - (alpha[:, None] * x + beta[:, None])).max())
    return Outcomes(symmetry, alpha, beta, residual)


@pytest.fixture(scope="module")
def both_paths() -> tuple[Outcomes, Outcomes]:
    """(albumentations, augment_batch) outcomes of SAMPLES augmentations of the same input."""
    image, mask = _asymmetric_input()
    mean, std = (np.array(v, np.float32) for v in normalization(3))

    transform = build_transforms(image_size=SIZE, stats=normalization(3), augment=True)
    # Seeded as training seeds it (each epoch, each loader process): one stream per step.
    SyntheticShapes([0], size=SIZE, seed=0, channels=3, transform=transform).reseed(1000)
    cpu_images, cpu_masks = [], []
    for _ in range(SAMPLES):
        out = transform(image=image, mask=mask)
        cpu_images.append(out["image"].numpy().transpose(1, 2, 0) * std + mean)
        cpu_masks.append(out["mask"].numpy())
    cpu = _outcomes(np.stack(cpu_images), np.stack(cpu_masks), image, mask)

    generator = torch.Generator().manual_seed(0)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    batch = 500
    source = torch.from_numpy(image.transpose(2, 0, 1).copy())[None].expand(batch, -1, -1, -1)
    source_mask = torch.from_numpy(mask)[None, None].expand(batch, -1, -1, -1).float()
    dev_images, dev_masks = [], []
    for _ in range(SAMPLES // batch):
        images, masks = augment_batch(source, source_mask, generator)
        normalised = (images - mean_t) / std_t  # as DeviceBatches hands it to the model
        dev_images.append((normalised * std_t + mean_t).numpy().transpose(0, 2, 3, 1))
        dev_masks.append(masks[:, 0].numpy().astype(np.uint8))
    device = _outcomes(np.concatenate(dev_images), np.concatenate(dev_masks), image, mask)
    return cpu, device


# --------------------------------------------------------------------------- augmentation


def test_expected_symmetry_probabilities_follow_from_flips_and_albumentations_rotate90() -> None:
    # hflip and vflip each with 1/2; RandomRotate90 applied with 1/2, then k uniform on 0..3.
    _, mask = _asymmetric_input()
    variants = _symmetries(mask)
    rotate = {0: 0.5 + 0.5 / 4, 1: 0.5 / 4, 2: 0.5 / 4, 3: 0.5 / 4}
    probability = np.zeros(8)
    for h in (0, 1):
        for v in (0, 1):
            for k, p_k in rotate.items():
                m = mask[:, ::-1] if h else mask
                m = m[::-1] if v else m
                probability[_identify(np.rot90(m, k)[None], variants)[0]] += 0.25 * p_k
    np.testing.assert_allclose(probability, EXPECTED_SYMMETRIES)


def test_flips_and_turns_are_albumentations_own_per_sample() -> None:
    # All 16 (hflip, vflip, k) combinations in one batch, each on a different image: checks the
    # rotation direction, the order of the steps and that sorting by k does not mix samples up.
    rng = np.random.default_rng(1)
    combos = [(h, v, k) for h in (False, True) for v in (False, True) for k in range(4)]
    batch = rng.random((len(combos), 2, 6, 6)).astype(np.float32)
    out = dihedral(
        torch.from_numpy(batch),
        torch.tensor([c[0] for c in combos]),
        torch.tensor([c[1] for c in combos]),
        torch.tensor([c[2] for c in combos]),
    ).numpy()
    for i, (h, v, k) in enumerate(combos):
        expected = batch[i].transpose(1, 2, 0)  # albumentations works on (H, W, C)
        expected = A.HorizontalFlip().apply(expected) if h else expected
        expected = A.VerticalFlip().apply(expected) if v else expected
        expected = A.RandomRotate90().apply(expected, factor=k)
        np.testing.assert_array_equal(out[i], expected.transpose(2, 0, 1), err_msg=f"hflip={h} vflip={v} k={k}")


def test_the_cpu_path_reseed_draws_its_flips_independently() -> None:
    image, mask = _asymmetric_input()
    transform = build_transforms(image_size=SIZE, stats=normalization(3), augment=True)
    dataset = SyntheticShapes([0], size=SIZE, seed=0, channels=3, transform=transform)
    dataset.reseed(0)
    outputs = np.stack([transform(image=image, mask=mask)["mask"].numpy() for _ in range(400)])
    mirrored = _identify(outputs, _symmetries(mask)) >= 4
    assert stats.binomtest(int(mirrored.sum()), len(mirrored), 0.5).pvalue > P_MIN


@pytest.mark.slow
def test_flips_and_turns_have_the_same_distribution_as_albumentations(both_paths: tuple[Outcomes, Outcomes]) -> None:
    cpu, device = both_paths
    counts = np.stack([np.bincount(o.symmetry, minlength=8) for o in (cpu, device)])
    assert stats.chi2_contingency(counts).pvalue > P_MIN, counts
    for row in counts:
        assert stats.chisquare(row, EXPECTED_SYMMETRIES * SAMPLES).pvalue > P_MIN, row


@pytest.mark.slow
def test_brightness_and_contrast_change_about_30_percent_of_images(both_paths: tuple[Outcomes, Outcomes]) -> None:
    for outcome in both_paths:
        changed = int(outcome.changed.sum())
        assert stats.binomtest(changed, SAMPLES, 0.3).pvalue > P_MIN, changed / SAMPLES


@pytest.mark.slow
def test_brightness_and_contrast_are_a_multiply_add_with_albumentations_alpha_and_beta(
    both_paths: tuple[Outcomes, Outcomes],
) -> None:
    cpu, device = both_paths
    for outcome in both_paths:
        # An exact alpha * x + beta of the input under the symmetry its mask shows: so the image
        # got its mask's flips and turns too.
        assert outcome.residual < 1e-5
        alpha, beta = outcome.alpha[outcome.changed], outcome.beta[outcome.changed]
        assert stats.kstest(alpha, "uniform", args=(0.9, 0.2)).pvalue > P_MIN
        assert stats.kstest(beta, "uniform", args=(-0.1, 0.2)).pvalue > P_MIN
    assert stats.ks_2samp(cpu.alpha[cpu.changed], device.alpha[device.changed]).pvalue > P_MIN
    assert stats.ks_2samp(cpu.beta[cpu.changed], device.beta[device.changed]).pvalue > P_MIN


def test_an_image_and_its_mask_always_get_the_same_flips_and_turns() -> None:
    _, mask = _asymmetric_input()
    masks = torch.from_numpy(mask)[None, None].expand(2000, -1, -1, -1).float()
    images = (0.25 + 0.5 * masks).expand(-1, 3, -1, -1)  # foreground brighter, whatever the brightness draw
    out_images, out_masks = augment_batch(images, masks, torch.Generator().manual_seed(3))
    _identify(out_masks[:, 0].numpy().astype(np.uint8), _symmetries(mask))
    foreground_min = torch.where(out_masks > 0, out_images, torch.inf).amin(dim=(1, 2, 3))
    background_max = torch.where(out_masks > 0, -torch.inf, out_images).amax(dim=(1, 2, 3))
    assert (foreground_min > background_max).all()


def test_brightness_and_contrast_clip_to_the_unit_range_as_albumentations() -> None:
    images = torch.randint(0, 2, (2000, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float()
    out, _ = augment_batch(images, torch.zeros(2000, 1, 8, 8), torch.Generator().manual_seed(4))
    assert out.min().item() == 0.0 and out.max().item() == 1.0
    assert ((out > 0) & (out < 1)).any()  # some were changed, none left the range


def test_the_same_generator_seed_gives_the_same_augmented_batch() -> None:
    rng = torch.Generator().manual_seed(0)
    images, masks = torch.rand(64, 3, 16, 16, generator=rng), torch.randint(0, 2, (64, 1, 16, 16), generator=rng)
    first = augment_batch(images, masks, torch.Generator().manual_seed(7))
    again = augment_batch(images, masks, torch.Generator().manual_seed(7))
    other = augment_batch(images, masks, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


# --------------------------------------------------------------------------- resident tensors


@pytest.mark.parametrize("channels", [1, 3])
def test_resident_8_bit_images_match_the_cpu_path_within_half_a_level(channels: int) -> None:
    transform = build_transforms(image_size=SIZE, stats=normalization(channels), augment=False)
    dataset = SyntheticShapes(range(5), size=48, seed=3, channels=channels, transform=transform)
    images, masks = resident_tensors(dataset, image_size=SIZE)
    assert images.dtype == torch.uint8 and images.shape == (5, channels, SIZE, SIZE)
    assert masks.dtype == torch.uint8 and masks.shape == (5, 1, SIZE, SIZE)
    assert images.nbytes + masks.nbytes == resident_bytes(5, channels, SIZE, torch.uint8)
    mean, std = (torch.tensor(v).view(channels, 1, 1) for v in normalization(channels))
    for i in range(len(dataset)):
        cpu_image, cpu_mask = dataset[i]
        unit = cpu_image * std + mean
        assert (images[i].float() / 255 - unit).abs().max().item() <= 0.5 / 255 + 1e-6
        assert torch.equal(masks[i].float(), cpu_mask)


def test_deeper_images_are_kept_as_float16_near_their_full_depth(tmp_path: Path) -> None:
    # An 8-bit PNG first, then 12-bit data in 16-bit TIFFs: the whole set is stored as float16.
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(5)
    pairs = []
    for i in range(3):
        mask = np.zeros((40, 40), np.uint8)
        mask[5 + i : 25, 8:30] = 1
        image_path = tmp_path / "images" / (f"{i}.png" if i == 0 else f"{i}.tif")
        if i == 0:
            Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(image_path)
        else:
            tifffile.imwrite(image_path, (rng.integers(0, 4096, (40, 40)) + 200 * mask).astype(np.uint16))
        Image.fromarray(mask * 255).save(tmp_path / "masks" / f"{i}.png")
        pairs.append(Pair(image_path, tmp_path / "masks" / f"{i}.png"))
    transform = build_transforms(image_size=SIZE, stats=normalization(1), augment=False)
    dataset = FolderDataset(pairs, channels=1, transform=transform)
    images, masks = resident_tensors(dataset, image_size=SIZE)
    assert images.dtype == torch.float16 and images.shape == (3, 1, SIZE, SIZE)
    assert images.nbytes + masks.nbytes == resident_bytes(3, 1, SIZE, torch.float16)
    mean, std = normalization(1)
    half_step = 2.0**-12  # float16 has 11 significant bits: half a step below 1.0
    for i in range(3):
        cpu_image, cpu_mask = dataset[i]
        error = (images[i].float() - (cpu_image * std[0] + mean[0])).abs().max().item()
        assert error <= (0.5 / 255 if i == 0 else 0.0) + half_step + 1e-6, (i, error)
        assert torch.equal(masks[i].float(), cpu_mask)


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize(("n", "batch_size", "train"), [(10, 4, True), (10, 4, False), (8, 4, True), (3, 4, True)])
def test_batches_are_those_of_build_loader(n: int, batch_size: int, train: bool) -> None:
    transform = build_transforms(image_size=SIZE, stats=normalization(3), augment=False)
    dataset = SyntheticShapes(range(n), size=SIZE, seed=2, channels=3, transform=transform)
    cfg = DataConfig(image_size=SIZE, batch_size=batch_size, num_workers=0, augment=False)
    loader = build_loader(dataset, cfg, train=train, generator=torch.Generator().manual_seed(0))
    mean, std = normalization(3)
    batches = DeviceBatches(
        *resident_tensors(dataset, image_size=SIZE),
        batch_size=batch_size,
        train=train,
        augment=True,
        mean=mean,
        std=std,
    )
    ours, theirs = list(batches), list(loader)
    assert len(batches) == len(loader) == len(ours)
    assert [b[0].shape for b in ours] == [b[0].shape for b in theirs]
    assert [b[1].shape for b in ours] == [b[1].shape for b in theirs]
    assert all(b[0].dtype == b[1].dtype == torch.float32 for b in ours)
    if not train:  # the same images in the same order: equal up to the 8-bit rounding
        for (image, mask), (cpu_image, cpu_mask) in zip(ours, theirs, strict=True):
            assert (image - cpu_image).abs().max().item() <= 0.5 / 255 / min(std) + 1e-5
            assert torch.equal(mask, cpu_mask)


def _numbered(n: int) -> DeviceBatches:
    """Training batches of ``n`` constant images, image ``i`` of value ``i``, unaugmented, 5 a batch."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    mean, std = normalization(1)
    return DeviceBatches(
        images, torch.zeros(n, 1, 4, 4, dtype=torch.uint8), batch_size=5, train=True, augment=False, mean=mean, std=std
    )


def _order(batches: DeviceBatches) -> list[int]:
    mean, std = normalization(1)
    return [round((float(image[0, 0, 0]) * std[0] + mean[0]) * 255) for batch, _ in batches for image in batch]


def test_each_training_pass_shuffles_every_image_in_once() -> None:
    batches = _numbered(20)
    batches.reseed(1)
    assert sorted(_order(batches)) == list(range(20))
    uneven = _numbered(22)  # two left over: dropped, as build_loader's drop_last does
    order = _order(uneven)
    assert len(uneven) == 4 and len(order) == len(set(order)) == 20


def test_the_same_seed_gives_the_same_batches_and_another_seed_another_order() -> None:
    batches = _numbered(20)
    batches.reseed(5)
    first = _order(batches)
    batches.reseed(5)
    assert _order(batches) == first
    batches.reseed(6)
    assert _order(batches) != first

    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=rng)
    masks = torch.randint(0, 2, (12, 1, 8, 8), dtype=torch.uint8, generator=rng)
    mean, std = normalization(3)
    augmented = DeviceBatches(images, masks, batch_size=4, train=True, augment=True, mean=mean, std=std)
    augmented.reseed(9)
    once = list(augmented)
    augmented.reseed(9)
    for (a_image, a_mask), (b_image, b_mask) in zip(once, augmented, strict=True):
        assert torch.equal(a_image, b_image) and torch.equal(a_mask, b_mask)


def test_evaluation_batches_keep_the_stored_order() -> None:
    images = torch.arange(7, dtype=torch.uint8).view(7, 1, 1, 1).expand(7, 1, 4, 4).contiguous()
    mean, std = normalization(1)
    batches = DeviceBatches(
        images, torch.zeros(7, 1, 4, 4, dtype=torch.uint8), batch_size=5, train=False, augment=True, mean=mean, std=std
    )
    assert len(batches) == 2 and _order(batches) == list(range(7))


def test_batches_stay_on_the_data_device_with_only_the_generator_on_the_cpu() -> None:
    # The meta device stands in for a GPU: any operation mixing it with CPU data would raise.
    images = torch.empty(10, 3, 8, 8, dtype=torch.uint8, device="meta")
    masks = torch.empty(10, 1, 8, 8, dtype=torch.uint8, device="meta")
    mean, std = normalization(3)
    batches = DeviceBatches(images, masks, batch_size=4, train=True, augment=True, mean=mean, std=std)
    out = list(batches)
    assert len(out) == 2
    assert all(t.device.type == "meta" and t.dtype == torch.float32 for batch in out for t in batch)
