"""Validation metrics: IoU, boundary IoU and edge correlation.

All are dataset-level: counts and sums are added over every image and pixel before the
ratio is taken (smp's ``reduction="micro"``), so a batch split never changes the result.
:class:`MetricAccumulator` keeps those sums on the model's device and synchronises once per
validation pass, not once per batch.
"""

from __future__ import annotations

import math

import torch

from edgesearch.trainer.edges import edge_map

__all__ = ["MetricAccumulator", "boundary_iou", "edge_correlation", "iou"]

THRESHOLD = 0.5


def _binary(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask >= THRESHOLD


def _ratio(num: float, den: float) -> float:
    # Both masks empty: a perfect match, as smp's zero_division=1.0 has it.
    return 1.0 if den == 0 else num / den


def _iou_counts(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = _binary(pred), _binary(target)
    inter = (pred & target).sum(dtype=torch.float64)
    union = (pred | target).sum(dtype=torch.float64)
    return inter, union


def _edge_counts(
    pred: torch.Tensor, target: torch.Tensor, width: int, target_edges: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    pred_edges = edge_map(_binary(pred).float(), width)
    if target_edges is None:
        target_edges = edge_map(_binary(target).float(), width)
    return _iou_counts(pred_edges, target_edges)


def _corr_sums(
    prob: torch.Tensor, target: torch.Tensor, width: int, target_edges: torch.Tensor | None = None
) -> torch.Tensor:
    x = edge_map(prob.float(), width).double().flatten()
    y = (edge_map(target.float(), width) if target_edges is None else target_edges).double().flatten()
    n = torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device)
    return torch.stack([n, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])


def _pearson(sums: list[float]) -> float:
    n, sx, sy, sxx, syy, sxy = sums
    if n == 0:
        return 0.0
    cov = sxy - sx * sy / n
    var_x, var_y = sxx - sx * sx / n, syy - sy * sy / n
    if var_x <= 0.0 or var_y <= 0.0:
        return 0.0  # a constant map has no defined correlation; report "none"
    return cov / math.sqrt(var_x * var_y)


def iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Intersection over union of binary masks (probabilities are thresholded at 0.5)."""
    inter, union = _iou_counts(pred, target)
    return _ratio(inter.item(), union.item())


def boundary_iou(pred: torch.Tensor, target: torch.Tensor, width: int) -> float:
    """IoU of the inner edge bands of width ``width`` (Boundary IoU with d = width)."""
    inter, union = _edge_counts(pred, target, width)
    return _ratio(inter.item(), union.item())


def edge_correlation(prob: torch.Tensor, target: torch.Tensor, width: int) -> float:
    """Pearson correlation between ``edge_map(prob, w)`` and ``edge_map(target, w)`` over all pixels."""
    return _pearson(_corr_sums(prob, target, width).tolist())


class MetricAccumulator:
    """Sums for the three metrics over a validation pass, kept on the device."""

    def __init__(self, *, width: int, device: torch.device | str = "cpu") -> None:
        self.width = width
        self._sums = torch.zeros(10, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, prob: torch.Tensor, target: torch.Tensor, *, target_edges: torch.Tensor | None = None) -> None:
        """Add one batch. ``target_edges`` is ``edge_map(target, width)`` of the 0/1 ``target`` when the
        caller has it already (the loss needs it too); otherwise it is computed here."""
        inter, union = _iou_counts(prob, target)
        b_inter, b_union = _edge_counts(prob, target, self.width, target_edges)
        corr = _corr_sums(prob, target, self.width, target_edges)
        self._sums += torch.cat([torch.stack([inter, union, b_inter, b_union]), corr])

    def compute(self) -> dict[str, float]:
        sums = self._sums.tolist()  # the one host-device synchronisation
        return {
            "val_iou": _ratio(sums[0], sums[1]),
            "val_boundary_iou": _ratio(sums[2], sums[3]),
            "val_edge_corr": _pearson(sums[4:]),
        }
