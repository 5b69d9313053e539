"""The trainer on real microscopy: DSB 2018 nuclei (``edgesearch.sample_data``), against Otsu's
threshold and a bare PyTorch + smp loop trained alongside on the same tiles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import _bare
from edgesearch.sample_data import NUCLEI_FILES, fetch_nuclei, nuclei_arrays, write_tiles
from edgesearch.trainer import TrainConfig, train

pytestmark = pytest.mark.slow

EPOCHS = 20


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiles(tmp_path_factory.mktemp("nuclei"))


def test_the_source_files_are_the_published_ones_and_the_tiles_cover_them_exactly(nuclei: Path) -> None:
    for name, path in fetch_nuclei().items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == NUCLEI_FILES[name]
    image, labels = nuclei_arrays()
    assert image.shape == labels.shape == (512, 512) and image.dtype == np.uint16
    assert len(np.unique(labels)) > 100  # instance labels, one id per nucleus

    train_names = sorted(p.name for p in (nuclei / "train" / "images").iterdir())
    val_names = sorted(p.name for p in (nuclei / "val" / "images").iterdir())
    assert len(train_names) == 12 and val_names == ["r2c2.png", "r2c3.png", "r3c2.png", "r3c3.png"]
    rebuilt = np.zeros_like(image)
    for split, names in (("train", train_names), ("val", val_names)):
        for name in names:
            row, col = int(name[1]), int(name[3])
            with Image.open(nuclei / split / "images" / name) as tile:
                rebuilt[row * 128 : (row + 1) * 128, col * 128 : (col + 1) * 128] = np.asarray(tile)
            with Image.open(nuclei / split / "masks" / name) as mask:
                window = labels[row * 128 : (row + 1) * 128, col * 128 : (col + 1) * 128]
                assert np.array_equal(np.asarray(mask), window)  # labels kept, not binarised
    assert np.array_equal(rebuilt, image)


def test_default_training_beats_otsu_and_matches_a_bare_smp_loop(nuclei: Path) -> None:
    config = TrainConfig.model_validate(
        {
            "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None, "in_channels": 1},
            "data": {"root": str(nuclei), "image_size": 128, "batch_size": 8, "num_workers": 0},
            "epochs": EPOCHS,
            "device": "cpu",
        }
    )  # everything else (loss, optimiser, schedule) at the trainer's defaults
    ours = train(config).best_val_iou
    bare = _bare.bare_train(nuclei, epochs=EPOCHS, seed=0).best_val_iou
    otsu = _bare.otsu_iou(nuclei)
    assert ours >= otsu, f"edgesearch {ours:.3f} below Otsu's threshold {otsu:.3f}"
    assert ours >= bare - 0.02, f"edgesearch {ours:.3f} vs bare loop {bare:.3f}"
