"""Checkpoint files: ``best.pt`` (weights) and ``last.pt`` (everything needed to resume).

Both are written atomically (:func:`edgesearch.files.atomic_write`), so a crash or a kill
mid-write leaves the previous checkpoint whole, and read with ``weights_only=True``: tensors
and plain containers, never pickled code from a file someone handed over (a file that holds any
is refused, never loaded another way).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgesearch.errors import ConfigError, first_line
from edgesearch.files import atomic_write

if TYPE_CHECKING:
    from edgesearch.trainer.config import TrainConfig

__all__ = [
    "RESUMABLE_CHANGES",
    "RESUME_KEYS",
    "config_changes",
    "load_checkpoint",
    "read_checkpoint",
    "read_resume_state",
    "save_checkpoint",
]

RESUME_KEYS = frozenset({"epoch", "model", "optimizer", "schedule", "rng", "history", "best_val_iou", "best_epoch"})
"""What a ``last.pt`` holds besides the run's ``config``."""


def save_checkpoint(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a checkpoint."""
    atomic_write(path, lambda tmp: _save(obj, tmp))


def _save(obj: Any, tmp: Path) -> None:
    # Into a Python file rather than to the path: given a path, torch's C++ writer reports a full
    # disk as "basic_ios::clear: iostream error", and the errno ("no space left") is lost.
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)


def load_checkpoint(path: Path) -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers, no pickled code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(
    path: Path, *, label: str = "", what: str = "an edgesearch checkpoint", map_location: str | torch.device = "cpu"
) -> Any:
    """A file a user named, loaded as :func:`load_checkpoint` does, or a one-line ConfigError naming it.

    A pickle holding other objects is refused as such: torch's own message would advise loading it
    without ``weights_only``, which runs whatever code the file names. ``label`` prefixes the message.
    """
    if not path.is_file():
        raise ConfigError(f"{label}{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the error below says it all
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # how torch reports any object a weights-only load refuses
        raise ConfigError(
            f"{label}{path}: not {what}, or it holds objects that cannot be loaded safely "
            "(only tensors and plain containers are loaded)"
        ) from None
    except Exception as exc:  # torch raises many kinds for a corrupt or truncated file
        raise ConfigError(f"{label}{path}: not a readable checkpoint ({first_line(exc)})") from None


RESUMABLE_CHANGES = frozenset({"epochs", "device", "data.num_workers", "data.loader", "checkpoint_interval"})
"""Settings a resumed run may change: train longer, on another device, with other loader processes or path."""


def config_changes(saved: Any, now: Any, prefix: str = "") -> list[str]:
    """``path: saved -> now`` for every setting that differs between two config dicts (as saved in JSON)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [
            line
            for key in sorted(saved.keys() | now.keys())
            for line in config_changes(saved.get(key), now.get(key), f"{prefix}{key}.")
        ]
    path = prefix.rstrip(".")
    return [] if saved == now or path in RESUMABLE_CHANGES else [f"{path}: {saved!r} -> {now!r}"]


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with every key it lacks taken from ``defaults``, section by section."""
    filled = dict(saved)
    for key, value in defaults.items():
        if key not in filled:
            filled[key] = value
        elif isinstance(value, dict) and isinstance(filled[key], dict):
            filled[key] = _with_defaults(filled[key], value)
    return filled


def read_resume_state(path: Path, config: TrainConfig, *, force: bool = False) -> dict[str, Any]:
    """The state of a ``last.pt`` to continue ``config``'s run from; a ConfigError if it cannot be.

    The run must have the same config but for :data:`RESUMABLE_CHANGES`; ``force`` accepts other
    differences (a lower learning rate for the rest of the run, say), never another model.
    """
    state = read_checkpoint(path, label="resume: ")
    if not isinstance(state, dict) or not state.keys() >= RESUME_KEYS:
        raise ConfigError(f"resume: {path}: not an edgesearch last.pt (keys {sorted(RESUME_KEYS)} expected)")
    saved = state.get("config") or {}
    if isinstance(saved, dict) and saved:
        from edgesearch.trainer.config import TrainConfig as Defaults

        # A setting added since the run was saved had its default then: that is no change.
        saved = _with_defaults(saved, Defaults().model_dump(mode="json"))
    now = config.model_dump(mode="json")
    saved_model = saved.get("model")
    if saved_model is not None and saved_model != now["model"]:
        raise ConfigError(f"resume: {path}: was trained with model {saved_model}, not {config.model.model_dump()}")
    changes = config_changes(saved, now) if saved else []
    if changes and not force:
        shown = "; ".join(changes[:10]) + (f"; and {len(changes) - 10} more" if len(changes) > 10 else "")
        raise ConfigError(
            f"resume: {path}: was trained with other settings ({shown}); "
            "resume with the same config, or pass --force to continue with the new one"
        )
    if int(state["epoch"]) >= config.epochs:
        raise ConfigError(f"resume: {path}: already has {state['epoch']} epochs; epochs is {config.epochs}")
    return state
