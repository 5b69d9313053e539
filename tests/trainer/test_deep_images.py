"""Training on 12- and 16-bit microscopy-like data: as good as on the same images at 8 bits.

The data are the synthetic shapes turned grey and stored the way microscopes store them: dim
12-bit values (150..1250) in 16-bit PNGs, and 16-bit TIFFs, with 16-bit instance-label masks.
A reader that squeezed them into 8 bits by clipping would hand the model a white picture; the
reference is the same images stored at 8 bits and scaled the same way.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from edgesearch.trainer import TrainConfig, train
from edgesearch.trainer.config import ModelConfig
from edgesearch.trainer.data import build_datasets, synthetic_sample
from edgesearch.trainer.images import read_image

N_IMAGES, SIZE = 32, 64


def _write(root: Path, depth: str) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(N_IMAGES):
        image, mask = synthetic_sample(i, size=SIZE, seed=0)
        grey = image.astype(np.float64).mean(axis=2) / 255.0
        _, labels = cv2.connectedComponents(mask)
        instances = (labels * 1000).astype(np.uint16)  # ids 1000, 2000, ...: an instance-label mask
        if depth == "8-bit":
            Image.fromarray(np.rint(grey * 255).astype(np.uint8)).save(root / "images" / f"{i:02d}.png")
            Image.fromarray(mask * 255).save(root / "masks" / f"{i:02d}.png")
        elif depth == "12-bit":
            Image.fromarray(np.rint(150 + grey * 1100).astype(np.uint16)).save(root / "images" / f"{i:02d}.png")
            Image.fromarray(instances).save(root / "masks" / f"{i:02d}.png")
        else:
            tifffile.imwrite(root / "images" / f"{i:02d}.tif", np.rint(5000 + grey * 40000).astype(np.uint16))
            tifffile.imwrite(root / "masks" / f"{i:02d}.tif", instances)
    return root


def _config(root: Path, normalize: str = "auto") -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
            "data": {"root": str(root), "image_size": SIZE, "batch_size": 8, "num_workers": 0, "normalize": normalize},
            "optim": {"lr": 3.0e-3, "warmup_epochs": 0, "freeze_epochs": 0},
            # Long enough to converge: earlier, runs on near-identical data still differ by when they take off.
            "epochs": 10,
            "device": "cpu",
        }
    )


@pytest.fixture(scope="module")
def eight_bit_iou(tmp_path_factory: pytest.TempPathFactory) -> float:
    """The reference: the same images at 8 bits, scaled the same way (percentile), same seed."""
    root = _write(tmp_path_factory.mktemp("eight"), "8-bit")
    return train(_config(root, normalize="percentile")).best_val_iou


def test_deep_images_reach_the_files_full_range_and_the_masks_every_instance(tmp_path: Path) -> None:
    root = _write(tmp_path / "12", "12-bit")
    image = read_image(root / "images" / "00.png", channels=3)
    assert image.dtype == np.uint16 and image.min() >= 150 and image.max() <= 1250
    train_ds, _ = build_datasets(_config(root).data, model=ModelConfig(), seed=0)
    tensor, mask = train_ds[0]
    # percentile scaling then ImageNet normalisation: a full range of values, not one saturated level
    assert float(tensor.std()) > 0.5
    assert set(np.unique(mask.numpy())) == {0.0, 1.0}


@pytest.mark.slow
@pytest.mark.parametrize("depth", ["12-bit", "16-bit"])
def test_a_model_trained_on_deep_images_is_as_good_as_on_8_bit_ones(
    tmp_path: Path, depth: str, eight_bit_iou: float
) -> None:
    deep = train(_config(_write(tmp_path / depth, depth))).best_val_iou  # auto: percentile for deep images
    assert eight_bit_iou > 0.8, eight_bit_iou  # the reference run learned the shapes
    assert deep >= eight_bit_iou - 0.05, (deep, eight_bit_iou)
