"""Tiny configs and data makers shared by the tests: plain data and functions (fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY: dict[str, Any] = {
    "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
    "data": {"image_size": 64, "batch_size": 8, "num_workers": 0, "synthetic": {"n_images": 96, "seed": 0}},
    "optim": {"lr": 3.0e-3, "warmup_epochs": 1, "freeze_epochs": 1},
    "epochs": 3,
    "device": "cpu",
}
"""A trainer config that trains in seconds on CPU (``tiny_config`` builds TrainConfigs from it)."""

TINY_TRAINER: dict[str, Any] = {
    "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
    "data": {"image_size": 32, "batch_size": 8, "num_workers": 0, "synthetic": {"n_images": 16}},
    "optim": {"lr": 3.0e-3, "warmup_epochs": 0, "freeze_epochs": 0},
    "epochs": 1,
    "device": "cpu",
}
"""The smallest trainer block of a study file: one epoch at 32 px, for tests of the search around it."""


def tiny_study(name: str, **extra: Any) -> dict[str, Any]:
    """A study file's contents: 3 trials of :data:`TINY_TRAINER`, random sampler with seed 0, no
    pruner, lambda searched; ``extra`` is merged in (nested dicts key by key)."""
    base = {
        "name": name,
        "n_trials": 3,
        "sampler": {"kind": "random", "seed": 0},
        "pruner": {"kind": "none"},
        "trainer": TINY_TRAINER,
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
    }
    return merge(base, extra)


def epoch_record(epoch: int, seconds: float) -> Any:
    """A trainer's EpochRecord of made-up metrics that took ``seconds``, for tests of progress lines."""
    from edgesearch.trainer.records import EpochRecord

    return EpochRecord(
        epoch=epoch,
        stage=1,
        train_loss=0.3,
        val_loss=0.4,
        val_iou=0.5,
        val_boundary_iou=0.2,
        val_edge_corr=0.1,
        lrs={"head": 1e-3},
        lr_cut=False,
        seconds=seconds,
    )


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


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


def write_page_stack(path: Path, *, pages: int, side: int) -> Path:
    """A TIFF of ``pages`` zero pages of ``side`` x ``side`` 8-bit pixels that is small on disk and cheap to make.

    Each page is one deflate strip, compressed once and written ``pages`` times: 400 pages of
    4000x4000 (6.4e9 pixels) take 6 MB and a tenth of a second, and nothing of their size is
    ever held in memory.
    """
    import zlib

    import numpy as np
    import tifffile

    strip = zlib.compress(bytes(side * side), 9)
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            iter([strip] * pages), shape=(pages, side, side), dtype=np.uint8, compression="zlib", rowsperstrip=side
        )
    return path


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


def train_patch_run(run_dir: Path, *, arch: str = "fpn", channels: int = 3, **data: Any) -> tuple[Any, Path]:
    """Train a tiny resnet18 model on 64 px native-resolution patches on CPU, 1 epoch; returns (config, best.pt).

    ``data`` goes into the config's data block (default: 8 synthetic shapes of 96 px). The default arch is
    an FPN: unlike smp's U-Net it refuses a side that 32 does not divide, so a whole image that reached it
    unwindowed would fail.
    """
    from edgesearch.trainer import TrainConfig, train

    config = TrainConfig.model_validate(
        {
            "model": {"arch": arch, "encoder": "resnet18", "encoder_weights": None, "in_channels": channels},
            "data": {"patch_size": 64, "batch_size": 4, "num_workers": 0, "synthetic": {"n_images": 8, "size": 96}}
            | data,
            "optim": {"lr": 3.0e-3, "warmup_epochs": 0, "freeze_epochs": 0},
            "epochs": 1,
            "device": "cpu",
        }
    )
    result = train(config, run_dir=run_dir)
    assert result.best_checkpoint is not None
    return config, result.best_checkpoint


class SmallDisk:
    """A tmpfs of a few megabytes, mounted for one test: a real file system that really fills up."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resize(self, size: int) -> None:
        """Grow or shrink it (``mount -o remount``), as freeing space on a full disk would."""
        import subprocess

        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True, capture_output=True)


def random_run(run_dir: Path, trainer: dict[str, Any], *, seed: int = 0) -> tuple[Any, Path]:
    """A run folder of an untrained model: ``best.pt`` of random weights beside the ``config.json`` of ``trainer``
    (a trainer config mapping); returns (config, best.pt). Its BatchNorm statistics are random too (each
    channel's mean and variance drawn around 0 and 1), so that an exported graph folds real numbers into its
    convolutions: for comparing two ways of running one model, as good as a trained one and seconds faster."""
    import json

    import torch

    from edgesearch.trainer import TrainConfig
    from edgesearch.trainer.model import build_model

    config = TrainConfig.model_validate(trainer)
    torch.manual_seed(seed)
    model = build_model(config.model)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), run_dir / "best.pt")
    (run_dir / "config.json").write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
    return config, run_dir / "best.pt"
