"""edge_map (Boundary IoU's inner band) and soft_edge_map, checked on hand-drawn masks and against cv2 and scipy."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import cv2
import numpy as np
import pytest
import torch

from edgesearch.trainer.edges import dilate, edge_map, erode, loss_edge_map, soft_edge_map

WIDTHS = [1, 2, 3]


def _t(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask.astype(np.float32))[None, None]


def _square() -> np.ndarray:
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1  # rows/cols 5..14
    return mask


def _disc() -> np.ndarray:
    yy, xx = np.mgrid[:21, :21]
    return ((yy - 10) ** 2 + (xx - 10) ** 2 <= 36).astype(np.uint8)


def _left_columns() -> np.ndarray:
    mask = np.zeros((12, 12), np.uint8)
    mask[:, :5] = 1
    return mask


def _cheng_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Boundary IoU's reference band (Cheng et al.): mask minus its erosion with a zero border."""
    h, w = mask.shape
    padded = cv2.copyMakeBorder(mask, width, width, width, width, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((2 * width + 1, 2 * width + 1), np.uint8))
    return mask - eroded[width : h + width, width : w + width]


@pytest.mark.parametrize("width", WIDTHS)
def test_edge_map_of_square_is_the_inner_band(width: int) -> None:
    expected = _square().copy()
    expected[5 + width : 15 - width, 5 + width : 15 - width] = 0  # the inner square rows/cols 5+w..14-w
    assert expected.sum() == 100 - (10 - 2 * width) ** 2
    got = edge_map(_t(_square()), width)
    assert torch.equal(got, _t(expected))


@pytest.mark.parametrize("width", WIDTHS)
def test_edge_map_treats_outside_the_image_as_background(width: int) -> None:
    mask = _left_columns()
    h = mask.shape[0]
    expected = np.zeros_like(mask)
    expected[:, 0:width] = 1  # along the left image border
    expected[:, max(0, 5 - width) : 5] = 1  # along the mask's own right edge
    expected[0:width, :5] = 1  # top image border, within the 5 columns
    expected[h - width : h, :5] = 1  # bottom image border
    got = edge_map(_t(mask), width)
    assert torch.equal(got, _t(expected))


def test_edge_map_of_thin_mask_is_the_whole_mask() -> None:
    mask = _left_columns()
    assert torch.equal(edge_map(_t(mask), 3), _t(mask))


@pytest.mark.parametrize("width", WIDTHS)
def test_edge_map_of_disc_matches_boundary_iou_reference(width: int) -> None:
    disc = _disc()
    expected = _cheng_band(disc, width)
    assert expected.sum() > 0
    assert torch.equal(edge_map(_t(disc), width), _t(expected))


@pytest.mark.parametrize("width", WIDTHS)
def test_edge_map_matches_boundary_iou_reference_on_hand_masks(width: int) -> None:
    for mask in (_square(), _left_columns()):
        assert torch.equal(edge_map(_t(mask), width), _t(_cheng_band(mask, width)))


def test_edge_map_of_empty_and_full_masks() -> None:
    empty = torch.zeros(1, 1, 8, 8)
    assert torch.equal(edge_map(empty, 2), empty)
    full = torch.ones(1, 1, 8, 8)
    expected = torch.ones(1, 1, 8, 8)
    expected[..., 2:6, 2:6] = 0  # a full image still has its border band
    assert torch.equal(edge_map(full, 2), expected)


def test_erode_matches_cv2_with_zero_border() -> None:
    mask = _disc()
    padded = cv2.copyMakeBorder(mask, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=0)
    expected = cv2.erode(padded, np.ones((5, 5), np.uint8))[2:-2, 2:-2]
    assert torch.equal(erode(_t(mask), 2), _t(expected))


def test_edge_map_works_per_image_on_a_batch() -> None:
    masks = [_square(), _disc()[:20, :20], np.pad(_left_columns(), 4)]
    batch = torch.cat([_t(m) for m in masks])
    assert batch.shape == (3, 1, 20, 20)
    got = edge_map(batch, 2)
    assert got.shape == batch.shape
    for i, mask in enumerate(masks):
        assert torch.equal(got[i : i + 1], _t(_cheng_band(mask, 2)))


def test_edge_map_of_probabilities_is_bounded_and_differentiable() -> None:
    gen = torch.Generator().manual_seed(0)
    prob = torch.rand((4, 1, 16, 16), generator=gen).requires_grad_(True)
    out = edge_map(prob, 2)
    assert out.shape == prob.shape
    assert out.min() >= 0.0
    assert out.max() <= 1.0
    (out * torch.randn(out.shape, generator=gen)).sum().backward()
    assert prob.grad is not None
    assert torch.isfinite(prob.grad).all()
    assert prob.grad.abs().sum() > 0


def test_edge_map_of_probabilities_matches_cv2_grey_erosion() -> None:
    prob = torch.rand((2, 1, 16, 16), generator=torch.Generator().manual_seed(1))
    got = edge_map(prob, 1)
    for i in range(2):
        image = prob[i, 0].numpy()
        padded = cv2.copyMakeBorder(image, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        expected = image - cv2.erode(padded, np.ones((3, 3), np.uint8))[1:-1, 1:-1]
        assert torch.equal(got[i, 0], torch.from_numpy(expected))


@pytest.mark.parametrize("width", [0, -1])
def test_edge_map_rejects_width_below_one(width: int) -> None:
    with pytest.raises(ValueError, match="width"):
        edge_map(_t(_square()), width)


def test_edge_map_rejects_a_3d_tensor() -> None:
    with pytest.raises(ValueError, match="N,1,H,W"):
        edge_map(_t(_square())[0], 2)


# The soft profile, checked against scipy's chessboard distance transform: the tent
# ``max(0, 1 - s/w)`` with ``s = d - 1`` inside the mask and ``s = d`` outside it.


def _tent_reference(mask: np.ndarray, width: int) -> np.ndarray:
    from scipy.ndimage import distance_transform_cdt

    ring = width + 1  # outside the image is background: pad with it, so distances see it
    padded = np.pad(mask.astype(bool), ring, constant_values=False)
    inside = distance_transform_cdt(padded, metric="chessboard")  # to the nearest background pixel
    outside = distance_transform_cdt(~padded, metric="chessboard")  # to the nearest mask pixel
    if not padded.any():
        outside = np.full(padded.shape, np.iinfo(np.int32).max)  # no mask: no boundary anywhere
    signed = np.where(padded, inside - 1, outside).astype(np.float64)
    tent = np.clip(1.0 - signed / width, 0.0, 1.0)
    return tent[ring:-ring, ring:-ring]


def _blobs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((40, 40), np.uint8)
    for _ in range(4):
        cy, cx, r = rng.integers(0, 40), rng.integers(0, 40), rng.integers(3, 10)
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)  # may touch the border
    return mask


SOFT_MASKS = {
    "square": _square(),
    "disc": _disc(),
    "left-columns": _left_columns(),
    "blobs-0": _blobs(0),
    "blobs-1": _blobs(1),
    "empty": np.zeros((9, 9), np.uint8),
    "full": np.ones((9, 9), np.uint8),
}


@pytest.mark.parametrize("name", sorted(SOFT_MASKS))
@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_soft_edge_map_is_the_tent_over_scipys_chessboard_distance(name: str, width: int) -> None:
    mask = SOFT_MASKS[name]
    got = soft_edge_map(_t(mask), width)[0, 0].double().numpy()
    np.testing.assert_allclose(got, _tent_reference(mask, width), atol=1e-6)


@pytest.mark.parametrize("name", sorted(SOFT_MASKS))
def test_soft_edge_map_of_width_one_is_the_hard_band(name: str) -> None:
    m = _t(SOFT_MASKS[name])
    torch.testing.assert_close(soft_edge_map(m, 1), edge_map(m, 1), rtol=0, atol=0)


@pytest.mark.parametrize("width", WIDTHS)
def test_dilate_matches_cv2_with_zero_border(width: int) -> None:
    probs = np.random.default_rng(width).random((17, 23)).astype(np.float32)
    expected = cv2.dilate(
        probs, np.ones((2 * width + 1, 2 * width + 1), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
    )
    torch.testing.assert_close(dilate(_t(probs), width)[0, 0], torch.from_numpy(expected))


def _shifted_edge_errors(width: int, shifts: range, edges: Callable[[torch.Tensor, int], torch.Tensor]) -> list[float]:
    """Edge-map error of one vertical boundary moved ``s`` pixels, on a middle row away from the
    image's own borders (which have bands of their own)."""

    def half_plane(start: int) -> torch.Tensor:
        mask = np.zeros((48, 48), np.float32)
        mask[:, start:] = 1.0
        return _t(mask)

    target_edges = edges(half_plane(16), width)
    return [(edges(half_plane(16 + s), width) - target_edges)[0, 0, 24, :36].abs().sum().item() for s in shifts]


@pytest.mark.parametrize("width", [2, 3, 4])
def test_soft_edge_error_keeps_growing_with_a_boundary_shift_where_the_hard_one_saturates(width: int) -> None:
    # Why the profile exists: the hard bands of two vertical edges stop overlapping once they are
    # ``width`` apart, so the hard error says nothing about shifts beyond that; the tents (``2·width - 1``
    # pixels wide) overlap until they are that far apart, so the soft error still grows there.
    shifts = range(0, 2 * width)
    hard = _shifted_edge_errors(width, shifts, edge_map)
    soft = _shifted_edge_errors(width, shifts, soft_edge_map)
    assert all(b > a for a, b in itertools.pairwise(soft))
    assert hard[width] == pytest.approx(hard[-1])
    assert all(b > a for a, b in itertools.pairwise(hard[: width + 1]))


def test_soft_edge_map_of_probabilities_is_bounded_and_differentiable() -> None:
    z = torch.randn(2, 1, 16, 16, requires_grad=True)
    soft = soft_edge_map(torch.sigmoid(z), 3)
    assert soft.min().item() >= 0.0 and soft.max().item() <= 1.0
    soft.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum().item() > 0


@pytest.mark.parametrize("profile", ["hard", "soft"])
def test_loss_edge_map_picks_the_profile(profile: str) -> None:
    m = _t(_disc())
    expected = edge_map(m, 2) if profile == "hard" else soft_edge_map(m, 2)
    torch.testing.assert_close(loss_edge_map(m, 2, profile), expected)  # type: ignore[arg-type]


def test_loss_edge_map_rejects_an_unknown_profile() -> None:
    with pytest.raises(ValueError, match="allowed: hard, soft"):
        loss_edge_map(_t(_disc()), 2, "gaussian")  # type: ignore[arg-type]
