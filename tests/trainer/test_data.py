from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from edgesearch.errors import DataError
from edgesearch.trainer.config import DataConfig, ModelConfig
from edgesearch.trainer.data import build_datasets, build_loader, synthetic_sample
from edgesearch.trainer.folders import scan_folder
from edgesearch.trainer.images import binarize_mask
from tests.helpers import write_folder


def test_synthetic_samples_are_a_pure_function_of_seed_and_index() -> None:
    a_img, a_mask = synthetic_sample(3, size=64, seed=7)
    b_img, b_mask = synthetic_sample(3, size=64, seed=7)
    c_img, _ = synthetic_sample(4, size=64, seed=7)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (64, 64, 3) and a_img.dtype == np.uint8
    assert set(np.unique(a_mask)) <= {0, 1} and a_mask.any() and not a_mask.all()


def test_synthetic_split_is_disjoint_and_sized_by_val_fraction() -> None:
    cfg = DataConfig(image_size=32, val_fraction=0.25, synthetic={"n_images": 20, "seed": 1})  # type: ignore[arg-type]
    train, val = build_datasets(cfg, model=ModelConfig(), seed=0)
    assert len(train) == 15 and len(val) == 5
    assert not set(train.indices) & set(val.indices)  # type: ignore[attr-defined]


def test_augmented_batches_keep_masks_binary_and_aligned_shapes() -> None:
    cfg = DataConfig(image_size=64, batch_size=4, num_workers=0, synthetic={"n_images": 8})  # type: ignore[arg-type]
    train, _ = build_datasets(cfg, model=ModelConfig(), seed=0)
    images, masks = next(iter(build_loader(train, cfg, train=True, generator=torch.Generator().manual_seed(0))))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
    assert masks.shape == (4, 1, 64, 64)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    # ImageNet normalisation centres the data roughly around zero.
    assert -1.5 < images.mean().item() < 1.5


def test_loader_workers_deliver_the_same_shapes() -> None:
    cfg = DataConfig(image_size=32, batch_size=4, num_workers=2, synthetic={"n_images": 8})  # type: ignore[arg-type]
    train, _ = build_datasets(cfg, model=ModelConfig(), seed=0)
    batches = list(build_loader(train, cfg, train=True, generator=torch.Generator().manual_seed(0)))
    assert sum(b[0].shape[0] for b in batches) == 4  # 6 train images, drop_last with batch 4


def test_folder_with_train_and_val_subfolders_keeps_the_given_split(tmp_path: Path) -> None:
    write_folder(tmp_path / "d" / "train", n=5)
    write_folder(tmp_path / "d" / "val", n=2, seed=9)
    train, val = scan_folder(tmp_path / "d")
    assert len(train) == 5 and val is not None and len(val) == 2


def test_folder_images_and_masks_are_paired_by_stem_across_suffixes(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=3)
    Image.open(root / "images" / "img00.png").save(root / "images" / "img00.jpg")
    (root / "images" / "img00.png").unlink()
    pairs, val = scan_folder(root)
    assert val is None
    assert [(p.image.name, p.mask.name) for p in pairs] == [
        ("img00.jpg", "img00.png"),
        ("img01.png", "img01.png"),
        ("img02.png", "img02.png"),
    ]


def test_scan_reports_every_broken_file_by_name(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=4)
    (root / "images" / "img01.png").write_bytes(b"garbage")
    Image.new("L", (10, 10)).save(root / "masks" / "img02.png")
    with pytest.raises(DataError) as info:
        scan_folder(root)
    message = str(info.value)
    assert "img01.png: unreadable image" in message
    assert "img02.png: mask is 10x10 but its image is 64x64" in message


def test_scan_reports_unpaired_images(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=2)
    (root / "masks" / "img01.png").unlink()
    with pytest.raises(DataError, match=r"img01.png: image without a mask"):
        scan_folder(root)


def test_scan_rejects_missing_subfolders(tmp_path: Path) -> None:
    (tmp_path / "d" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"masks: folder missing"):
        scan_folder(tmp_path / "d")


def test_binarize_mask_accepts_two_levels_and_labels_but_not_grey_ramps() -> None:
    two = np.array([[0, 255], [255, 0]], np.uint8)
    assert binarize_mask(two).tolist() == [[0, 1], [1, 0]]  # type: ignore[union-attr]
    ones = np.array([[0, 1], [1, 1]], np.uint8)
    assert binarize_mask(ones).tolist() == [[0, 1], [1, 1]]  # type: ignore[union-attr]
    labels = np.zeros((60, 60), np.uint16)
    for k in range(30):  # thirty instances with ids in the thousands
        labels[2 * k : 2 * k + 2, 10:50] = 1000 + 37 * k
    assert binarize_mask(labels).tolist() == (labels != 0).astype(np.uint8).tolist()  # type: ignore[union-attr]
    ramp = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    assert binarize_mask(ramp) is None


def test_binarize_mask_splits_a_jpeg_masks_noise_at_half_range() -> None:
    noisy = np.zeros((100, 100), np.uint8)
    noisy[:, 50:] = 250
    noisy[0, :2] = [3, 7]
    noisy[0, 60] = 245
    noisy[1, 0] = 120  # one pixel of ringing
    split = binarize_mask(noisy, lossy=True)
    assert split is not None and split[:, 50:].all() and not split[:, :50].any()
    assert binarize_mask(np.tile(np.arange(256, dtype=np.uint8), (4, 1)), lossy=True) is None


def test_folder_dataset_resizes_to_image_size(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=4, size=96)
    cfg = DataConfig(root=root, image_size=64, val_fraction=0.25, augment=False)
    train, val = build_datasets(cfg, model=ModelConfig(), seed=0)
    image, mask = val[0]
    assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
    assert len(train) == 3 and len(val) == 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
def test_a_folder_of_compressed_tiffs_is_checked_and_batched_as_written(tmp_path: Path, dtype: type) -> None:
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    written: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    writers = ["lzw", "zlib", "deflate", "zstd", "packbits", "opencv"]
    for index, writer in enumerate(writers):
        image, mask = synthetic_sample(index, size=64, seed=2, channels=1)
        image = image[:, :, 0].astype(dtype) * (257 if dtype == np.uint16 else 1)
        for array, path in ((image, root / "images" / f"{writer}.tif"), (mask * 255, root / "masks" / f"{writer}.tif")):
            if writer == "opencv":
                assert cv2.imwrite(str(path), array.astype(dtype) if array is image else array)  # LZW by default
            else:
                tifffile.imwrite(path, array, compression=writer)
        written[f"{writer}.tif"] = (image, mask)
    cfg = DataConfig(root=root, image_size=64, batch_size=2, num_workers=0, val_fraction=0.2)

    train, val = build_datasets(cfg, model=ModelConfig(in_channels=1), seed=0)

    for dataset in (train, val):
        for index, pair in enumerate(dataset.pairs):  # type: ignore[attr-defined]
            image, mask = dataset.raw(index)
            np.testing.assert_array_equal(image, written[pair.image.name][0][:, :, None])
            np.testing.assert_array_equal(mask, written[pair.image.name][1])
    images, masks = next(iter(build_loader(train, cfg, train=True, generator=torch.Generator().manual_seed(0))))
    assert images.shape == (2, 1, 64, 64) and masks.shape == (2, 1, 64, 64)
    assert torch.isfinite(images).all() and set(masks.unique().tolist()) <= {0.0, 1.0}


def test_masks_named_with_a_suffix_pair_when_data_mask_suffix_says_so(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=4)
    for mask in (root / "masks").iterdir():
        mask.rename(mask.with_name(f"{mask.stem}_mask.png"))
    Image.open(root / "masks" / "img03_mask.png").save(root / "masks" / "img03_mask.tif")
    (root / "masks" / "img03_mask.png").unlink()
    pairs, _ = scan_folder(root, mask_suffix="_mask")
    assert [(p.image.name, p.mask.name) for p in pairs] == [
        ("img00.png", "img00_mask.png"),
        ("img01.png", "img01_mask.png"),
        ("img02.png", "img02_mask.png"),
        ("img03.png", "img03_mask.tif"),
    ]
    train, val = build_datasets(DataConfig(root=root, image_size=64, mask_suffix="_mask"), model=ModelConfig(), seed=0)
    assert len(train) + len(val) == 4
    with pytest.raises(DataError) as info:
        scan_folder(root)
    assert "set data.mask_suffix: _mask" in str(info.value).splitlines()[0]


def test_the_suffix_hint_is_given_only_when_another_suffix_pairs_more(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=4)
    (root / "masks" / "img03.png").rename(root / "masks" / "img03_mask.png")  # one odd name among good ones
    with pytest.raises(DataError) as info:
        scan_folder(root)
    assert "img03_mask.png: mask without an image" in str(info.value)
    assert "mask_suffix" not in str(info.value)
    with pytest.raises(DataError, match=r'masks are named as their images .*: set data.mask_suffix: ""'):
        scan_folder(root, mask_suffix="_mask")


def test_pairing_and_content_problems_are_reported_together(tmp_path: Path) -> None:
    write_folder(tmp_path / "d" / "train", n=4)
    write_folder(tmp_path / "d" / "val", n=2, seed=9)
    root = tmp_path / "d"
    (root / "train" / "masks" / "img01.png").unlink()
    (root / "train" / "images" / "img02.png").write_bytes(b"garbage")
    Image.new("L", (10, 10)).save(root / "val" / "masks" / "img00.png")
    (root / "val" / "masks" / "img01.png").rename(root / "val" / "masks" / "extra.png")
    with pytest.raises(DataError) as info:
        scan_folder(root)
    lines = str(info.value).splitlines()
    assert any("train/images/img01.png: image without a mask" in line for line in lines)
    assert any("val/masks/extra.png: mask without an image" in line for line in lines)
    assert any("train/images/img02.png: unreadable image" in line for line in lines)
    assert any("val/masks/img00.png: mask is 10x10 but its image is 64x64" in line for line in lines)


def test_links_that_lead_nowhere_are_named_not_skipped(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=3)
    (root / "images" / "loop.png").symlink_to("loop.png")
    (root / "images" / "gone.png").symlink_to("moved-away.png")
    (root / "masks" / "ok.png").symlink_to(root / "masks" / "img00.png")  # a link to a file is a file
    (root / "images" / "ok.png").symlink_to(root / "images" / "img00.png")
    with pytest.raises(DataError) as info:
        scan_folder(root)
    message = str(info.value)
    assert "images/loop.png: symbolic link loop" in message
    assert "images/gone.png: broken symbolic link (its target moved-away.png does not exist)" in message
    assert "ok.png" not in message and len(message.splitlines()) == 2


def test_nan_pixels_are_refused_with_imagenet_scaling_and_replaced_with_percentile(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n=3)
    image = np.asarray(Image.open(root / "images" / "img01.png")).astype(np.float32) / 255.0
    (root / "images" / "img01.png").unlink()
    image[9, 9, 1] = np.inf  # imagenet scaling clips it to 1: not a problem
    tifffile.imwrite(root / "images" / "img01.tif", image, photometric="rgb")
    assert len(scan_folder(root, normalize="imagenet")[0]) == 3
    image[5, 7] = np.nan  # all three channels
    tifffile.imwrite(root / "images" / "img01.tif", image, photometric="rgb")
    with pytest.raises(DataError, match=r"img01.tif: has 3 NaN pixel values \(of 12,288\)"):
        scan_folder(root, normalize="imagenet")
    pairs, _ = scan_folder(root, normalize="percentile")  # the decoded image is kept: checked again, not read
    assert len(pairs) == 3
    with pytest.raises(DataError, match=r"img01\.tif: has 3 NaN"):
        scan_folder(root, normalize="imagenet")
