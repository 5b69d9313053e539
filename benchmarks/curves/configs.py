"""The configurations of the learning-curve table: the report's knobs, a designed block and a random one.

Every configuration trains U-Net/mobilenet_v2 on the nuclei at native resolution (64-px patches, 32 an epoch,
batch 8, validation on the whole 128x512 image by sliding window) for :data:`EPOCHS` epochs. They differ in
the knobs of :data:`SPACE`, the search space the replay samples from.

- **designed** (``d00``-``d39``): the report's fine-tuning question on the pretrained encoder, a full factorial
  of :data:`SCHEDULES` x edge lambda {0.15, 0.3, 0.5} x edge width {1, 2, 3}, plus lambda 0 once per
  schedule (without the edge term the width changes nothing), everything else at the trainer's defaults
  (BCE, Adam, lr 1e-3, round_ratio 0, hard edges). Main effects are means over 9-10 configurations, so each
  is measured on 18-20 runs.
- **random** (``r000``-): points drawn uniformly from :data:`SPACE` (lr and backbone factor log-uniformly)
  with a fixed seed, rounded to 3 significant digits: what a search meets, scratch and pretrained.

Boundary IoU is measured at d = the configuration's edge width (the trainer's own metric), so it compares
only configurations of one width. The table is a function of this module only: re-recording on another
machine trains the same runs.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Final

import numpy as np

EPOCHS: Final = 30
SEEDS: Final = (0, 1)
ENCODER: Final = "mobilenet_v2"
N_RANDOM: Final = 110
RANDOM_SEED: Final = 2026

SPACE: Final[dict[str, dict[str, Any]]] = {
    "loss.kind": {"choices": ["bce", "focal"]},
    "loss.edge_lambda": {"low": 0.0, "high": 0.5},
    "loss.edge_width": {"choices": [1, 2, 3, 4]},
    "loss.edge_profile": {"choices": ["hard", "soft"]},
    "loss.round_ratio": {"low": 0.0, "high": 0.3},
    "optim.name": {"choices": ["adam", "rmsprop"]},
    "optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
    "optim.backbone_lr_factor": {"low": 0.05, "high": 1.0, "log": True},
    "optim.freeze_epochs": {"low": 0, "high": 4},
    "optim.warmup_epochs": {"low": 0, "high": 3},
    "model.encoder_weights": {"choices": [None, "packaged"]},
}
"""The report's knobs as an edgesearch study space (``space:`` in a study file)."""

SCHEDULES: Final[dict[str, dict[str, Any]]] = {
    "all from epoch 1": {"optim.freeze_epochs": 0, "optim.warmup_epochs": 2, "optim.backbone_lr_factor": 1.0},
    "lower backbone lr": {"optim.freeze_epochs": 0, "optim.warmup_epochs": 2, "optim.backbone_lr_factor": 0.1},
    "frozen first": {"optim.freeze_epochs": 3, "optim.warmup_epochs": 2, "optim.backbone_lr_factor": 1.0},
    "report's schedule": {"optim.freeze_epochs": 3, "optim.warmup_epochs": 2, "optim.backbone_lr_factor": 0.1},
}
"""Ways to fine-tune a pretrained encoder, a 2x2 of a frozen first stage (3 epochs) and a lower backbone lr
(x0.1), every one with a 2-epoch warmup at the start of each stage (so the frozen ones warm up afresh when
the backbone joins): everything from the first epoch, the lower lr only, the frozen stage only, and the
report's whole schedule."""
LAMBDAS: Final = (0.15, 0.3, 0.5)
WIDTHS: Final = (1, 2, 3)

BASE: Final[dict[str, Any]] = {
    "loss.kind": "bce",
    "loss.edge_lambda": 0.15,
    "loss.edge_width": 2,
    "loss.edge_profile": "hard",
    "loss.round_ratio": 0.0,
    "optim.name": "adam",
    "optim.lr": 1.0e-3,
    "optim.backbone_lr_factor": 0.5,
    "optim.freeze_epochs": 0,
    "optim.warmup_epochs": 0,
    "model.encoder_weights": "packaged",
}
"""The trainer's scratch defaults (no frozen stage, no warmup), every knob explicit, on the pretrained encoder:
what the designed block varies from and the base of a replayed study."""


def _significant(value: float, digits: int = 3) -> float:
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def designed() -> dict[str, dict[str, Any]]:
    points = [
        {**BASE, **schedule, "loss.edge_lambda": lam, "loss.edge_width": width}
        for schedule in SCHEDULES.values()
        for lam, width in [(0.0, 2), *itertools.product(LAMBDAS, WIDTHS)]
    ]
    return {f"d{index:02d}": params for index, params in enumerate(points)}


def random_points(n: int = N_RANDOM, seed: int = RANDOM_SEED) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    table = {}
    for index in range(n):
        params: dict[str, Any] = {}
        for name, spec in SPACE.items():
            if "choices" in spec:
                params[name] = spec["choices"][int(rng.integers(len(spec["choices"])))]
            elif isinstance(spec["low"], int) and isinstance(spec["high"], int):
                params[name] = int(rng.integers(spec["low"], spec["high"] + 1))
            elif spec.get("log"):
                params[name] = _significant(math.exp(rng.uniform(math.log(spec["low"]), math.log(spec["high"]))))
            else:
                params[name] = _significant(float(rng.uniform(spec["low"], spec["high"])))
        table[f"r{index:03d}"] = params
    return table


def configurations() -> dict[str, dict[str, Any]]:
    """Every configuration of the table by id, the designed block first."""
    return {**designed(), **random_points()}


def trainer_config(params: dict[str, Any], *, root: str, seed: int, epochs: int = EPOCHS) -> dict[str, Any]:
    """The trainer config (a dict for ``TrainConfig``) of one configuration's run."""
    config: dict[str, Any] = {
        "model": {"arch": "unet", "encoder": ENCODER, "in_channels": 1},
        "data": {
            "root": root,
            "patch_size": 64,
            "patches_per_epoch": 32,
            "batch_size": 8,
            "num_workers": 0,
        },
        "loss": {},
        "optim": {},
        "epochs": epochs,
        "seed": seed,
        "device": "cpu",
    }
    for dotted, value in params.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return config
