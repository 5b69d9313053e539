"""Edge maps of masks: the hard band ``m - erode(m, w)`` and its soft, two-sided profile.

Erosion (dilation) is a min-pool (max-pool) with a (2w+1)x(2w+1) square window, stride 1, with
everything outside the image treated as background. For a binary mask the hard edge map is the
inner band of width ``w`` pixels: the boundary region of Boundary IoU (Cheng et al., CVPR 2021)
with ``d = w``. On probabilities both maps are differentiable, which is what lets the edge term
train the model.

The soft profile (``loss.edge_profile: soft``) is the mean of ``w`` nested bands::

    soft(m, w) = (1/w) · sum_{k=1..w} [dilate(m, k-1) - erode(m, k)]

For a 0/1 mask, let ``d(x)`` be the chessboard distance from pixel ``x`` to the nearest pixel of
the other class (outside the image counts as background) and ``s(x) = d - 1`` inside the mask,
``s(x) = d`` outside it: ``s`` is the distance to the mask's innermost boundary row. Then
``soft(m, w)(x) = max(0, 1 - s(x)/w)``: a tent over the signed distance, 1 on the inner boundary
row, falling linearly to 0 over ``w`` pixels on each side. Its mass per unit of boundary is about
``w``, as the hard band's is, but spread continuously across the boundary, so the edge term
changes gradually as a predicted boundary moves. At ``w = 1`` it *is* the hard band of width 1
(``dilate(m, 0) = m``): shrinking the width collapses the tent onto the hard band. Boundary IoU
stays on the hard band for every profile, so studies can compare profiles by it.
"""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F

from edgesearch.trainer.config import EdgeProfile

__all__ = ["EDGE_PROFILES", "dilate", "edge_map", "erode", "loss_edge_map", "soft_edge_map"]

EDGE_PROFILES: tuple[str, ...] = get_args(EdgeProfile)


def _check_width(width: int) -> None:
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")


def _check_shape(mask: torch.Tensor) -> None:
    if mask.dim() != 4:
        raise ValueError(f"mask must be (N,1,H,W), got shape {tuple(mask.shape)}")


def erode(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Grey-scale erosion of (N,1,H,W) ``mask`` by a square of side ``2*width+1``.

    Zero padding makes the outside of the image background, so a mask touching the border
    has an edge along the border too (as in Boundary IoU's reference implementation).
    """
    _check_width(width)
    padded = F.pad(mask, (width, width, width, width), mode="constant", value=0.0)
    return -F.max_pool2d(-padded, kernel_size=2 * width + 1, stride=1)


def dilate(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Grey-scale dilation of a (N,1,H,W) ``mask`` with values >= 0 by a square of side ``2*width+1``.

    Zero padding: the outside of the image is background, so it adds nothing to a dilation.
    """
    _check_width(width)
    padded = F.pad(mask, (width, width, width, width), mode="constant", value=0.0)
    return F.max_pool2d(padded, kernel_size=2 * width + 1, stride=1)


def edge_map(mask: torch.Tensor, width: int) -> torch.Tensor:
    """The inner edge band of width ``width`` of a (N,1,H,W) mask or probability map."""
    _check_shape(mask)
    return mask - erode(mask, width)


def soft_edge_map(mask: torch.Tensor, width: int) -> torch.Tensor:
    """The soft edge profile of a (N,1,H,W) mask or probability map in [0, 1] (module docstring).

    The square of side ``2k+1`` is ``k`` steps of the 3x3 square, so the nested erosions and
    dilations are built one 3x3 step at a time: ``2·width`` small pools instead of ``2·width``
    growing ones.
    """
    _check_shape(mask)
    _check_width(width)
    total = torch.zeros_like(mask)
    grown, shrunk = mask, mask
    for k in range(1, width + 1):
        shrunk = erode(shrunk, 1)
        total = total + (grown - shrunk)  # dilate(m, k-1) - erode(m, k)
        if k < width:
            grown = dilate(grown, 1)
    return total / width


def loss_edge_map(mask: torch.Tensor, width: int, profile: EdgeProfile) -> torch.Tensor:
    """The edge map the edge term compares: the hard band or the soft profile."""
    if profile == "hard":
        return edge_map(mask, width)
    if profile == "soft":
        return soft_edge_map(mask, width)
    raise ValueError(f"unknown edge profile {profile!r}; allowed: {', '.join(EDGE_PROFILES)}")
