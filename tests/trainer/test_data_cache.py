"""The per-process data cache: a checked folder is not read again until a file changes, decoded
images are kept within the budget, and ``num_workers: auto`` starts loader processes only when
they are needed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from edgesearch.errors import ConfigError, DataError
from edgesearch.trainer import data as data_module
from edgesearch.trainer import data_cache
from edgesearch.trainer import folders as folders_module
from edgesearch.trainer.config import DataConfig, ModelConfig
from edgesearch.trainer.data import build_datasets, loader_workers
from edgesearch.trainer.folders import scan_folder
from tests.helpers import write_folder


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    reads: list[Path] = []
    real = data_module.read_image  # type: ignore[attr-defined]

    def counting(path: Path, **kwargs: Any) -> np.ndarray:
        reads.append(path)
        return real(path, **kwargs)

    for module in (data_module, folders_module):  # decoding reads, and the folder check's
        monkeypatch.setattr(module, "read_image", counting)
    return reads


def test_a_folder_checked_before_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_folder(tmp_path / "data", n=6)
    reads = _count_reads(monkeypatch)
    first = scan_folder(root)
    assert len(reads) == 6
    second = scan_folder(root)
    assert second == first
    assert len(reads) == 6


def test_a_changed_file_is_checked_again_and_its_problem_found(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", n=6)
    scan_folder(root)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(root / "masks" / "img03.png")
    with pytest.raises(DataError, match=r"img03\.png: mask is not binary"):
        scan_folder(root)


def test_an_added_file_is_paired_on_the_next_scan(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", n=6)
    assert len(scan_folder(root)[0]) == 6
    Image.open(root / "images" / "img00.png").save(root / "images" / "extra.png")
    with pytest.raises(DataError, match=r"extra\.png: image without a mask"):
        scan_folder(root)


def test_training_reads_each_image_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_folder(tmp_path / "data", n=8)
    reads = _count_reads(monkeypatch)
    cfg = DataConfig(root=root, image_size=64, batch_size=2)
    for _ in range(2):  # two runs in one process, as a worker's trials are
        train_ds, val_ds = build_datasets(cfg, model=ModelConfig(), seed=0)
        for ds in (train_ds, val_ds):
            for i in range(len(ds)):
                ds[i]
    assert len(reads) == 8


def test_a_kept_image_is_the_decoded_file_and_cannot_be_written(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", n=4)
    train_ds, _ = build_datasets(DataConfig(root=root, image_size=64, batch_size=2), model=ModelConfig(), seed=0)
    image, mask = train_ds.raw(0)
    pair = train_ds.pairs[0]  # type: ignore[attr-defined]
    np.testing.assert_array_equal(image, np.asarray(Image.open(pair.image).convert("RGB")))
    np.testing.assert_array_equal(mask, (np.asarray(Image.open(pair.mask)) > 0).astype(np.uint8))
    with pytest.raises(ValueError, match="read-only"):
        image[0, 0, 0] = 1


def test_nothing_is_kept_beyond_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 64x64 RGB + mask = 16 KiB a pair: a budget of 0 MiB keeps none, and the data is read per epoch.
    monkeypatch.setenv(data_cache.BUDGET_ENV, "0")
    data_cache.clear()
    root = write_folder(tmp_path / "data", n=4)
    reads = _count_reads(monkeypatch)
    train_ds, _ = build_datasets(DataConfig(root=root, image_size=64, batch_size=2), model=ModelConfig(), seed=0)
    assert len(data_cache.decoded()) == 0
    assert not train_ds.load_all()
    train_ds[0]
    train_ds[0]
    assert len(reads) == 4 + 2


def test_the_budget_is_counted_in_array_bytes() -> None:
    cache = data_cache.DecodedCache(budget=100)
    assert cache.put("a", (np.zeros(60, np.uint8),))[0].flags.writeable is False
    kept_not = cache.put("b", (np.zeros(60, np.uint8),))
    assert kept_not[0].flags.writeable  # did not fit: handed back as it was
    assert "a" in cache and "b" not in cache and cache.used == 60


@pytest.mark.parametrize("value", ["-1", "lots", "1.5"])
def test_a_malformed_budget_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(data_cache.BUDGET_ENV, value)
    with pytest.raises(ConfigError, match=f"{data_cache.BUDGET_ENV}: .* allowed: a whole number of MiB >= 0"):
        data_cache.budget_bytes()


# --------------------------------------------------------------------------- num_workers: auto

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("augment", "train", "device", "budget_mb", "expected"),
    [
        (True, True, CPU, None, 0),  # in memory; on a CPU, loader processes only take cores from the step
        (False, True, CUDA, None, 0),  # in memory and nothing to augment
        (True, False, CUDA, None, 0),  # validation is never augmented
        (True, True, CUDA, None, 2),  # a GPU waits while the CPU augments: two processes do it
        (False, True, CPU, "0", 2),  # not in memory: decoding runs in loader processes
    ],
)
def test_auto_workers_start_loader_processes_only_when_needed(
    monkeypatch: pytest.MonkeyPatch,
    augment: bool,
    train: bool,
    device: torch.device,
    budget_mb: str | None,
    expected: int,
) -> None:
    if budget_mb is not None:
        monkeypatch.setenv(data_cache.BUDGET_ENV, budget_mb)
        data_cache.clear()
    cfg = DataConfig(image_size=32, batch_size=4, augment=augment, synthetic={"n_images": 8})
    train_ds, val_ds = build_datasets(cfg, model=ModelConfig(), seed=0)
    dataset = train_ds if train else val_ds
    assert loader_workers(dataset, cfg, train=train, device=device) == min(expected, len(os.sched_getaffinity(0)))


def test_a_number_of_workers_is_used_as_given() -> None:
    cfg = DataConfig(image_size=32, batch_size=4, num_workers=3, synthetic={"n_images": 8})
    train_ds, _ = build_datasets(cfg, model=ModelConfig(), seed=0)
    assert loader_workers(train_ds, cfg, train=True, device=CPU) == 3
