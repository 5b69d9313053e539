"""The loss of the method, checked against torch, torchvision and cv2 references."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from edgesearch.trainer.config import LossConfig
from edgesearch.trainer.losses import (
    PROB_EPS,
    bce_on_probs,
    focal_on_logits,
    focal_on_probs,
    mask_loss_on_logits,
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


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.0, 0.5), (1.5, None)])
def test_focal_on_probs_without_smoothing_matches_torchvision_on_logits(gamma: float, alpha: float | None) -> None:
    z, y = _logits(), _target()
    got = focal_on_probs(torch.sigmoid(z), y, gamma=gamma, alpha=alpha, eps=0.0)
    expected = sigmoid_focal_loss(z, y, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="mean")
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


def test_focal_on_probs_smooths_like_torchvision_on_the_smoothed_logit() -> None:
    p, y = torch.sigmoid(_logits()), _target()
    eps = 1e-3
    smoothed_logit = torch.logit(eps + (1 - 2 * eps) * p)
    expected = sigmoid_focal_loss(smoothed_logit, y, alpha=0.25, gamma=2.0, reduction="mean")
    torch.testing.assert_close(focal_on_probs(p, y, gamma=2.0, alpha=0.25, eps=eps), expected, rtol=1e-6, atol=1e-9)


def test_bce_on_probs_without_smoothing_matches_torch() -> None:
    p, y = torch.sigmoid(_logits()), _target()
    torch.testing.assert_close(bce_on_probs(p, y, eps=0.0), F.binary_cross_entropy(p, y))
    torch.testing.assert_close(bce_on_probs(p, y, eps=0.0), F.binary_cross_entropy_with_logits(_logits(), y))


def test_bce_on_probs_of_hard_masks_is_finite() -> None:
    y = _target()
    wrong = 1.0 - y
    loss = bce_on_probs(wrong, y)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(-math.log(PROB_EPS), rel=1e-9)


# --- the rounded term --------------------------------------------------------------------------


def test_straight_through_round_forward_is_the_hard_mask() -> None:
    p = torch.rand(SHAPE, generator=_gen(3))
    p[0, 0, 0, :4] = torch.tensor([0.5, 0.49999997, 0.50000006, 1.0])
    got = straight_through_round(p)
    assert torch.equal(got, (p >= 0.5).float())
    assert set(got.unique().tolist()) <= {0.0, 1.0}


def test_straight_through_round_gradient_is_identity() -> None:
    p = torch.rand(SHAPE, generator=_gen(4)).requires_grad_(True)
    straight_through_round(p).sum().backward()
    assert p.grad is not None
    assert torch.equal(p.grad, torch.ones_like(p))

    q = torch.rand(SHAPE, generator=_gen(5)).requires_grad_(True)
    weights = torch.randn(SHAPE, generator=_gen(6))
    (straight_through_round(q) * weights).sum().backward()
    assert q.grad is not None
    torch.testing.assert_close(q.grad, weights)


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


def test_total_loss_of_a_perfect_rounded_prediction_is_the_smoothing_floor() -> None:
    y = _target(dtype=torch.float32)
    z = torch.where(y > 0, 0.3, -0.7)  # rounds to exactly y, yet far from confident
    loss = total_loss(z, y, LossConfig(kind="bce", round_ratio=1.0, edge_lambda=0.0))
    # q == y, smoothed to eps + (1 - 2 eps) y: 1 - eps where y = 1, eps where y = 0.
    smoothed = PROB_EPS + (1 - 2 * PROB_EPS) * y.double()
    per_pixel = -(y.double() * torch.log(smoothed) + (1 - y.double()) * torch.log(1 - smoothed))
    assert per_pixel.mean().item() == pytest.approx(-math.log(1 - PROB_EPS), rel=1e-9)
    assert loss.item() == pytest.approx(-math.log(1 - PROB_EPS), rel=1e-3)


def test_total_loss_mixes_the_plain_and_rounded_terms_by_round_ratio() -> None:
    z, y = _logits(dtype=torch.float32), _target(dtype=torch.float32)
    r = 0.4
    hard = (torch.sigmoid(z) >= 0.5).float()
    rounded = F.binary_cross_entropy(PROB_EPS + (1 - 2 * PROB_EPS) * hard, y)
    expected = (1 - r) * F.binary_cross_entropy_with_logits(z, y) + r * rounded
    got = total_loss(z, y, LossConfig(kind="bce", round_ratio=r, edge_lambda=0.0))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# --- the edge term and the total ---------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.15, 0.5, 1.0])
@pytest.mark.parametrize("width", [1, 2])
def test_total_loss_bce_mixes_mask_and_edge_terms(lam: float, width: int) -> None:
    z = torch.randn((2, 1, 24, 24), generator=_gen(9)) * 3
    y = torch.zeros((2, 1, 24, 24))
    y[0, 0, 4:15, 6:20] = 1
    y[1, 0, :10, :8] = 1  # touches the border
    p_edges = _ref_edge_map(torch.sigmoid(z), width)
    y_edges = _ref_edge_map(y, width)
    edge_term = F.binary_cross_entropy(PROB_EPS + (1 - 2 * PROB_EPS) * p_edges, y_edges)
    expected = (1 - lam) * F.binary_cross_entropy_with_logits(z, y) + lam * edge_term
    got = total_loss(z, y, LossConfig(kind="bce", round_ratio=0.0, edge_lambda=lam, edge_width=width))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_total_loss_focal_mixes_mask_and_edge_terms() -> None:
    lam, width, gamma, alpha = 0.3, 2, 2.0, 0.25
    z = torch.randn((2, 1, 24, 24), generator=_gen(10)) * 3
    y = torch.zeros((2, 1, 24, 24))
    y[0, 0, 3:17, 5:21] = 1
    y[1, 0, 12:, 12:] = 1
    p_edges = _ref_edge_map(torch.sigmoid(z), width).double()
    y_edges = _ref_edge_map(y, width).double()
    smoothed_logit = torch.logit(PROB_EPS + (1 - 2 * PROB_EPS) * p_edges)
    edge_term = sigmoid_focal_loss(smoothed_logit, y_edges, alpha=alpha, gamma=gamma, reduction="mean")
    mask_term = sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma, reduction="mean")
    expected = (1 - lam) * mask_term.double() + lam * edge_term
    cfg = LossConfig(
        kind="focal", focal_gamma=gamma, focal_alpha=alpha, round_ratio=0.0, edge_lambda=lam, edge_width=width
    )
    got = total_loss(z, y, cfg)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_total_loss_accepts_precomputed_target_edges() -> None:
    z, y = _logits(dtype=torch.float32), _target(dtype=torch.float32)
    cfg = LossConfig(kind="bce", round_ratio=0.5, edge_lambda=0.3, edge_width=2)
    torch.testing.assert_close(total_loss(z, y, cfg, target_edges=_ref_edge_map(y, 2)), total_loss(z, y, cfg))


def test_total_loss_without_round_or_edges_is_plain_bce() -> None:
    z, y = _logits(dtype=torch.float32), _target(dtype=torch.float32)
    got = total_loss(z, y, LossConfig(kind="bce", round_ratio=0.0, edge_lambda=0.0))
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(z, y))
