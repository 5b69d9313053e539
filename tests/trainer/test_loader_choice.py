"""``data.loader``: which path makes the batches, and the device path measured against the CPU path
in whole training runs."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from edgesearch.errors import ConfigError
from edgesearch.trainer import TrainConfig, train
from edgesearch.trainer import device_data as device_data_module
from edgesearch.trainer.config import DataConfig, ModelConfig
from edgesearch.trainer.data import build_datasets, build_loader
from edgesearch.trainer.device_data import device_batches
from edgesearch.trainer.epoch import EpochRunner
from edgesearch.trainer.model import build_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _data(**overrides: Any) -> DataConfig:
    return DataConfig.model_validate({"image_size": 32, "batch_size": 4, "synthetic": {"n_images": 12}} | overrides)


def _paths(cfg: DataConfig, device: torch.device) -> tuple[Any, Any] | None:
    train_ds, val_ds = build_datasets(cfg, model=ModelConfig(), seed=0)
    return device_batches(train_ds, val_ds, cfg, channels=3, edge_width=2, device=device)


def test_auto_keeps_the_cpu_path_off_cuda() -> None:
    assert _paths(_data(loader="auto"), CPU) is None
    assert _paths(_data(loader="cpu"), CPU) is None


def test_device_asked_for_on_a_cpu_runs_the_device_path_there() -> None:
    paths = _paths(_data(loader="device"), CPU)
    assert paths is not None
    train_batches, val_batches = paths
    assert train_batches.images.device == CPU
    assert (len(train_batches), len(val_batches)) == (2, 1)  # 10 training images in batches of 4, last dropped


def test_auto_on_cuda_keeps_the_cpu_path_when_the_data_takes_over_a_quarter_of_free_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 12 images of 32x32x3 at 2 bytes + masks: 12 * 32 * 32 * 7 = 86016 bytes. No GPU here, so the free
    # memory is set; the device path itself is what the CPU tests below run.
    monkeypatch.setattr(device_data_module, "_free_bytes", lambda device: 4 * 86016 - 1)
    assert _paths(_data(loader="auto"), CUDA) is None


def test_device_asked_for_on_a_gpu_too_small_is_refused_with_what_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_data_module, "_free_bytes", lambda device: 1000)
    with pytest.raises(ConfigError, match=r"data\.loader: device: the dataset takes .* allowed here: cpu or auto"):
        _paths(_data(loader="device"), CUDA)


def test_validation_on_the_device_path_measures_what_the_cpu_path_measures() -> None:
    cfg = _data(loader="device", image_size=64, synthetic={"n_images": 24})
    config = TrainConfig.model_validate(
        {"model": {"encoder": "resnet18"}, "data": cfg.model_dump(), "device": "cpu", "seed": 3}
    )
    torch.manual_seed(0)
    model = build_model(config.model)
    runner = EpochRunner.build(config, model, device=CPU, steps_per_epoch=1)
    train_ds, val_ds = build_datasets(cfg, model=ModelConfig(), seed=0)
    paths = device_batches(train_ds, val_ds, cfg, channels=3, edge_width=2, device=CPU)
    assert paths is not None
    on_device = runner.validate(paths[1])
    device_ious = runner.image_ious
    on_cpu = runner.validate(build_loader(val_ds, cfg, train=False))
    # Only the uint8 storage differs (half a level at most): the metrics agree closely.
    for key, value in on_cpu.items():
        assert on_device[key] == pytest.approx(value, abs=2e-3), key
    assert device_ious == pytest.approx(runner.image_ious, abs=1e-2)


@pytest.mark.slow
def test_the_device_path_trains_to_the_same_iou_as_the_cpu_path(tmp_path: Path) -> None:
    """Same data, model and epochs, three seeds each: the best validation IoU of the two paths agree
    within the spread between seeds."""

    def best_iou(loader: str, seed: int) -> float:
        config = TrainConfig.model_validate(
            {
                "model": {"encoder": "resnet18"},
                "data": {"image_size": 64, "batch_size": 8, "loader": loader, "synthetic": {"n_images": 64}},
                "optim": {"lr": 3.0e-3},
                "epochs": 5,
                "seed": seed,
                "device": "cpu",
            }
        )
        return train(config).best_val_iou

    cpu = [best_iou("cpu", seed) for seed in range(3)]
    device = [best_iou("device", seed) for seed in range(3)]
    print(f"best IoU, cpu path {cpu}, device path {device}")
    assert min(cpu + device) > 0.5, (cpu, device)  # both learned the shapes
    spread = max(statistics.stdev(cpu), statistics.stdev(device), 0.01)
    assert abs(statistics.mean(cpu) - statistics.mean(device)) < 3 * spread, (cpu, device)
