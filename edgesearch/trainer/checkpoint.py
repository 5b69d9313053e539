"""Checkpoint files: ``best.pt`` (weights) and ``last.pt`` (everything needed to resume).

Both are written atomically (:func:`edgesearch.files.atomic_write`), so a crash or a kill
mid-write leaves the previous checkpoint whole, and read with ``weights_only=True``: tensors
and plain containers, never pickled code from a file someone handed over.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgesearch.errors import ConfigError
from edgesearch.files import atomic_write

if TYPE_CHECKING:
    from edgesearch.trainer.config import TrainConfig

__all__ = ["RESUME_KEYS", "load_checkpoint", "read_resume_state", "save_checkpoint"]

RESUME_KEYS = frozenset({"epoch", "model", "optimizer", "schedule", "rng", "history", "best_val_iou", "best_epoch"})
"""What a ``last.pt`` holds besides the run's ``config``."""


def save_checkpoint(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a checkpoint."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: Path) -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers, no pickled code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def read_resume_state(path: Path, config: TrainConfig) -> dict[str, Any]:
    """The state of a ``last.pt`` to continue ``config``'s run from; a ConfigError if it cannot be."""
    try:
        state = load_checkpoint(path)
    except FileNotFoundError:
        raise ConfigError(f"resume: {path}: file not found") from None
    except Exception as exc:  # corrupt file, or not a checkpoint at all
        raise ConfigError(f"resume: {path}: not a readable edgesearch last.pt ({exc})") from None
    if not isinstance(state, dict) or not state.keys() >= RESUME_KEYS:
        raise ConfigError(f"resume: {path}: not an edgesearch last.pt (keys {sorted(RESUME_KEYS)} expected)")
    saved_model = state.get("config", {}).get("model")
    if saved_model is not None and saved_model != config.model.model_dump(mode="json"):
        raise ConfigError(f"resume: {path}: was trained with model {saved_model}, not {config.model.model_dump()}")
    if int(state["epoch"]) >= config.epochs:
        raise ConfigError(f"resume: {path}: already has {state['epoch']} epochs; epochs is {config.epochs}")
    return state
