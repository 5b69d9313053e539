"""Images and masks as stored: read at full depth, then scaled to 0..1 the way microscopy tools do.

Microscopy images are often 12- or 16-bit (stored as uint16) or float TIFFs. They are read as
they are (``tifffile`` for TIFF, with ``imagecodecs`` for the LZW, deflate, zstd and JPEG
compression that OpenCV, Fiji and microscope software write; Pillow for the rest) and scaled to
0..1 by :func:`to_unit_range`, per ``data.normalize``:

* ``imagenet``: divide by the type's full range (255 for 8-bit, 65535 for 16-bit; floats are taken
  as already 0..1). Right for 8-bit photographs, and what ImageNet-pretrained encoders expect.
* ``percentile``: per image, the 1st percentile becomes 0 and the 99.8th becomes 1, clipped: the
  convention of microscopy tools, for dim 12-bit data in a 16-bit container or any float range.
* ``auto`` (the default): ``imagenet`` for 8-bit images, ``percentile`` for deeper ones.

The ImageNet mean and standard deviation are applied after this, in the transform, whatever the
mode. Masks are read at full depth too: background is 0 and any other value is foreground, so
instance-label masks with thousands of ids work as they are. A lossy (JPEG, or JPEG-compressed
TIFF) mask is thresholded at half its range instead, since compression leaves noise around 0 and 255.

A file claiming more than :data:`MAX_IMAGE_PIXELS` pixels (all pages of a TIFF together) is
refused from its header, before anything is decoded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from PIL import Image

from edgesearch.trainer.config import NormalizeMode

__all__ = [
    "MAX_IMAGE_PIXELS",
    "NORMALIZE_MODES",
    "binarize_mask",
    "check_nan",
    "is_lossy",
    "read_image",
    "read_mask",
    "resolve_mode",
    "to_display",
    "to_unit_range",
]

NORMALIZE_MODES: tuple[str, ...] = get_args(NormalizeMode)

MAX_IMAGE_PIXELS = 100_000_000
"""Largest image (width x height) read: a file claiming more is refused before it is decoded,
so a corrupt or hostile header cannot make a worker allocate gigabytes."""

PERCENTILES = (1.0, 99.8)
"""The low and high percentiles that ``percentile`` maps to 0 and 1."""

_TIFF = (".tif", ".tiff")
_LOSSY = (".jpg", ".jpeg")
_LOSSY_TIFF = (6, 7)
"""TIFF compression codes of JPEG (old style and new): noisy near edges, like a JPEG file."""
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float64)
"""ITU-R 601 luma, as Pillow's ``convert("L")`` uses."""


def _check_pixels(height: int, width: int) -> None:
    if height * width > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"is {width}x{height} = {height * width:,} pixels; the limit is {MAX_IMAGE_PIXELS:,} "
            "(split or downscale the image)"
        )


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape = tuple(int(n) for n in series.shape)
            if len(shape) < 2:
                raise ValueError(f"is a TIFF of shape {shape}; expected an image")
            _check_tiff_pixels(shape, str(series.axes))
            return np.asarray(series.asarray())
    except (OSError, ValueError, MemoryError):
        raise
    except Exception as exc:  # tifffile and its codecs raise many kinds for a damaged file
        raise ValueError(f"cannot decode the TIFF ({type(exc).__name__}: {exc})") from exc


def _check_tiff_pixels(shape: tuple[int, ...], axes: str) -> None:
    """Refuse a TIFF whose pages hold more than :data:`MAX_IMAGE_PIXELS` together, from its header alone.

    A pixel's colour samples (``S``, up to 4) are one pixel; every other axis (pages, channels,
    slices) multiplies the count: 400 compressed pages of 4000x4000 are a 7 MB file but 6.4e9 pixels.
    """
    samples = shape[axes.index("S")] if "S" in axes and len(axes) == len(shape) else 1
    pixels = math.prod(shape) // (samples if samples <= 4 else 1)
    if "Y" in axes and "X" in axes and len(axes) == len(shape):
        height, width = shape[axes.index("Y")], shape[axes.index("X")]
    else:
        height, width = _plane(shape)
    pages = pixels // max(height * width, 1)
    if pixels > MAX_IMAGE_PIXELS and pages > 1:
        raise ValueError(
            f"has {pages:,} pages of {width}x{height} = {pixels:,} pixels; the limit is {MAX_IMAGE_PIXELS:,} "
            "for all pages together (split or downscale the image)"
        )
    _check_pixels(height, width)


def _plane(shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of an (H,W), (H,W,C), (C,H,W) or (Z,H,W) array."""
    if len(shape) == 3 and shape[2] <= 4:
        return shape[0], shape[1]
    return shape[-2], shape[-1]


@contextmanager
def _open_pil(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` with our pixel limit instead of Pillow's (a warning, then an exception of its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(path)
        except Image.DecompressionBombError:
            opened = None
        if opened is None:
            raise ValueError(f"is larger than {MAX_IMAGE_PIXELS:,} pixels, the limit (split or downscale the image)")
    with opened:
        _check_pixels(opened.height, opened.width)
        yield opened


def _read_pil(path: Path) -> np.ndarray:
    with _open_pil(path) as opened:
        if opened.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return np.asarray(opened)
        if opened.mode in ("L", "RGB"):
            return np.asarray(opened)
        # Palettes, alpha, 1-bit, other colour spaces: as Pillow converts them for display.
        grey = opened.mode in ("1", "LA", "La")
        return np.asarray(opened.convert("L" if grey else "RGB"))


def _as_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """(H,W,channels) from (H,W), (H,W,C) or (C,H,W); grey is repeated, colour made grey, alpha dropped."""
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3 and array.shape[2] > 4:  # a TIFF with channels or pages first: (C,H,W)
        pages, height, width = array.shape
        if pages > 4 and pages != channels:
            raise ValueError(
                f"has {pages} pages of {width}x{height}; expected one page, or one page per channel "
                f"(model.in_channels is {channels})"
            )
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3:
        raise ValueError(f"has shape {array.shape}; expected a 2-D image with up to 4 channels")
    have = array.shape[2]
    if have == channels:
        return array
    if have == 4 and channels in (1, 3):  # RGBA: the alpha channel is not image content
        array, have = array[:, :, :3], 3
    if have == channels:
        return array
    if have == 1:
        return np.repeat(array, channels, axis=2)
    if have == 3 and channels == 1:
        grey = array.astype(np.float64) @ _GREY_WEIGHTS
        if np.issubdtype(array.dtype, np.integer):
            grey = np.rint(grey)
        return grey.astype(array.dtype)[:, :, None]
    raise ValueError(f"has {have} channels (or pages), model.in_channels is {channels}")


def _native(array: np.ndarray) -> np.ndarray:
    """uint8, uint16 or float32: the depths the rest of the pipeline knows."""
    if array.dtype in (np.uint8, np.uint16, np.float32):
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0 and array.max() <= 65535:
        return array.astype(np.uint16)
    return array.astype(np.float32)


def read_image(path: Path, *, channels: int) -> np.ndarray:
    """(H, W, channels) array at the file's own depth: uint8, uint16 or float32.

    TIFFs (also multi-channel ``(C,H,W)`` and pages stacked as channels) are read with tifffile,
    everything else with Pillow. Raises OSError/ValueError for a file that cannot be decoded, whose
    channels do not fit, or that is larger than :data:`MAX_IMAGE_PIXELS`.
    """
    array = _read_tiff(path) if path.suffix.lower() in _TIFF else _read_pil(path)
    return np.ascontiguousarray(_native(_as_channels(array, channels)))


def read_mask(path: Path) -> np.ndarray:
    """(H, W) mask at the file's own depth; colour masks are reduced to their largest channel."""
    if path.suffix.lower() in _TIFF:
        array = _read_tiff(path)
    else:
        with _open_pil(path) as opened:
            # A palette mask's indices are its labels: its colours could make label 1 black.
            mode = opened.mode
            if mode in ("P", "L", "1", "I;16", "I;16B", "I", "F"):
                array = np.asarray(opened)
            else:
                array = np.asarray(opened.convert("RGBA" if "A" in mode else "RGB"))[:, :, :3]
    if array.ndim == 3:
        array = array.max(axis=2 if array.shape[2] <= 4 else 0)
    if array.ndim != 2:
        raise ValueError(f"has shape {array.shape}; expected a 2-D mask")
    return array


def binarize_mask(raw: np.ndarray, *, lossy: bool = False) -> np.ndarray | None:
    """0/1 uint8 mask from a stored mask, or None when it does not look like one.

    Lossless files: every non-zero value is foreground (0/1, 0/255, instance labels), unless the
    values vary from pixel to pixel like an image's (more than a quarter of neighbouring pixels
    differ): an image saved among the masks. ``lossy`` (JPEG): exactly two values, or nearly all
    pixels at the two extremes, which are then split at half the range.
    """
    values = np.unique(raw)
    binary: np.ndarray = (raw != 0).astype(np.uint8)
    if len(values) <= 2:
        return binary
    if lossy:
        top = 255.0 if raw.dtype == np.uint8 else float(values[-1])
        extreme = np.count_nonzero((raw <= 0.06 * top) | (raw >= 0.94 * top))
        if extreme >= 0.99 * raw.size:
            split: np.ndarray = (raw >= 0.5 * top).astype(np.uint8)
            return split
        return None
    pairs = max(raw[:, 1:].size + raw[1:, :].size, 1)
    changes = np.count_nonzero(raw[:, 1:] != raw[:, :-1]) + np.count_nonzero(raw[1:, :] != raw[:-1, :])
    if changes > 0.25 * pairs:
        return None
    return binary


def is_lossy(path: Path) -> bool:
    """Whether ``path`` is stored with lossy compression: a JPEG file, or a JPEG-compressed TIFF."""
    if path.suffix.lower() in _TIFF:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                return int(tif.pages[0].compression) in _LOSSY_TIFF
        except Exception:  # an unreadable file is reported by whoever reads its pixels
            return False
    return path.suffix.lower() in _LOSSY


def check_nan(image: np.ndarray, mode: str) -> None:
    """Raise ValueError when ``image`` holds NaN values that ``data.normalize`` ``mode`` would pass to the model.

    ``imagenet`` clips a float image to 0..1, which turns infinities into 0 and 1 but leaves NaN
    as it is: the loss is NaN from the first batch. ``percentile`` replaces NaN by the image's low
    end. Integer images hold none; for a float image this costs one ``min`` over the decoded array.
    """
    if not np.issubdtype(image.dtype, np.floating) or resolve_mode(image, mode) != "imagenet":
        return
    if image.size == 0 or not np.isnan(image.min()):  # min propagates NaN: one pass, no mask array
        return
    nan = int(np.count_nonzero(np.isnan(image)))
    raise ValueError(
        f"has {nan:,} NaN pixel values (of {image.size:,}), which data.normalize: imagenet passes to the "
        "model; replace them in the file, or use data.normalize: percentile (it maps them to the image's low end)"
    )


def resolve_mode(image: np.ndarray, mode: str) -> Literal["imagenet", "percentile"]:
    """What ``auto`` means for this image: ``imagenet`` for 8-bit, ``percentile`` for deeper."""
    if mode == "imagenet" or (mode == "auto" and image.dtype == np.uint8):
        return "imagenet"
    if mode in ("auto", "percentile"):
        return "percentile"
    raise ValueError(f"unknown normalize mode {mode!r}; allowed: {', '.join(NORMALIZE_MODES)}")


def to_unit_range(image: np.ndarray, mode: str = "auto") -> np.ndarray:
    """float32 image in 0..1 (same shape) as ``data.normalize`` says; see the module docstring."""
    # One float copy of the image, scaled in place: each further full-size array would add to the
    # peak memory of predicting a large image whole.
    data = image.astype(np.float32)
    if resolve_mode(image, mode) == "imagenet":
        if image.dtype == np.uint8:
            data /= 255.0
        elif image.dtype == np.uint16:
            data /= 65535.0
        else:
            np.clip(data, 0.0, 1.0, out=data)
        return data
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros_like(data)
    low, high = (float(v) for v in np.percentile(finite, PERCENTILES))
    del finite
    if high <= low:
        return np.zeros_like(data)
    np.nan_to_num(data, copy=False, nan=low, posinf=high, neginf=low)
    data -= low
    data /= high - low
    np.clip(data, 0.0, 1.0, out=data)
    return data


def to_display(image: np.ndarray, mode: str = "auto") -> np.ndarray:
    """uint8 image for pictures (overlays): 8-bit images as they are, deeper ones scaled by ``mode``."""
    if image.dtype == np.uint8:
        return image
    return np.rint(to_unit_range(image, mode) * 255.0).astype(np.uint8)
