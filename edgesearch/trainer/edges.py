"""Edge bands of masks: ``edge_map(m, w) = m - erode(m, w)``.

Erosion is a min-pool with a (2w+1)x(2w+1) square window, stride 1, with everything outside
the image treated as background. For a binary mask this is the inner band of width ``w``
pixels: the boundary region of Boundary IoU (Cheng et al., CVPR 2021) with ``d = w``. On
probabilities it is differentiable, which is what lets the edge term train the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["edge_map", "erode"]


def erode(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Grey-scale erosion of (N,1,H,W) ``mask`` by a square of side ``2*width+1``.

    Zero padding makes the outside of the image background, so a mask touching the border
    has an edge along the border too (as in Boundary IoU's reference implementation).
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    padded = F.pad(mask, (width, width, width, width), mode="constant", value=0.0)
    return -F.max_pool2d(-padded, kernel_size=2 * width + 1, stride=1)


def edge_map(mask: torch.Tensor, width: int) -> torch.Tensor:
    """The inner edge band of width ``width`` of a (N,1,H,W) mask or probability map."""
    if mask.dim() != 4:
        raise ValueError(f"mask must be (N,1,H,W), got shape {tuple(mask.shape)}")
    return mask - erode(mask, width)
