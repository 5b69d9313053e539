"""The loss of the method, checked against torch, torchvision and cv2 references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from edgesearch.trainer.config import LossConfig
from edgesearch.trainer.losses import (
    edge_error,
    focal_on_logits,
    mask_loss_on_logits,
    rounded_error,
    straight_through_round,
    total_loss,
)

SHAPE = (2, 1, 16, 16)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits(seed: int = 0, scale: float = 2.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return (torch.randn(SHAPE, generator=_gen(seed)) * scale).to(dtype)


def _target(seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return (torch.rand(SHAPE, generator=_gen(seed)) > 0.5).to(dtype)


def _ref_edge_map(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Inner band ``m - erode(m)`` per image with cv2, outside the image counted as background."""
    out = np.empty(mask.shape, dtype=np.float32)
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    for i, image in enumerate(mask.detach().cpu().numpy().astype(np.float32)):
        m = image[0]
        padded = cv2.copyMakeBorder(m, width, width, width, width, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, kernel)[width:-width, width:-width]
        out[i, 0] = m - eroded
    return torch.from_numpy(out)


def _ref_soft_edge_map(mask: torch.Tensor, width: int) -> torch.Tensor:
    """``mean_k [dilate(m, k-1) - erode(m, k)]`` per image with cv2's one-shot square windows."""
    out = np.zeros(mask.shape, dtype=np.float32)
    for i, image in enumerate(mask.detach().cpu().numpy().astype(np.float32)):
        m = image[0]
        for k in range(1, width + 1):
            pad = cv2.copyMakeBorder(m, k, k, k, k, cv2.BORDER_CONSTANT, value=0)
            eroded = cv2.erode(pad, np.ones((2 * k + 1, 2 * k + 1), np.uint8))[k:-k, k:-k]
            dilated = (
                m
                if k == 1
                else cv2.dilate(
                    m, np.ones((2 * k - 1, 2 * k - 1), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
                )
            )
            out[i, 0] += (dilated - eroded) / width
    return torch.from_numpy(out)


# --- mask losses against torch / torchvision ---------------------------------------------------


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.0, 0.5), (1.5, 0.75), (2.0, 0.0), (2.0, 1.0)])
def test_focal_on_logits_matches_torchvision(gamma: float, alpha: float) -> None:
    z, y = _logits(), _target()
    expected = sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma, reduction="mean")
    torch.testing.assert_close(focal_on_logits(z, y, gamma=gamma, alpha=alpha), expected)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_on_logits_without_alpha_matches_torchvision_alpha_minus_one(gamma: float) -> None:
    z, y = _logits(), _target()
    expected = sigmoid_focal_loss(z, y, alpha=-1, gamma=gamma, reduction="mean")
    torch.testing.assert_close(focal_on_logits(z, y, gamma=gamma, alpha=None), expected)


def test_focal_with_gamma_zero_and_no_alpha_is_bce() -> None:
    z, y = _logits(), _target()
    torch.testing.assert_close(focal_on_logits(z, y, gamma=0.0, alpha=None), F.binary_cross_entropy_with_logits(z, y))


def test_mask_loss_on_logits_bce_matches_torch() -> None:
    z, y = _logits(), _target()
    got = mask_loss_on_logits(z, y, LossConfig(kind="bce"))
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(z, y))


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, None), (1.5, 0.25)])
def test_mask_loss_on_logits_focal_matches_torchvision(gamma: float, alpha: float | None) -> None:
    z, y = _logits(), _target()
    got = mask_loss_on_logits(z, y, LossConfig(kind="focal", focal_gamma=gamma, focal_alpha=alpha))
    expected = sigmoid_focal_loss(z, y, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="mean")
    torch.testing.assert_close(got, expected)


# --- the rounded term: the 0/1 output's error rate, straight-through on the logits ----------------


def test_straight_through_round_forward_is_the_hard_mask_of_sigmoid() -> None:
    z = torch.randn(SHAPE, generator=_gen(3))
    z[0, 0, 0, :4] = torch.tensor([0.0, -1e-7, 1e-7, 5.0])
    got = straight_through_round(z)
    # In float64: float32's sigmoid(-1e-7) rounds to 0.5 exactly, a 1 the model's sign does not give.
    assert torch.equal(got, (torch.sigmoid(z.double()) >= 0.5).float())
    assert set(got.unique().tolist()) <= {0.0, 1.0}


def test_straight_through_round_gradient_is_identity_on_the_logits() -> None:
    z = torch.randn(SHAPE, generator=_gen(5)).requires_grad_(True)
    weights = torch.randn(SHAPE, generator=_gen(6))
    (straight_through_round(z) * weights).sum().backward()
    assert z.grad is not None
    torch.testing.assert_close(z.grad, weights)


def test_rounded_error_is_the_fraction_of_wrong_pixels_and_pushes_only_them() -> None:
    z, y = _logits(), _target()
    wrong = (z.numpy() >= 0) != (y.numpy() > 0)  # numpy's count of the pixels the 0/1 output gets wrong
    z.requires_grad_(True)
    loss = rounded_error(z, y)
    assert loss.item() == pytest.approx(wrong.mean(), abs=1e-12)
    loss.backward()
    assert z.grad is not None
    # d/dz mean|q - y| = (q - y)/N: +1/N where it says 1 for a 0, -1/N where it says 0 for a 1, 0 where right.
    expected = np.where(wrong, np.where(y.numpy() > 0, -1.0, 1.0), 0.0) / y.numel()
    np.testing.assert_allclose(z.grad.numpy(), expected, atol=1e-15)


def test_a_rounded_prediction_that_is_right_costs_nothing_and_pushes_nothing() -> None:
    y = _target(dtype=torch.float32)
    z = torch.where(y > 0, 0.3, -0.7).requires_grad_(True)  # rounds to exactly y, yet far from confident
    loss = total_loss(z, y, LossConfig(kind="bce", round_ratio=1.0, edge_lambda=0.0))
    assert loss.item() == 0.0
    loss.backward()
    assert z.grad is not None and torch.count_nonzero(z.grad) == 0


def _extreme_logits() -> dict[str, torch.Tensor]:
    return {
        "very_negative": torch.full(SHAPE, -50.0),
        "very_positive": torch.full(SHAPE, 50.0),
        "zero": torch.zeros(SHAPE),
        "confident": torch.where(torch.rand(SHAPE, generator=_gen(7)) > 0.5, 20.0, -20.0),
    }


def _targets() -> dict[str, torch.Tensor]:
    return {
        "all_0": torch.zeros(SHAPE),
        "all_1": torch.ones(SHAPE),
        "random": (torch.rand(SHAPE, generator=_gen(8)) > 0.5).float(),
    }


@pytest.mark.parametrize("kind", ["bce", "focal"])
@pytest.mark.parametrize("ratio", [0.5, 1.0])
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_total_loss_is_finite_with_finite_gradients_for_extreme_inputs(kind: str, ratio: float, lam: float) -> None:
    cfg = LossConfig(kind=kind, round_ratio=ratio, edge_lambda=lam)
    for z_name, z0 in _extreme_logits().items():
        for y_name, y in _targets().items():
            z = z0.clone().requires_grad_(True)
            loss = total_loss(z, y, cfg)
            assert torch.isfinite(loss), (z_name, y_name)
            loss.backward()
            assert z.grad is not None
            assert torch.isfinite(z.grad).all(), (z_name, y_name)


def test_total_loss_rounded_term_sends_gradient_to_the_logits() -> None:
    z = _logits(dtype=torch.float32).requires_grad_(True)
    y = _target(dtype=torch.float32)
    total_loss(z, y, LossConfig(kind="bce", round_ratio=1.0, edge_lambda=0.0)).backward()
    assert z.grad is not None
    assert torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["bce", "focal"])
def test_total_loss_mixes_the_mask_term_and_the_error_rate_by_round_ratio(kind: str) -> None:
    z, y = _logits(dtype=torch.float32), _target(dtype=torch.float32)
    r = 0.4
    error_rate = float(((z.numpy() >= 0) != (y.numpy() > 0)).mean())
    mask = F.binary_cross_entropy_with_logits(z, y)
    if kind == "focal":
        mask = sigmoid_focal_loss(z, y, alpha=-1, gamma=2.0, reduction="mean")
    expected = (1 - r) * mask + r * error_rate
    got = total_loss(z, y, LossConfig(kind=kind, round_ratio=r, edge_lambda=0.0))  # type: ignore[arg-type]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# --- the edge term and the total ---------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.15, 0.5, 1.0])
@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("profile", ["hard", "soft"])
def test_total_loss_bce_mixes_mask_and_edge_terms(lam: float, width: int, profile: str) -> None:
    reference = _ref_edge_map if profile == "hard" else _ref_soft_edge_map
    z = torch.randn((2, 1, 24, 24), generator=_gen(9)) * 3
    y = torch.zeros((2, 1, 24, 24))
    y[0, 0, 4:15, 6:20] = 1
    y[1, 0, :10, :8] = 1  # touches the border
    edge_term = (reference(torch.sigmoid(z), width) - reference(y, width)).abs().mean()
    expected = (1 - lam) * F.binary_cross_entropy_with_logits(z, y) + lam * edge_term
    cfg = LossConfig(kind="bce", round_ratio=0.0, edge_lambda=lam, edge_width=width, edge_profile=profile)  # type: ignore[arg-type]
    torch.testing.assert_close(total_loss(z, y, cfg), expected, rtol=1e-5, atol=1e-6)


def test_the_soft_profile_changes_the_loss_only_through_the_edge_term() -> None:
    z = torch.randn((2, 1, 24, 24), generator=_gen(12)) * 3
    y = torch.zeros((2, 1, 24, 24))
    y[:, 0, 5:18, 3:14] = 1
    hard, soft = (LossConfig(edge_width=3, edge_profile=p) for p in ("hard", "soft"))  # type: ignore[arg-type]
    assert total_loss(z, y, hard).item() != pytest.approx(total_loss(z, y, soft).item())
    no_edge = {"edge_lambda": 0.0, "edge_width": 3}
    torch.testing.assert_close(
        total_loss(z, y, LossConfig(**no_edge, edge_profile="hard")),  # type: ignore[arg-type]
        total_loss(z, y, LossConfig(**no_edge, edge_profile="soft")),  # type: ignore[arg-type]
    )


def test_total_loss_focal_mixes_mask_and_edge_terms() -> None:
    lam, width, gamma, alpha = 0.3, 2, 2.0, 0.25
    z = torch.randn((2, 1, 24, 24), generator=_gen(10)) * 3
    y = torch.zeros((2, 1, 24, 24))
    y[0, 0, 3:17, 5:21] = 1
    y[1, 0, 12:, 12:] = 1
    edge_term = (_ref_edge_map(torch.sigmoid(z), width) - _ref_edge_map(y, width)).abs().mean().double()
    mask_term = sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma, reduction="mean")
    expected = (1 - lam) * mask_term.double() + lam * edge_term
    cfg = LossConfig(
        kind="focal", focal_gamma=gamma, focal_alpha=alpha, round_ratio=0.0, edge_lambda=lam, edge_width=width
    )
    got = total_loss(z, y, cfg)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_edge_error_of_masks_is_the_fraction_of_pixels_in_one_band_only() -> None:
    a = torch.zeros((1, 1, 20, 20))
    a[0, 0, 4:12, 4:12] = 1
    b = torch.zeros((1, 1, 20, 20))
    b[0, 0, 6:14, 4:12] = 1  # the same square, two pixels lower
    band_a, band_b = _ref_edge_map(a, 2).numpy() > 0, _ref_edge_map(b, 2).numpy() > 0
    assert edge_error(a, _ref_edge_map(b, 2), 2).item() == pytest.approx((band_a ^ band_b).mean())


def test_total_loss_accepts_precomputed_target_edges() -> None:
    z, y = _logits(dtype=torch.float32), _target(dtype=torch.float32)
    cfg = LossConfig(kind="bce", round_ratio=0.5, edge_lambda=0.3, edge_width=2)
    torch.testing.assert_close(total_loss(z, y, cfg, target_edges=_ref_edge_map(y, 2)), total_loss(z, y, cfg))


def test_total_loss_without_round_or_edges_is_plain_bce() -> None:
    z, y = _logits(dtype=torch.float32), _target(dtype=torch.float32)
    got = total_loss(z, y, LossConfig(kind="bce", round_ratio=0.0, edge_lambda=0.0))
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(z, y))
