"""The loss of the method (ARCHITECTURE.md, "Where the method lives"), as small pure functions.

Notation: ``z`` logits, ``p = sigmoid(z)``, ``y`` the 0/1 target, all (N,1,H,W).

- mask loss ``L``: BCE or focal, on logits where possible;
- rounded term: ``q = p + (round(p) - p).detach()`` (straight-through), so the forward pass
  sees the 0/1 mask the model will really output while gradients still reach ``z``;
  ``M = (1 - r)·L(p, y) + r·L(q, y)``;
- edge term: ``E = L(edge_map(p, w), edge_map(y, w))``;
- total: ``(1 - lambda)·M + lambda·E``.

Losses on probabilities (the rounded mask and the edge maps) smooth their input to
``eps + (1 - 2·eps)·q`` with ``eps = PROB_EPS``: hard 0/1 values would make BCE infinite, and a
clamp would zero the gradient exactly where the rounded term needs it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgesearch.trainer.config import LossConfig
from edgesearch.trainer.edges import edge_map

__all__ = [
    "PROB_EPS",
    "bce_on_probs",
    "focal_on_logits",
    "focal_on_probs",
    "mask_loss_on_logits",
    "mask_loss_on_probs",
    "straight_through_round",
    "total_loss",
]

PROB_EPS = 1.0e-4
"""Smoothing of probability inputs: they are mapped into [PROB_EPS, 1 - PROB_EPS]."""


def _smooth(q: torch.Tensor, eps: float) -> torch.Tensor:
    return eps + (1.0 - 2.0 * eps) * q


def _bce_elementwise(qs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # F.binary_cross_entropy raises on a NaN input ("should be between 0 and 1"); written out,
    # a diverged model's NaN flows into the loss, where the trainer reports it as non-finite.
    return -(y * torch.log(qs) + (1.0 - y) * torch.log1p(-qs))


def _focal_weight(prob: torch.Tensor, y: torch.Tensor, gamma: float, alpha: float | None) -> torch.Tensor:
    p_t = prob * y + (1.0 - prob) * (1.0 - y)
    weight = (1.0 - p_t) ** gamma
    if alpha is not None:
        weight = weight * (alpha * y + (1.0 - alpha) * (1.0 - y))
    return weight


def focal_on_logits(z: torch.Tensor, y: torch.Tensor, *, gamma: float, alpha: float | None) -> torch.Tensor:
    """Mean sigmoid focal loss (Lin et al. 2017); ``alpha=None`` means no class weighting."""
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    return (ce * _focal_weight(torch.sigmoid(z), y, gamma, alpha)).mean()


def bce_on_probs(q: torch.Tensor, y: torch.Tensor, *, eps: float = PROB_EPS) -> torch.Tensor:
    """Mean BCE of probabilities, smoothed so that hard 0/1 inputs stay finite."""
    return _bce_elementwise(_smooth(q, eps), y).mean()


def focal_on_probs(
    q: torch.Tensor, y: torch.Tensor, *, gamma: float, alpha: float | None, eps: float = PROB_EPS
) -> torch.Tensor:
    """Mean focal loss of probabilities, smoothed like :func:`bce_on_probs`."""
    qs = _smooth(q, eps)
    ce = _bce_elementwise(qs, y)
    return (ce * _focal_weight(qs, y, gamma, alpha)).mean()


def mask_loss_on_logits(z: torch.Tensor, y: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    if cfg.kind == "bce":
        return F.binary_cross_entropy_with_logits(z, y)
    return focal_on_logits(z, y, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha)


def mask_loss_on_probs(q: torch.Tensor, y: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    if cfg.kind == "bce":
        return bce_on_probs(q, y)
    return focal_on_probs(q, y, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha)


def straight_through_round(p: torch.Tensor) -> torch.Tensor:
    """The 0/1 mask ``p >= 0.5`` in the forward pass, the identity in the backward pass."""
    hard = (p >= 0.5).to(p.dtype)
    return p + (hard - p).detach()


def total_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    cfg: LossConfig,
    *,
    target_edges: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(1 - lambda)·M + lambda·E`` for one batch, computed in float32.

    ``target_edges`` (``edge_map(target, cfg.edge_width)``) may be passed in when the caller
    already has it; it depends only on the target, so it is computed once per batch.
    Terms whose weight is zero are not computed at all.
    """
    z = logits.float()
    y = target.float()
    r, lam = cfg.round_ratio, cfg.edge_lambda
    p = torch.sigmoid(z) if (r > 0.0 or lam > 0.0) else None

    mask_term = mask_loss_on_logits(z, y, cfg)
    if r > 0.0 and p is not None:
        rounded = mask_loss_on_probs(straight_through_round(p), y, cfg)
        mask_term = (1.0 - r) * mask_term + r * rounded
    if lam == 0.0 or p is None:
        return mask_term

    if target_edges is None:
        target_edges = edge_map(y, cfg.edge_width)
    edge_term = mask_loss_on_probs(edge_map(p, cfg.edge_width), target_edges.float(), cfg)
    return (1.0 - lam) * mask_term + lam * edge_term
