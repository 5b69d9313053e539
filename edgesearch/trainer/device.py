"""Device names: which ones a config may say (checked offline), and which device one means here."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from edgesearch.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["REQUIRE_CUDA_ENV", "check_required_gpu", "device_problem", "resolve_device"]

REQUIRE_CUDA_ENV = "EDGESEARCH_REQUIRE_CUDA"
"""Set (to the GPU id) in a worker that was given a GPU: its runs must use CUDA, never fall back to the CPU."""


def device_problem(value: str) -> str | None:
    """None for a device name the trainer accepts, else what is wrong and what is allowed.

    Shared by ``TrainConfig.device`` and the CLI's ``--device`` options, so both say the same.
    """
    head, _, index = value.partition(":")
    if head in ("auto", "cpu", "mps") and not index:
        return None
    if head == "cuda" and (not index or index.isdigit()):
        return None
    return f"unknown device {value!r}; allowed: auto, cpu, cuda, cuda:N, mps"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unknown or unavailable explicit choice is a ConfigError.

    In a worker given a GPU (:data:`REQUIRE_CUDA_ENV` set), anything but CUDA is a ConfigError: a run
    that silently trained on the CPU there would take hours and look like a slow GPU.
    """
    import torch

    problem = device_problem(name)
    if problem is not None:
        raise ConfigError(f"device: {problem}")
    gpu = os.environ.get(REQUIRE_CUDA_ENV)
    if gpu and name in ("cpu", "mps"):
        raise ConfigError(f"device: this worker was given GPU {gpu}; the config asks for {name!r}")
    if gpu and not torch.cuda.is_available():
        raise ConfigError(
            f"device: this worker was given GPU {gpu}, but CUDA is not available to it; not using the CPU"
        )
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available here; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device: {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {name!r} requested but MPS is not available here; use cpu or auto")
    return device


def check_required_gpu() -> None:
    """In a worker given a GPU (:data:`REQUIRE_CUDA_ENV`), a ConfigError at start when CUDA is not there.

    Checked before the worker takes a trial, so that a worker on the wrong machine fails no trial.
    """
    gpu = os.environ.get(REQUIRE_CUDA_ENV)
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"this worker was given GPU {gpu}, but CUDA is not available to it; not using the CPU")
