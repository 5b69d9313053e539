"""The loss of the method (ARCHITECTURE.md, "Where the method lives"), as small pure functions.

Notation: ``z`` logits, ``p = sigmoid(z)``, ``y`` the 0/1 target, all (N,1,H,W); means are over
all ``N·H·W`` pixels.

- mask term ``M``: BCE or focal on the logits; its gradient is ``(p - y)/N`` for BCE;
- rounded term ``R = mean |q - y|`` with ``q = round(p)``: the fraction of pixels the 0/1 mask
  the model really outputs gets wrong. Straight-through on the logits,
  ``q = round(p) + (z - z.detach())``, so its gradient is ``(q - y)/N``: the gradient BCE gives,
  with the model's 0/1 output in place of ``p``. A wrong pixel is pushed across the threshold
  with unit strength (what BCE gives a pixel it is sure and wrong about), a right one not at all;
  ``M = (1 - r)·M + r·R``;
- edge term ``E = mean |e(p, w) - e(y, w)|``: the mismatch of the edge maps, where ``e`` is the hard
  band ``edge_map`` or, with ``edge_profile: soft``, the two-sided tent ``soft_edge_map``
  (:mod:`~edgesearch.trainer.edges`);
- total: ``(1 - lambda)·M + lambda·E``.

On a training patch (:mod:`~edgesearch.trainer.patches`) two weight maps come with the target:
``valid`` (0 on padding) and ``edge_valid`` (0 where the patch's border would fake an edge). The
means are then weighted means: ``M`` and ``R`` over the valid pixels, ``E`` over the pixels valid
for both, with the prediction and the target set to background on the padding first (the outside
of an image is background to the edge maps), so nothing in the padding changes the loss.

Why these forms (``benchmarks/method.py``, ``tests/trainer/test_gradient_audit.py``): each term's
gradient with respect to the logits stays within 10x of the mask term's, whatever the logit scale
and foreground fraction, so ``round_ratio`` and ``lambda`` are shares of the update, not whatever
a constant makes them. The earlier forms applied BCE to hard 0/1 masks smoothed by ``eps = 1e-4``;
BCE's slope there is ``1/eps``, so the rounded term's gradient was 2,000-4,500x the mask term's
and drove the whole update even at ``round_ratio`` 0.1 (and cost 5-7 IoU points on real data).
BCE on the edge maps had the same fault more mildly: at initialisation the predicted bands are
faint, BCE's slope ``1/e`` is large there, and the erosion's min-pool sends the gradient of a
whole window to one pixel, 10-60x the mask term's. Both auxiliary terms are now error rates with
bounded slopes; on a 0/1 output BCE and focal are themselves multiples of the error rate, so the
two terms are the same for ``kind: bce`` and ``kind: focal``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgesearch.trainer.config import EdgeProfile, LossConfig
from edgesearch.trainer.edges import loss_edge_map

__all__ = [
    "edge_error",
    "focal_on_logits",
    "mask_loss_on_logits",
    "rounded_error",
    "straight_through_round",
    "total_loss",
]


def _focal_weight(prob: torch.Tensor, y: torch.Tensor, gamma: float, alpha: float | None) -> torch.Tensor:
    p_t = prob * y + (1.0 - prob) * (1.0 - y)
    weight = (1.0 - p_t) ** gamma
    if alpha is not None:
        weight = weight * (alpha * y + (1.0 - alpha) * (1.0 - y))
    return weight


def _mean(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``mean(x)``, or ``sum(weight * x) / sum(weight)`` (0 when the weights are all 0)."""
    if weight is None:
        return x.mean()
    return (x * weight).sum() / weight.sum().clamp(min=1.0)


def focal_on_logits(
    z: torch.Tensor, y: torch.Tensor, *, gamma: float, alpha: float | None, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean sigmoid focal loss (Lin et al. 2017); ``alpha=None`` means no class weighting."""
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    return _mean(ce * _focal_weight(torch.sigmoid(z), y, gamma, alpha), weight)


def mask_loss_on_logits(
    z: torch.Tensor, y: torch.Tensor, cfg: LossConfig, weight: torch.Tensor | None = None
) -> torch.Tensor:
    if cfg.kind == "bce":
        if weight is None:
            return F.binary_cross_entropy_with_logits(z, y)
        return _mean(F.binary_cross_entropy_with_logits(z, y, reduction="none"), weight)
    return focal_on_logits(z, y, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha, weight=weight)


def straight_through_round(z: torch.Tensor) -> torch.Tensor:
    """The 0/1 mask ``sigmoid(z) >= 0.5`` (that is ``z >= 0``) forward, the identity on ``z`` backward."""
    hard = (z >= 0).to(z.dtype)
    return hard + (z - z.detach())


def rounded_error(z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``mean |round(sigmoid(z)) - y|``, the 0/1 output's pixel error rate; gradient ``(round(p) - y)/N``.

    ``|q - y|`` has slope ``sign(q - y)``, which for 0/1 values is ``q - y`` (0 where they agree).
    """
    return _mean((straight_through_round(z) - y).abs(), weight)


def edge_error(
    p: torch.Tensor,
    target_edges: torch.Tensor,
    width: int,
    profile: EdgeProfile = "hard",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mean |e(p, width) - target_edges|`` with ``e`` the ``profile``'s edge map; for 0/1 masks and
    the hard band, the fraction of pixels in one edge band only."""
    return _mean((loss_edge_map(p, width, profile) - target_edges).abs(), weight)


def total_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    cfg: LossConfig,
    *,
    target_edges: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    edge_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(1 - lambda)·M + lambda·E`` for one batch, computed in float32.

    ``target_edges`` (``loss_edge_map(target, cfg.edge_width, cfg.edge_profile)``) may be passed in when the caller
    already has it; it depends only on the target, so it is computed once per batch.
    ``valid`` and ``edge_valid`` (both (N,1,H,W), or None for all ones) are a patch's weight maps
    (module docstring); with ``valid``, ``target_edges`` must be those of ``target * valid``.
    Terms whose weight is zero are not computed at all.
    """
    z = logits.float()
    y = target.float() if valid is None else target.float() * valid
    r, lam = cfg.round_ratio, cfg.edge_lambda

    mask_term = mask_loss_on_logits(z, y, cfg, valid)
    if r > 0.0:
        mask_term = (1.0 - r) * mask_term + r * rounded_error(z, y, valid)
    if lam == 0.0:
        return mask_term

    if target_edges is None:
        target_edges = loss_edge_map(y, cfg.edge_width, cfg.edge_profile)
    p = torch.sigmoid(z) if valid is None else torch.sigmoid(z) * valid
    weight = valid if edge_valid is None else (edge_valid if valid is None else edge_valid * valid)
    edge_term = edge_error(p, target_edges.float(), cfg.edge_width, cfg.edge_profile, weight)
    return (1.0 - lam) * mask_term + lam * edge_term
