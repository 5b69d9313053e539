"""Which models can be built: smp's architectures and encoders, timm's models, local weight files.

A leaf: the config validators and :mod:`edgesearch.trainer.model` both ask it, and it imports
neither. smp and timm are imported on first use (and their lists cached), so importing this
module is free and only validating a model section pays for the encoder lists.
"""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path

from edgesearch.validation import shorten

__all__ = ["available_archs", "available_encoders", "encoder_problem", "is_local_weights"]

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@cache
def available_archs() -> list[str]:
    import segmentation_models_pytorch as smp

    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


@cache
def available_encoders() -> list[str]:
    import segmentation_models_pytorch as smp

    return list(smp.encoders.get_encoder_names())


def is_local_weights(weights: str) -> bool:
    """A path to a state-dict file, as opposed to a weights name smp downloads."""
    return Path(weights).suffix in WEIGHT_SUFFIXES or "/" in weights


def encoder_problem(name: str) -> str | None:
    """None for an encoder smp can build (its own, or ``tu-`` + a timm model), else what is wrong.

    timm models are checked here, since timm itself would only fail once a trial builds one.
    """
    if name.startswith("tu-"):
        import timm

        if timm.is_model(name[3:]):
            return None
        close = difflib.get_close_matches(name[3:], timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join('tu-' + match for match in close)}?" if close else ""
        return f"unknown timm model {shorten(name[3:])}; allowed: 'tu-' + a name in timm.list_models(){hint}"
    allowed = available_encoders()
    if name in allowed:
        return None
    return (
        f"unknown encoder {shorten(name)}; allowed: an smp encoder such as "
        f"{', '.join(allowed[:8])}, ... or 'tu-<timm model name>'"
    )
