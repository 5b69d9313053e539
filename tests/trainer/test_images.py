"""Images and masks at full depth (edgesearch.trainer.images), against values written by the test itself."""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from edgesearch.trainer.images import (
    MAX_IMAGE_PIXELS,
    binarize_mask,
    is_lossy,
    read_image,
    read_mask,
    resolve_mode,
    to_display,
    to_unit_range,
)
from tests.helpers import write_page_stack


def _twelve_bit(height: int = 40, width: int = 50, seed: int = 0) -> np.ndarray:
    """A dim 12-bit microscopy-like image in a 16-bit container: values 100..4000, most below 1200."""
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0, 200.0, (height, width)) + 100
    image[10:20, 10:30] += 2500
    return np.clip(image, 0, 4095).astype(np.uint16)


def test_a_16_bit_png_is_read_with_every_value_kept(tmp_path: Path) -> None:
    image = _twelve_bit()
    Image.fromarray(image).save(tmp_path / "a.png")
    grey = read_image(tmp_path / "a.png", channels=1)
    assert grey.dtype == np.uint16 and grey.shape == (40, 50, 1)
    np.testing.assert_array_equal(grey[:, :, 0], image)
    rgb = read_image(tmp_path / "a.png", channels=3)
    assert rgb.shape == (40, 50, 3) and all(np.array_equal(rgb[:, :, c], image) for c in range(3))


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((40, 50), np.uint16), ((40, 50, 3), np.uint16), ((3, 40, 50), np.uint16), ((40, 50), np.float32)],
    ids=["grey-16", "hwc-16", "chw-16", "float"],
)
def test_tiffs_are_read_at_full_depth_channels_last(tmp_path: Path, shape: tuple[int, ...], dtype: type) -> None:
    rng = np.random.default_rng(1)
    data = (rng.random(shape) * (60000 if dtype == np.uint16 else 3.5)).astype(dtype)
    planar = {"photometric": "rgb", "planarconfig": "separate"} if shape[0] == 3 else {}
    tifffile.imwrite(tmp_path / "a.tif", data, **planar)
    channels = 1 if len(shape) == 2 else 3
    read = read_image(tmp_path / "a.tif", channels=channels)
    assert read.dtype == dtype
    expected = data[:, :, None] if len(shape) == 2 else (np.moveaxis(data, 0, -1) if shape[0] == 3 else data)
    np.testing.assert_array_equal(read, expected)


def test_a_stack_of_pages_that_are_not_channels_is_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((7, 40, 50), np.uint16))
    with pytest.raises(ValueError, match="has 7 pages of 50x40"):
        read_image(tmp_path / "stack.tif", channels=3)


@pytest.mark.parametrize("pixels", [MAX_IMAGE_PIXELS + 10**6, 4 * MAX_IMAGE_PIXELS], ids=["above-limit", "pil-bomb"])
def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(tmp_path: Path, pixels: int) -> None:
    side = int(pixels**0.5) + 1
    path = tmp_path / "bomb.png"
    # A real 1x1 PNG whose header is then made to claim side x side pixels (with a valid CRC).
    Image.new("1", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = side.to_bytes(4, "big") + side.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    for read in (lambda: read_image(path, channels=3), lambda: read_mask(path)):
        with pytest.raises(ValueError, match=r"100,000,000"):
            read()


def test_percentile_maps_the_1st_and_99_8th_percentiles_to_0_and_1() -> None:
    image = _twelve_bit()[:, :, None]
    low, high = np.percentile(image.astype(np.float64), [1.0, 99.8])
    expected = np.clip((image.astype(np.float64) - low) / (high - low), 0.0, 1.0)
    np.testing.assert_allclose(to_unit_range(image, "percentile"), expected, atol=1e-6)
    assert to_unit_range(image, "auto").max() == 1.0  # auto: deeper than 8 bits -> percentile


def test_imagenet_divides_by_the_types_range_and_auto_keeps_8_bit_images_so() -> None:
    eight = np.array([[0, 51, 255]], np.uint8)[:, :, None]
    np.testing.assert_allclose(to_unit_range(eight, "auto")[..., 0], [[0.0, 0.2, 1.0]])
    sixteen = np.array([[0, 65535]], np.uint16)[:, :, None]
    np.testing.assert_allclose(to_unit_range(sixteen, "imagenet")[..., 0], [[0.0, 1.0]])
    assert resolve_mode(eight, "auto") == "imagenet" and resolve_mode(sixteen, "auto") == "percentile"
    flat = np.full((4, 4, 1), 700, np.uint16)
    assert not to_unit_range(flat, "percentile").any()  # no contrast: all zero, never a division by zero


def test_display_pictures_of_deep_images_use_their_range() -> None:
    picture = to_display(_twelve_bit()[:, :, None])
    assert picture.dtype == np.uint8 and picture.max() == 255 and picture.min() == 0


def test_instance_label_masks_at_16_bit_are_foreground_wherever_non_zero(tmp_path: Path) -> None:
    labels = np.zeros((40, 50), np.uint16)
    labels[5:15, 5:15] = 1
    labels[20:30, 20:45] = 4321
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    Image.fromarray(labels).save(tmp_path / "labels.png")
    for name in ("labels.tif", "labels.png"):
        raw = read_mask(tmp_path / name)
        assert raw.dtype == np.uint16
        np.testing.assert_array_equal(binarize_mask(raw), (labels > 0).astype(np.uint8))  # type: ignore[arg-type]


def test_a_palette_mask_is_read_by_index_not_by_colour(tmp_path: Path) -> None:
    indices = np.zeros((10, 10), np.uint8)
    indices[2:5, 2:5] = 1
    mask = Image.fromarray(indices, mode="P")
    mask.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # label 1 is drawn black, as some tools do
    mask.save(tmp_path / "p.png")
    np.testing.assert_array_equal(binarize_mask(read_mask(tmp_path / "p.png")), indices)  # type: ignore[arg-type]


def _smooth(dtype: type, channels: int = 1, height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth gradient with a bright block over the type's range: what lossless codecs must return exactly."""
    top = 255 if dtype == np.uint8 else 65535
    rows, cols = np.mgrid[0:height, 0:width]
    grey = (rows * width + cols) / (height * width) * 0.6 * top
    grey[10:30, 20:40] = 0.9 * top
    planes = [grey * (1.0 - 0.25 * c) for c in range(channels)]
    image = np.stack(planes, axis=-1) if channels > 1 else grey
    return image.astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
@pytest.mark.parametrize("compression", ["lzw", "zlib", "deflate", "zstd", "packbits"])
def test_compressed_tiffs_are_read_as_written(tmp_path: Path, compression: str, dtype: type) -> None:
    for channels in (1, 3):
        data = _smooth(dtype, channels)
        path = tmp_path / f"{compression}-{channels}.tif"
        tifffile.imwrite(path, data, compression=compression, photometric="rgb" if channels == 3 else None)
        read = read_image(path, channels=channels)
        assert read.dtype == dtype
        np.testing.assert_array_equal(read, data if channels == 3 else data[:, :, None])
        np.testing.assert_array_equal(read_mask(path), data if channels == 1 else data.max(axis=2))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
def test_a_tiff_written_by_opencv_is_read_as_written(tmp_path: Path, dtype: type) -> None:
    data = _smooth(dtype)
    path = tmp_path / "cv.tif"
    assert cv2.imwrite(str(path), data)  # LZW-compressed, as OpenCV writes TIFFs by default
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW
    np.testing.assert_array_equal(read_image(path, channels=1), data[:, :, None])
    np.testing.assert_array_equal(read_mask(path), data)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_jpeg_compressed_tiff_is_read_within_jpeg_noise(tmp_path: Path, channels: int) -> None:
    data = _smooth(np.uint8, channels)
    path = tmp_path / "jpeg.tif"
    tifffile.imwrite(path, data, compression="jpeg", photometric="rgb" if channels == 3 else None)
    read = read_image(path, channels=channels).astype(np.float64)
    expected = (data if channels == 3 else data[:, :, None]).astype(np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((read - expected) ** 2))
    assert read.shape == expected.shape and psnr > 35  # what JPEG at its usual quality keeps


def test_a_jpeg_compressed_tiff_mask_is_split_at_half_range_like_a_jpeg(tmp_path: Path) -> None:
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 17:43] = 255
    lossy, lossless = tmp_path / "jpeg.tif", tmp_path / "lzw.tif"
    tifffile.imwrite(lossy, mask, compression="jpeg")
    tifffile.imwrite(lossless, mask, compression="lzw")
    assert is_lossy(lossy) and not is_lossy(lossless)
    raw = read_mask(lossy)
    assert len(np.unique(raw)) > 2  # JPEG's noise around the edges: "non-zero" would take it for foreground
    np.testing.assert_array_equal(binarize_mask(raw, lossy=is_lossy(lossy)), mask // 255)  # type: ignore[arg-type]


def test_a_stack_of_pages_too_large_together_is_refused_from_its_header(tmp_path: Path) -> None:
    path = write_page_stack(tmp_path / "stack.tif", pages=30, side=2000)  # 1.2e8 pixels: 120 MB once decoded
    for read in (lambda: read_image(path, channels=3), lambda: read_mask(path)):
        with pytest.raises(ValueError, match=r"30 pages of 2000x2000 = 120,000,000 pixels; the limit is 100,000,000"):
            read()


def test_a_damaged_tiff_is_a_value_error_naming_what_failed(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _smooth(np.uint16), compression="zstd")
    path.write_bytes(path.read_bytes()[:-200])  # the end of the compressed strip is gone
    with pytest.raises(ValueError):
        read_image(path, channels=1)
