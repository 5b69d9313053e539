"""Images are normalised with the statistics the model's encoder was pretrained on, in training (CPU loader,
device loader, patches), validation and prediction alike; checked against values computed here by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from edgesearch.errors import ConfigError
from edgesearch.trainer import TrainConfig
from edgesearch.trainer.config import DataConfig, ModelConfig
from edgesearch.trainer.data import build_datasets, build_loader
from edgesearch.trainer.device_data import DeviceBatches, device_batches
from edgesearch.trainer.device_patches import DeviceImages, DevicePatches
from edgesearch.trainer.input_stats import IMAGENET_MEAN, IMAGENET_STD, model_normalization, unit_statistics
from edgesearch.trainer.model import build_model
from edgesearch.trainer.patch_data import PatchDataset, WholeImages
from edgesearch.trainer.predict import checkpoint_config, load_model, predict_image

CPU = torch.device("cpu")
SIDE = 32
"""The side of every image here, and of the patch, the window and the resize: each step sees whole images."""

LITE0 = {"arch": "unet", "encoder": "tu-tf_efficientnet_lite0", "encoder_weights": "packaged"}
"""EfficientNet-Lite0's packaged weights, trained on inputs scaled to -1..1 (mean = std = 0.5)."""
DEVICE: dict[str, Any] = {"channels": 3, "edge_width": 2, "device": CPU}
"""``device_batches``' arguments: the device path on the CPU."""


def _write_folder(root: Path, n: int = 4) -> list[np.ndarray]:
    """``n`` random 8-bit RGB images with square masks under ``root``; returns the images."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        image = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        mask = np.zeros((SIDE, SIDE), np.uint8)
        mask[4:20, 6:22] = 255
        for part, array in (("images", image), ("masks", mask)):
            (root / part).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / part / f"{i}.png")
        images.append(image)
    return images


def _scaled_to_minus_one_one(images: list[np.ndarray]) -> list[torch.Tensor]:
    """Each (H, W, 3) 8-bit image as (3, H, W) float32 ``(x - 0.5) / 0.5`` of its 0..1 pixels."""
    return [torch.from_numpy((image.astype(np.float32) / 255 - 0.5) / 0.5).permute(2, 0, 1) for image in images]


def _is_one_of(image: torch.Tensor, expected: list[torch.Tensor]) -> bool:
    return any(torch.allclose(image, candidate, atol=1e-5) for candidate in expected)


def _data(root: Path, **fields: Any) -> DataConfig:
    return DataConfig.model_validate(
        {"root": root, "batch_size": 2, "num_workers": 0, "augment": False, "loader": "cpu"} | fields
    )


def test_lite0_packaged_patch_batches_and_whole_validation_images_are_the_image_at_minus_one_one(
    tmp_path: Path,
) -> None:
    expected = _scaled_to_minus_one_one(_write_folder(tmp_path))
    cfg = _data(tmp_path, patch_size=SIDE)
    train_ds, val_ds = build_datasets(cfg, model=ModelConfig(**LITE0), seed=0)
    patches = PatchDataset(train_ds, cfg, edge_width=2)
    patches.reseed(0)
    batch, _ = next(iter(build_loader(patches, cfg, train=True)))
    assert batch.shape == (2, 3, SIDE, SIDE)
    assert all(_is_one_of(image, expected) for image in batch)
    assert all(_is_one_of(image, expected) for image, _ in WholeImages(val_ds, cfg))
    # The device path of the same data: the images kept whole there, and the patches cut there.
    on_device = device_batches(train_ds, val_ds, cfg.model_copy(update={"loader": "device"}), **DEVICE)
    assert on_device is not None
    device_patches, device_images = on_device
    assert isinstance(device_patches, DevicePatches) and isinstance(device_images, DeviceImages)
    assert all(_is_one_of(image, expected) for batch, _ in device_patches for image in batch)
    assert all(_is_one_of(image, expected) for image, _ in device_images)


def test_lite0_packaged_resized_batches_are_the_image_at_minus_one_one(tmp_path: Path) -> None:
    expected = _scaled_to_minus_one_one(_write_folder(tmp_path))
    cfg = _data(tmp_path, image_size=SIDE)
    train_ds, val_ds = build_datasets(cfg, model=ModelConfig(**LITE0), seed=0)
    for dataset, train in ((train_ds, True), (val_ds, False)):
        batch, _ = next(iter(build_loader(dataset, cfg, train=train)))
        assert all(_is_one_of(image, expected) for image in batch)
    on_device = device_batches(train_ds, val_ds, cfg.model_copy(update={"loader": "device"}), **DEVICE)
    assert on_device is not None
    for batches in on_device:
        assert isinstance(batches, DeviceBatches)
        assert all(_is_one_of(image, expected) for batch, _ in batches for image in batch)


@pytest.mark.parametrize("data", [{"patch_size": SIDE}, {"image_size": SIDE}], ids=["sliding-window", "resize"])
def test_predict_feeds_a_lite0_packaged_model_the_image_at_minus_one_one(tmp_path: Path, data: dict[str, Any]) -> None:
    """Through what ``edgesearch predict`` reads: a run directory's config.json and best.pt."""
    config = TrainConfig.model_validate({"model": LITE0, "data": {"batch_size": 2} | data, "device": "cpu"})
    (tmp_path / "config.json").write_text(json.dumps(config.model_dump(mode="json")))
    untrained = build_model(config.model.model_copy(update={"encoder_weights": None}))
    torch.save(untrained.state_dict(), tmp_path / "best.pt")
    read_back = checkpoint_config(tmp_path / "best.pt")
    model = load_model(read_back, tmp_path / "best.pt", device=CPU)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(args[0].clone()))
    image = np.random.default_rng(1).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    predict_image(model, image, config=read_back)
    (expected,) = _scaled_to_minus_one_one([image])
    assert len(seen) == 1 and seen[0].shape == (1, 3, SIDE, SIDE)
    torch.testing.assert_close(seen[0][0], expected)


def test_a_run_whose_weights_file_is_not_here_predicts_with_imagenets_statistics(tmp_path: Path) -> None:
    # The file the run started from may be on the training machine only: it is not needed to predict.
    model = {"arch": "unet", "encoder": "resnet18", "encoder_weights": "/elsewhere/encoder.pt"}
    stored = TrainConfig.model_validate({"model": {**model, "encoder_weights": None}}).model_dump(mode="json")
    stored["model"] = model
    (tmp_path / "config.json").write_text(json.dumps(stored))
    torch.save({}, tmp_path / "best.pt")
    read_back = checkpoint_config(tmp_path / "best.pt")
    assert read_back.model.encoder_weights is None
    assert model_normalization(read_back.model) == (IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize(
    "model",
    [
        {"encoder": "mobilenet_v2", "encoder_weights": "packaged"},
        {"encoder": "resnet18", "encoder_weights": None},
        {"encoder": "tu-tf_efficientnet_lite0", "encoder_weights": None},
    ],
    ids=["mobilenet_v2-packaged", "resnet18-scratch", "lite0-scratch"],
)
def test_mobilenet_v2_packaged_and_scratch_training_keep_imagenets_statistics(model: dict[str, Any]) -> None:
    assert model_normalization(ModelConfig(**model)) == (IMAGENET_MEAN, IMAGENET_STD)
    grey = model_normalization(ModelConfig(**model, in_channels=1))
    assert grey == ((float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),))


def test_lite0_packaged_grey_and_multichannel_images_get_the_average_of_its_statistics() -> None:
    for channels in (1, 2, 5):
        config = ModelConfig(**LITE0, in_channels=channels)
        assert model_normalization(config) == ((0.5,) * channels, (0.5,) * channels)


@pytest.mark.parametrize("encoder", ["tu-tf_efficientnet_lite0", "tu-dpn68"])
def test_imagenet_weights_of_a_timm_encoder_get_smps_statistics(encoder: str) -> None:
    from segmentation_models_pytorch.encoders import get_preprocessing_params

    params = get_preprocessing_params(encoder, pretrained="imagenet")
    mean, std = model_normalization(ModelConfig(encoder=encoder, encoder_weights="imagenet"))
    assert (mean, std) == (tuple(params["mean"]), tuple(params["std"]))
    assert (mean, std) != (IMAGENET_MEAN, IMAGENET_STD)


def test_statistics_of_a_network_fed_bytes_are_rescaled_to_unit_pixels() -> None:
    params = {"input_range": [0, 255], "mean": [127.5, 63.75, 0.0], "std": [255.0, 31.875, 127.5]}
    assert unit_statistics(params) == ((0.5, 0.25, 0.0), (1.0, 0.125, 0.5))
    assert unit_statistics({"input_range": [0, 1], "mean": [0.5] * 3, "std": [0.25] * 3}) == ((0.5,) * 3, (0.25,) * 3)


def test_weights_smp_has_no_statistics_for_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.encoder_weights: .*'instagram'.*'resnet18'"):
        model_normalization(ModelConfig(encoder="resnet18", encoder_weights="instagram"))


@pytest.mark.slow  # starts processes
def test_imagenet_statistics_out_of_reach_fall_back_to_imagenets_but_training_still_needs_the_weights(
    tmp_path: Path,
) -> None:
    # smp's own encoders keep their statistics on the Hugging Face Hub, beside the weights. Predicting with a
    # trained checkpoint needs no weights from the Hub: offline, the statistics fall back to ImageNet's, with a
    # warning. Training needs the weights, so offline it still stops, exit 2, naming them.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    code = (
        "from edgesearch.trainer.config import ModelConfig\n"
        "from edgesearch.trainer.input_stats import model_normalization\n"
        "print(model_normalization(ModelConfig(encoder='resnet18', encoder_weights='imagenet')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str((IMAGENET_MEAN, IMAGENET_STD))
    assert "Hugging Face Hub" in done.stderr and "using ImageNet's statistics" in done.stderr
    trainer = {"model": {"encoder": "resnet18", "encoder_weights": "imagenet"}, "device": "cpu"}
    (tmp_path / "trainer.yaml").write_text(yaml.safe_dump(trainer))
    args = ["train", str(tmp_path / "trainer.yaml"), "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-m", "edgesearch", *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert "model.encoder_weights" in done.stderr and "'resnet18'" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()
