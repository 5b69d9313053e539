"""The trainer on real microscopy: DSB 2018 nuclei (``edgesearch.sample_data``), against Otsu's
threshold and a bare PyTorch + smp loop trained alongside on the same tiles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import _bare, method
from edgesearch.sample_data import NUCLEI_FILES, TILE, fetch_nuclei, nuclei_arrays, write_tiles
from edgesearch.trainer import TrainConfig, train
from edgesearch.trainer.config import LossConfig, OptimConfig

EPOCHS = 20


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiles(tmp_path_factory.mktemp("nuclei"))


@pytest.mark.slow  # the first run fetches the source with pip
def test_the_source_files_are_the_published_ones_and_the_tiles_cut_them_exactly(nuclei: Path) -> None:
    for name, path in fetch_nuclei().items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == NUCLEI_FILES[name]
    image, labels = nuclei_arrays()
    assert image.shape == labels.shape == (512, 512) and image.dtype == np.uint16
    assert len(np.unique(labels)) > 100  # instance labels, one id per nucleus

    covered = {"train": np.zeros(image.shape, bool), "val": np.zeros(image.shape, bool)}
    for split in ("train", "val"):
        for path in sorted((nuclei / split / "images").iterdir()):
            row, col = int(path.stem[1:4]), int(path.stem[5:8])
            window = np.s_[row : row + TILE, col : col + TILE]
            with Image.open(path) as tile, Image.open(nuclei / split / "masks" / path.name) as mask:
                assert np.array_equal(np.asarray(tile), image[window])
                assert np.array_equal(np.asarray(mask), labels[window])  # labels kept, not binarised
            covered[split][window] = True
    quarter = np.zeros(image.shape, bool)
    quarter[256:, 256:] = True
    assert np.array_equal(covered["val"], quarter)  # validation: exactly the bottom-right quarter
    assert np.array_equal(covered["train"], ~quarter)  # training: all the rest, never a validation pixel
    assert len(list((nuclei / "train" / "images").iterdir())) == 33


def test_the_trainers_defaults_are_the_benchmarks_default_setting() -> None:
    expected = method.trainer_config(Path("x"), method.SETTINGS[method.DEFAULT_SETTING], epochs=1, seed=0)
    defaults = TrainConfig()
    assert defaults.loss.model_dump() == LossConfig.model_validate(expected["loss"]).model_dump()
    assert defaults.optim.model_dump() == OptimConfig.model_validate(expected["optim"]).model_dump()


@pytest.mark.slow
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
