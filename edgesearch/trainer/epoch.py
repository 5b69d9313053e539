"""EpochRunner: one epoch of training or validation, the code ``train()`` runs, usable on its own.

``train()`` builds one runner and calls it once per epoch; the benchmarks build one over an
in-memory list of batches to time the trainer's own step against a hand-written loop. On
CUDA the forward pass runs under bf16 autocast (fp16 + GradScaler where bf16 is missing)
with channels_last tensors.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgesearch.errors import UserError
from edgesearch.trainer.callbacks import Callback
from edgesearch.trainer.config import TrainConfig
from edgesearch.trainer.edges import edge_map, soft_edge_map
from edgesearch.trainer.losses import total_loss
from edgesearch.trainer.metrics import MetricAccumulator, image_edge_correlations, image_ious
from edgesearch.trainer.model import backbone_parameters, head_parameters, set_backbone_trainable
from edgesearch.trainer.schedule import BACKBONE, HEAD, StagedSchedule, add_backbone_group, build_optimizer
from edgesearch.trainer.sliding import sliding_window_probabilities

__all__ = ["Batches", "EpochRunner", "NonFiniteLossError", "Precision"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
"""(images, masks) batches: a DataLoader, or any iterable of tensor pairs."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""


class Precision:
    """Autocast + optional GradScaler for the device: bf16 on CUDA, fp16 + scaler without bf16."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.dtype: torch.dtype | None = None
        if device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()


def _batches(batches: Batches) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor]]]:
    try:
        yield from enumerate(batches)
    except (OSError, ValueError) as exc:  # a file changed or vanished after the data scan
        raise UserError(f"data: reading a batch failed: {exc}") from exc


@dataclass
class EpochRunner:
    """What one epoch needs: the model, its optimizer and schedule, precision and callbacks."""

    config: TrainConfig
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: StagedSchedule
    precision: Precision
    callbacks: Sequence[Callback] = ()
    image_ious: list[float] = field(default_factory=list)
    """Per-image IoU of the last :meth:`validate`, in batch order (both masks empty: 1.0). The run's
    edge overlay ranks the validation images by its best epoch's, instead of predicting them again."""
    image_edge_corrs: list[float] = field(default_factory=list)
    """Per-image edge correlation of the last :meth:`validate`, in the same order
    (:func:`~edgesearch.trainer.metrics.image_edge_correlations`)."""

    @classmethod
    def build(
        cls,
        config: TrainConfig,
        model: nn.Module,
        *,
        device: torch.device,
        steps_per_epoch: int,
        start_epoch: int = 0,
        callbacks: Sequence[Callback] = (),
        with_backbone: bool | None = None,
    ) -> EpochRunner:
        """A runner for ``model`` (already on ``device``) with the optimizer its stage at ``start_epoch`` needs.

        ``with_backbone`` overrides whether the optimizer starts with the encoder's group: a run
        resumed right after its last frozen epoch saved a head-only optimizer, and the encoder
        joins at the start of the next epoch (:meth:`enter_stage`) as it would have.
        """
        schedule = StagedSchedule(config.optim, steps_per_epoch=steps_per_epoch)
        groups = {HEAD: head_parameters(model)}
        if with_backbone if with_backbone is not None else schedule.stage(start_epoch) == 2:
            groups[BACKBONE] = backbone_parameters(model)
        optimizer = build_optimizer(config.optim, groups)
        return cls(config, device, model, optimizer, schedule, Precision(device), callbacks)

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda"

    @property
    def nonfinite_check_steps(self) -> int:
        """How often the running loss is checked for NaN/inf: each step where that costs no
        host-device sync (CPU), every 8th step on accelerators, and always at the epoch's end."""
        return 1 if self.device.type == "cpu" else 8

    def to_device(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks.to(self.device, non_blocking=True)

    def enter_stage(self, epoch: int) -> None:
        """At the first epoch of stage 2, the encoder joins the optimizer (its own lr and warmup)."""
        has_backbone = any(group["name"] == BACKBONE for group in self.optimizer.param_groups)
        if self.schedule.stage(epoch) == 2 and not has_backbone:
            set_backbone_trainable(self.model, True)
            add_backbone_group(self.optimizer, backbone_parameters(self.model), self.config.optim)

    def set_train_mode(self, epoch: int) -> None:
        self.model.train()
        if self.schedule.stage(epoch) == 1:
            set_backbone_trainable(self.model, False)

    def train_epoch(self, batches: Batches, epoch: int) -> float:
        """One pass over ``batches`` with the lr set per step; returns the mean training loss."""
        cfg = self.config.loss
        loss_sum = torch.zeros((), device=self.device)
        n_steps = 0
        for step, (images, targets) in _batches(batches):
            images, targets = self.to_device(images, targets)
            self.schedule.apply(self.optimizer, epoch, step)
            with self.precision.autocast():
                logits = self.model(images)
            if targets.shape[1] == 1:
                loss = total_loss(logits, targets, cfg)
            else:  # a patch's mask, valid and edge_valid (trainer/patches.py)
                loss = total_loss(logits, targets[:, :1], cfg, valid=targets[:, 1:2], edge_valid=targets[:, 2:3])
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.step(loss, self.optimizer)
            detached = loss.detach()
            loss_sum += detached
            n_steps += 1
            if n_steps % self.nonfinite_check_steps == 0 and not bool(torch.isfinite(loss_sum)):
                raise NonFiniteLossError(
                    f"training loss became {loss_sum.item()} in epoch {epoch + 1}, step {step + 1}"
                )
            for cb in self.callbacks:
                cb.on_batch_end(epoch=epoch, step=step, loss=detached)
        mean = (loss_sum / max(n_steps, 1)).item()
        if not math.isfinite(mean):
            raise NonFiniteLossError(f"training loss became {mean} in epoch {epoch + 1}")
        return mean

    def validate(self, batches: Batches) -> dict[str, float]:
        """Loss and metrics over ``batches`` under ``inference_mode``: ``val_loss`` and the METRIC_KEYS."""
        scores = _Scores(self.config, self.device)
        self.model.eval()
        with torch.inference_mode():
            for _, (images, masks) in _batches(batches):
                images, masks = self.to_device(images, masks)
                with self.precision.autocast():
                    logits = self.model(images)
                scores.add(logits.float(), masks)
        return self._finish(scores)

    def validate_whole(self, images: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """:meth:`validate` on whole images at native resolution, each predicted by sliding window.

        ``images`` yields ``(image (C, h, w), mask (1, H, W))`` (:class:`~edgesearch.trainer.patch_data.WholeImages`):
        the probabilities of the ``data.window`` windows, blended as ``predict`` blends them, are
        resampled to the mask's size when ``data.scale`` made the image another size, and scored
        there. The loss is taken on ``logit(p)`` (p clipped to [1e-6, 1 - 1e-6]).
        """
        data = self.config.data
        scores = _Scores(self.config, self.device)
        with torch.inference_mode():
            for _, (image, mask) in _batches(images):
                prob = sliding_window_probabilities(
                    self.model,
                    image.to(self.device, non_blocking=True),
                    window=data.window,
                    overlap=data.overlap,
                    batch_size=data.batch_size,
                    stitch_on_cpu_above=None,
                )[None, None]
                target = mask.to(self.device, non_blocking=True)[None]
                if prob.shape[-2:] != target.shape[-2:]:
                    prob = F.interpolate(prob, size=target.shape[-2:], mode="bilinear", align_corners=False)
                scores.add(torch.logit(prob.clamp(_EPS, 1.0 - _EPS)), target)
        return self._finish(scores)

    def _finish(self, scores: _Scores) -> dict[str, float]:
        self.image_ious = torch.cat(scores.per_image).tolist() if scores.per_image else []
        self.image_edge_corrs = torch.cat(scores.per_image_corr).tolist() if scores.per_image_corr else []
        metrics = scores.meter.compute()
        metrics["val_loss"] = scores.loss_sum.item() / max(scores.n_batches, 1)
        return metrics


_EPS = 1e-6


class _Scores:
    """What a validation pass adds up, batch by batch, on the device."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.loss = config.loss
        self.meter = MetricAccumulator(width=config.loss.edge_width, device=device)
        self.loss_sum = torch.zeros((), device=device)
        self.n_batches = 0
        self.per_image: list[torch.Tensor] = []
        self.per_image_corr: list[torch.Tensor] = []

    def add(self, logits: torch.Tensor, masks: torch.Tensor) -> None:
        cfg = self.loss
        # The target's band serves two of the metrics and, with the hard profile, the loss: computed once.
        target_edges = edge_map(masks.float(), cfg.edge_width)
        loss_edges = target_edges if cfg.edge_profile == "hard" else soft_edge_map(masks.float(), cfg.edge_width)
        self.loss_sum += total_loss(logits, masks, cfg, target_edges=loss_edges)
        prob = torch.sigmoid(logits)
        self.meter.update(prob, masks, target_edges=target_edges)
        self.per_image.append(image_ious(prob, masks))
        self.per_image_corr.append(image_edge_correlations(prob, masks, cfg.edge_width, target_edges=target_edges))
        self.n_batches += 1
