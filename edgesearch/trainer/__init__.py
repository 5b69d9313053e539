"""The shared edge-aware segmentation trainer. It never imports optuna.

The public names are loaded on first use, so that importing a sub-module that does not need
torch (``edgesearch.trainer.device`` for the CLI's option checks) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgesearch.trainer.callbacks import Callback
    from edgesearch.trainer.config import TrainConfig, load_train_config
    from edgesearch.trainer.epoch import EpochRunner, NonFiniteLossError
    from edgesearch.trainer.loop import TrainResult, train
    from edgesearch.trainer.records import EpochRecord

__all__ = [
    "Callback",
    "EpochRecord",
    "EpochRunner",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "load_train_config",
    "train",
]

_HOME = {
    "Callback": "callbacks",
    "EpochRecord": "records",
    "EpochRunner": "epoch",
    "TrainConfig": "config",
    "load_train_config": "config",
    "NonFiniteLossError": "epoch",
    "TrainResult": "loop",
    "train": "loop",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"edgesearch.trainer.{_HOME[name]}"), name)
    raise AttributeError(f"module 'edgesearch.trainer' has no attribute {name!r}")
