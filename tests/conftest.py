"""Shared fixtures: tiny configs and on-disk image folders made from the synthetic data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TINY: dict[str, Any] = {
    "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
    "data": {"image_size": 64, "batch_size": 8, "num_workers": 0, "synthetic": {"n_images": 96, "seed": 0}},
    "optim": {"lr": 3.0e-3, "warmup_epochs": 1, "freeze_epochs": 1},
    "epochs": 3,
    "device": "cpu",
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def tiny_config() -> Callable[..., Any]:
    """A factory of small TrainConfigs that train in seconds on CPU."""
    from edgesearch.trainer import TrainConfig

    def make(**overrides: Any) -> TrainConfig:
        return TrainConfig.model_validate(merge(TINY, overrides))

    return make


def write_folder(root: Path, *, n: int = 6, size: int = 64, seed: int = 0) -> Path:
    """An ``images/`` + ``masks/`` folder of synthetic samples saved as PNG (masks 0/255)."""
    from PIL import Image

    from edgesearch.trainer.data import synthetic_sample

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = synthetic_sample(i, size=size, seed=seed)
        Image.fromarray(image).save(root / "images" / f"img{i:02d}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"img{i:02d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "data")


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trial artifacts of every test (and of the worker processes it starts) go to its tmp dir."""
    monkeypatch.setenv("EDGESEARCH_ARTIFACTS", str(tmp_path / "artifacts"))


def train_tiny_run(run_dir: Path, *, image_size: int, n_images: int, epochs: int) -> tuple[Any, Path]:
    """Train a tiny resnet18 U-Net on synthetic shapes on CPU; returns (config, best.pt)."""
    from edgesearch.trainer import TrainConfig, train

    config = TrainConfig.model_validate(
        {
            "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
            "data": {"image_size": image_size, "batch_size": 8, "num_workers": 0, "synthetic": {"n_images": n_images}},
            "optim": {"lr": 3.0e-3, "warmup_epochs": 0, "freeze_epochs": 0},
            "epochs": epochs,
            "device": "cpu",
        }
    )
    result = train(config, run_dir=run_dir)
    assert result.best_checkpoint is not None
    return config, result.best_checkpoint
