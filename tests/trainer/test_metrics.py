"""Validation metrics against smp, numpy and a cv2 reference of the Boundary IoU band."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from edgesearch.trainer.metrics import (
    MetricAccumulator,
    boundary_iou,
    edge_correlation,
    image_edge_correlations,
    image_ious,
    iou,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smp_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float | None = None) -> float:
    output = pred if threshold is not None else pred.long()
    stats = smp.metrics.get_stats(output, target.long(), mode="binary", threshold=threshold)
    return float(smp.metrics.iou_score(*stats, reduction="micro"))  # float32: compare with rel=1e-6


def _ref_band(mask: np.ndarray, width: int) -> np.ndarray:
    """``m - erode(m)`` with a zero border of ``width`` (Boundary IoU's reference), for 2-D float32."""
    padded = cv2.copyMakeBorder(mask.astype(np.float32), width, width, width, width, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((2 * width + 1, 2 * width + 1), np.uint8))
    return mask.astype(np.float32) - eroded[width:-width, width:-width]


def _ref_edges(batch: torch.Tensor, width: int) -> np.ndarray:
    arr = batch.detach().cpu().numpy().astype(np.float32)
    return np.stack([_ref_band(image[0], width) for image in arr])


def _square(top: int, left: int, side: int = 10, size: int = 20) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., top : top + side, left : left + side] = 1
    return mask


# --- IoU ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_of_binary_masks_matches_smp_micro(seed: int) -> None:
    gen = _gen(seed)
    pred = (torch.rand((4, 1, 32, 32), generator=gen) > 0.6).float()
    target = (torch.rand((4, 1, 32, 32), generator=gen) > 0.4).float()
    assert iou(pred, target) == pytest.approx(_smp_iou(pred, target), rel=1e-6)
    assert iou(pred.bool(), target.bool()) == pytest.approx(_smp_iou(pred, target), rel=1e-6)


def test_iou_of_probabilities_matches_smp_thresholded_at_half() -> None:
    gen = _gen(3)
    prob = torch.rand((4, 1, 32, 32), generator=gen)
    prob[0, 0, 0, :3] = torch.tensor([0.5, 0.49999997, 0.50000006])  # the threshold itself counts as 1
    target = (torch.rand((4, 1, 32, 32), generator=gen) > 0.5).float()
    assert iou(prob, target) == pytest.approx(_smp_iou(prob, target, threshold=0.5), rel=1e-6)


def test_iou_of_two_empty_masks_is_one_like_smp_zero_division() -> None:
    empty = torch.zeros(2, 1, 8, 8)
    # smp's "micro" reduction skips its zero_division handling (it returns nan); the other
    # reductions apply the default zero_division=1.0, which is the value iou() must give.
    stats = smp.metrics.get_stats(empty.long(), empty.long(), mode="binary")
    assert torch.equal(smp.metrics.iou_score(*stats, reduction="none"), torch.ones(2, 1))
    assert iou(empty, empty) == 1.0
    assert iou(empty.bool(), empty.bool()) == 1.0


def test_iou_of_hand_made_squares() -> None:
    a, b = _square(5, 5), _square(5, 10)  # overlap 10x5 = 50, union 150
    assert iou(a, b) == pytest.approx(50 / 150)


# --- the accumulator ---------------------------------------------------------------------------


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = _gen(4)
    # A perfect batch with tiny masks, then a bad batch with big masks: the mean of the batch
    # IoUs is far from the dataset-level IoU.
    small = torch.zeros(2, 1, 32, 32)
    small[..., 10:12, 10:12] = 1
    big_target = torch.zeros(3, 1, 32, 32)
    big_target[..., 2:30, 2:30] = 1
    big_pred = torch.zeros(3, 1, 32, 32)
    big_pred[..., 0:16, :] = 1
    noisy_target = (torch.rand((2, 1, 32, 32), generator=gen) > 0.5).float()
    noisy_prob = torch.rand((2, 1, 32, 32), generator=gen)
    return [(small * 0.9, small), (big_pred * 0.7 + 0.1, big_target), (noisy_prob, noisy_target)]


def test_metric_accumulator_val_iou_is_dataset_level() -> None:
    batches = _batches()
    acc = MetricAccumulator(width=2)
    for prob, target in batches:
        acc.update(prob, target)
    metrics = acc.compute()

    all_prob = torch.cat([p for p, _ in batches])
    all_target = torch.cat([t for _, t in batches])
    expected = _smp_iou(all_prob, all_target, threshold=0.5)
    mean_of_batches = float(np.mean([_smp_iou(p, t, threshold=0.5) for p, t in batches]))
    assert abs(mean_of_batches - expected) > 0.1  # the check below can tell them apart
    assert metrics["val_iou"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("edges_given", [False, True], ids=["edges computed", "target edges passed in"])
def test_metric_accumulator_matches_the_whole_dataset_metrics(edges_given: bool) -> None:
    from edgesearch.trainer.edges import edge_map

    batches = _batches()
    acc = MetricAccumulator(width=2)
    for prob, target in batches:
        acc.update(prob, target, target_edges=edge_map(target, 2) if edges_given else None)
    metrics = acc.compute()
    all_prob = torch.cat([p for p, _ in batches])
    all_target = torch.cat([t for _, t in batches])

    pred_band = _ref_edges((all_prob >= 0.5).float(), 2) > 0
    target_band = _ref_edges(all_target, 2) > 0
    expected_biou = (pred_band & target_band).sum() / (pred_band | target_band).sum()
    expected_corr = np.corrcoef(_ref_edges(all_prob, 2).ravel(), _ref_edges(all_target, 2).ravel())[0, 1]
    assert metrics["val_boundary_iou"] == pytest.approx(float(expected_biou), abs=1e-9)
    assert metrics["val_edge_corr"] == pytest.approx(float(expected_corr), abs=1e-6)


# --- boundary IoU ------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3])
def test_boundary_iou_of_identical_masks_is_one(width: int) -> None:
    yy, xx = np.mgrid[:21, :21]
    disc = torch.from_numpy(((yy - 10) ** 2 + (xx - 10) ** 2 <= 36).astype(np.float32))[None, None]
    assert boundary_iou(disc, disc, width) == 1.0


def test_boundary_iou_of_disjoint_masks_is_zero() -> None:
    a = _square(0, 0, side=6, size=20)
    b = _square(12, 12, side=6, size=20)
    assert boundary_iou(a, b, 1) == 0.0
    assert boundary_iou(a, b, 2) == 0.0


@pytest.mark.parametrize(("width", "by_hand"), [(1, 18 / 54), (2, 48 / 80)])
def test_boundary_iou_of_a_square_shifted_by_one_pixel(width: int, by_hand: float) -> None:
    # Square rows/cols 5..14 against rows 5..14, cols 6..15. Width 1: two 36-pixel rings sharing
    # the top and bottom rows at cols 6..14 (18 pixels). Width 2: two 64-pixel bands sharing
    # 4 rows x 9 cols + 6 rows x cols {6, 14} = 48 pixels.
    a, b = _square(5, 5), _square(5, 6)
    band_a, band_b = _ref_band(a[0, 0].numpy(), width) > 0, _ref_band(b[0, 0].numpy(), width) > 0
    reference = (band_a & band_b).sum() / (band_a | band_b).sum()
    assert reference == pytest.approx(by_hand)
    assert boundary_iou(a, b, width) == pytest.approx(by_hand)


def test_boundary_iou_thresholds_probabilities_at_half() -> None:
    a, b = _square(5, 5), _square(5, 6)
    assert boundary_iou(a * 0.6, b * 0.8 + 0.1, 1) == pytest.approx(18 / 54)


# --- edge correlation --------------------------------------------------------------------------


def _blurred_pair(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = _gen(seed)
    target = torch.zeros(3, 1, 24, 24)
    target[0, 0, 4:16, 5:19] = 1
    target[1, 0, :10, :9] = 1
    target[2, 0, 8:22, 8:22] = 1
    prob = (0.6 * target + 0.4 * torch.rand(target.shape, generator=gen)).clamp(0, 1)
    return prob, target


@pytest.mark.parametrize("width", [1, 2])
def test_edge_correlation_matches_numpy_corrcoef(width: int) -> None:
    prob, target = _blurred_pair(5)
    expected = np.corrcoef(_ref_edges(prob, width).ravel(), _ref_edges(target, width).ravel())[0, 1]
    assert edge_correlation(prob, target, width) == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("width", [1, 2])
def test_per_image_edge_correlation_matches_numpy_corrcoef_image_by_image(width: int) -> None:
    prob, target = _blurred_pair(10)
    pred_bands, target_bands = _ref_edges(prob, width), _ref_edges(target, width)
    expected = [np.corrcoef(p.ravel(), t.ravel())[0, 1] for p, t in zip(pred_bands, target_bands, strict=True)]
    got = image_edge_correlations(prob, target, width)
    assert got.tolist() == pytest.approx(expected, abs=1e-9)
    # Each one is the dataset-level metric of its image alone.
    assert got.tolist() == pytest.approx(
        [edge_correlation(p[None], t[None], width) for p, t in zip(prob, target, strict=True)]
    )


def test_per_image_edge_correlation_of_empty_and_constant_cases() -> None:
    empty = torch.zeros(1, 1, 12, 12)
    square = _square(2, 2, side=6, size=12)
    assert image_edge_correlations(empty, empty, 2).tolist() == [1.0]  # nothing there, nothing predicted
    assert image_edge_correlations(empty, square, 2).tolist() == [0.0]  # missed the object
    assert image_edge_correlations(square, empty, 2).tolist() == [0.0]  # an object where there is none


def test_edge_correlation_of_a_perfect_prediction_is_one() -> None:
    _, target = _blurred_pair(6)
    assert edge_correlation(target.clone(), target, 2) == pytest.approx(1.0, abs=1e-9)


def test_edge_correlation_of_a_constant_prediction_is_zero_not_nan() -> None:
    _, target = _blurred_pair(7)
    value = edge_correlation(torch.zeros_like(target), target, 2)
    assert not np.isnan(value)
    assert value == 0.0


def test_per_image_iou_matches_smp_image_by_image() -> None:
    gen = _gen(11)
    prob = torch.rand((5, 1, 16, 16), generator=gen)
    target = (torch.rand((5, 1, 16, 16), generator=gen) > 0.5).float()
    prob[4], target[4] = 0.1, 0.0  # both empty: a perfect match
    expected = [_smp_iou(p[None], t[None], threshold=0.5) for p, t in zip(prob[:4], target[:4], strict=True)]
    assert image_ious(prob, target).tolist() == pytest.approx([*expected, 1.0], rel=1e-6)
