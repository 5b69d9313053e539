"""Gradient-scale audit of the loss: each term's gradient with respect to the logits, relative to the
mask term's, over logit scales, foreground fractions, edge widths and both mask losses.

The inputs are what a model sees: disk-shaped nuclei covering a given fraction of the image, and
logits that are smooth noise (a model at initialisation) or the target plus that noise (a model
half-way). Each term at weight 1 must stay within 10x of the mask term either way: far above, it
drives the update on its own whatever its weight says (the earlier rounded term was 2,000-4,500x);
far below, it does nothing.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from edgesearch.trainer.config import LossConfig
from edgesearch.trainer.edges import edge_map, soft_edge_map
from edgesearch.trainer.losses import edge_error, mask_loss_on_logits, rounded_error

SCALES = (0.5, 1.0, 2.0, 4.0)
FOREGROUND = (0.05, 0.2, 0.5)
REGIMES = ("initial", "half-trained")
WIDTHS = (1, 2, 3)
LIMIT = 10.0


def _disks(fraction: float, rng: np.random.Generator, *, n: int = 2, size: int = 96) -> torch.Tensor:
    """(n,1,size,size) 0/1 masks of random disks (radius 4-15 px) until ``fraction`` is covered."""
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, 1, size, size), np.float32)
    for image in out:
        while image.mean() < fraction:
            cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(4, 16)
            image[0][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    return torch.from_numpy(out)


def _logits(y: torch.Tensor, scale: float, regime: str, rng: np.random.Generator) -> torch.Tensor:
    noise = ndimage.gaussian_filter(rng.standard_normal(y.shape), sigma=(0, 0, 4, 4))
    noise = torch.from_numpy(noise / noise.std()).float()
    return scale * noise if regime == "initial" else scale * ((2 * y - 1) + noise)


def _grad_norm(term: object, z: torch.Tensor) -> float:
    z = z.clone().requires_grad_(True)
    term(z).backward()  # type: ignore[operator]
    assert z.grad is not None
    return float(z.grad.norm())


def _cases() -> list[tuple[str, float, float, str]]:
    return list(itertools.product(("bce", "focal"), SCALES, FOREGROUND, REGIMES))


@pytest.mark.parametrize(("kind", "scale", "fraction", "regime"), _cases())
def test_every_term_stays_within_10x_of_the_mask_terms_gradient(
    kind: str, scale: float, fraction: float, regime: str
) -> None:
    rng = np.random.default_rng([int(scale * 10), int(fraction * 100), REGIMES.index(regime)])
    y = _disks(fraction, rng)
    z = _logits(y, scale, regime, rng)
    cfg = LossConfig(kind=kind)  # type: ignore[arg-type]
    mask = _grad_norm(lambda z: mask_loss_on_logits(z, y, cfg), z)
    ratios = {"rounded": _grad_norm(lambda z: rounded_error(z, y), z) / mask}
    for width in WIDTHS:
        target = edge_map(y, width)
        ratios[f"edge w{width}"] = _grad_norm(lambda z, t=target, w=width: edge_error(torch.sigmoid(z), t, w), z) / mask
        soft = soft_edge_map(y, width)
        ratios[f"soft edge w{width}"] = (
            _grad_norm(lambda z, t=soft, w=width: edge_error(torch.sigmoid(z), t, w, "soft"), z) / mask
        )
    outside = {name: round(ratio, 3) for name, ratio in ratios.items() if not 1 / LIMIT <= ratio <= LIMIT}
    assert not outside, f"{kind}, logit scale {scale}, foreground {fraction}, {regime}: {outside}"


def test_the_audit_catches_the_old_rounded_term() -> None:
    """The audit can fail: BCE on a hard mask smoothed by eps = 1e-4 (the earlier form) is far outside."""
    rng = np.random.default_rng(0)
    y = _disks(0.2, rng)
    z = _logits(y, 0.5, "initial", rng)
    eps = 1.0e-4

    def old_rounded(z: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(z)
        q = eps + (1 - 2 * eps) * (p + ((p >= 0.5).float() - p).detach())
        return torch.nn.functional.binary_cross_entropy(q, y)

    ratio = _grad_norm(old_rounded, z) / _grad_norm(lambda z: mask_loss_on_logits(z, y, LossConfig()), z)
    assert ratio > 1000
