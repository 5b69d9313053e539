"""Learning-rate schedule of the method: warmup, a frozen-backbone stage, ReduceLROnPlateau.

Stage 1 (``freeze_epochs`` epochs) trains only the non-backbone ("head") parameters; stage 2
adds the encoder as its own param group with ``lr · backbone_lr_factor``. Each stage starts
with a linear per-step warmup over ``warmup_epochs``. A plateau tracker on val IoU (mode
max, the same rule as ``torch.optim.lr_scheduler.ReduceLROnPlateau``) scales every group;
its cuts persist through later warmups because the lr is always computed as
``base · group factor · plateau scale · warmup ramp`` rather than read back from the
optimizer. The tracker only counts epochs whose warmup is complete: an epoch spent ramping
up is not evidence of a plateau.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from edgesearch.trainer.config import OptimConfig

__all__ = [
    "BACKBONE",
    "HEAD",
    "SETTLE_EPOCHS",
    "Plateau",
    "StagedSchedule",
    "add_backbone_group",
    "build_optimizer",
    "unstable_epochs",
]

HEAD = "head"
BACKBONE = "backbone"


class Plateau:
    """Multiplicative lr scale cut by ``factor`` after more than ``patience`` bad epochs.

    Mirrors ReduceLROnPlateau(mode="max", threshold=1e-4, threshold_mode="rel", cooldown=0).
    """

    threshold = 1.0e-4

    def __init__(self, *, patience: int, factor: float) -> None:
        self.patience = patience
        self.factor = factor
        self.scale = 1.0
        self.best = -math.inf
        self.num_bad_epochs = 0

    def step(self, metric: float) -> bool:
        """Record one epoch's metric; True when this epoch cut the scale."""
        if metric > self.best * (1.0 + self.threshold):
            self.best = metric
            self.num_bad_epochs = 0
            return False
        self.num_bad_epochs += 1
        if self.num_bad_epochs > self.patience:
            self.scale *= self.factor
            self.num_bad_epochs = 0
            return True
        return False

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "best": self.best, "num_bad_epochs": self.num_bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])


class StagedSchedule:
    """Which stage an epoch is in and the lr of each param group at every step.

    Epochs are 0-based here; ``step`` is the batch index inside the epoch.
    """

    def __init__(self, cfg: OptimConfig, *, steps_per_epoch: int) -> None:
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.plateau = Plateau(patience=cfg.plateau_patience, factor=cfg.plateau_factor)

    def stage(self, epoch: int) -> int:
        return 1 if epoch < self.cfg.freeze_epochs else 2

    def _stage_start(self, epoch: int) -> int:
        return 0 if self.stage(epoch) == 1 else self.cfg.freeze_epochs

    def warmup_factor(self, epoch: int, step: int) -> float:
        warmup_steps = self.cfg.warmup_epochs * self.steps_per_epoch
        if warmup_steps == 0:
            return 1.0
        done = (epoch - self._stage_start(epoch)) * self.steps_per_epoch + step + 1
        return min(1.0, done / warmup_steps)

    def lrs(self, epoch: int, step: int) -> dict[str, float]:
        """The lr of each param group present at (epoch, step)."""
        lr = self.cfg.lr * self.plateau.scale * self.warmup_factor(epoch, step)
        out = {HEAD: lr}
        if self.stage(epoch) == 2:
            out[BACKBONE] = lr * self.cfg.backbone_lr_factor
        return out

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, step: int) -> None:
        lrs = self.lrs(epoch, step)
        for group in optimizer.param_groups:
            group["lr"] = lrs[group["name"]]

    def end_epoch(self, epoch: int, val_iou: float) -> bool:
        """Feed the epoch's val IoU to the plateau tracker unless the lr ramped in it; True on a cut."""
        if epoch - self._stage_start(epoch) < self.cfg.warmup_epochs:
            return False
        return self.plateau.step(val_iou)

    def state_dict(self) -> dict[str, Any]:
        return {"plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau.load_state_dict(state["plateau"])


SETTLE_EPOCHS = 1
"""Epochs after the joining backbone's warmup before a run's metric is compared with others': the IoU
dips when the encoder starts to move at its own lr, and recovers within about an epoch."""


def unstable_epochs(cfg: OptimConfig, *, settle: int = SETTLE_EPOCHS) -> int:
    """How many epochs from the start a run's val IoU says little about where it is going.

    Stage 1 (``freeze_epochs``, a random or pretrained encoder frozen), then the warmup of stage 2
    (``warmup_epochs``) and ``settle`` epochs after it, when the backbone joins mid-run. Without
    a frozen stage the backbone trains from the first epoch: only the warmup counts.
    """
    if cfg.freeze_epochs == 0:
        return cfg.warmup_epochs
    return cfg.freeze_epochs + cfg.warmup_epochs + settle


def build_optimizer(cfg: OptimConfig, groups: Mapping[str, Iterable[torch.nn.Parameter]]) -> torch.optim.Optimizer:
    """Adam or RMSprop over named param groups (lr is set by the schedule before each step)."""
    param_groups = [{"params": list(params), "name": name, "lr": cfg.lr} for name, params in groups.items()]
    if cfg.name == "adam":
        return torch.optim.Adam(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; allowed: adam, rmsprop")


def add_backbone_group(
    optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter], cfg: OptimConfig
) -> None:
    """Stage 2: the encoder joins the optimizer as its own group."""
    optimizer.add_param_group({"params": list(params), "name": BACKBONE, "lr": cfg.lr * cfg.backbone_lr_factor})
