"""The files of ``predict``, whatever runs the model: inputs found and checked, masks and overlays written.

``edgesearch predict`` with a PyTorch checkpoint (:mod:`~edgesearch.trainer.predict`) and with an
exported ONNX model (:mod:`~edgesearch.trainer.onnx_model`) share everything here: which files the
inputs name, the options checked before anything is loaded, every input read once up front so that a
bad file stops the run before the first write, and the masks (0/255 PNGs at the input's size, written
atomically) and overlays. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from edgesearch.errors import ConfigError, DataError, first_line, raise_problems
from edgesearch.files import atomic_write, check_new_or_empty
from edgesearch.trainer.config import IMAGE_SUFFIXES
from edgesearch.trainer.images import check_nan, read_image, to_display
from edgesearch.trainer.overlay import edge_overlay
from edgesearch.trainer.sliding_numpy import BLENDS

__all__ = [
    "ProbabilityMaps",
    "binary_mask",
    "check_inputs",
    "check_output_options",
    "check_threshold",
    "check_window_options",
    "collect_inputs",
    "output_paths",
    "read_input",
    "write_predictions",
]

ProbabilityMaps = Callable[[list[np.ndarray]], list[np.ndarray]]
"""A model's predictions as ``predict`` writes them: (H, W, C) images as read in, one (H, W) float32
probability map per image out, each at its image's size."""


def check_threshold(threshold: float) -> None:
    """Raise a ConfigError for a threshold outside (0, 1)."""
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold: {threshold!r} is out of range; allowed: 0 < x < 1")


def check_output_options(*, threshold: float, out_dir: Path) -> None:
    """Raise a UserError for a threshold outside (0, 1) or an ``out_dir`` that is not new or empty.

    Cheap and offline: the CLI calls it before it loads a study or a checkpoint.
    """
    check_threshold(threshold)
    check_new_or_empty(out_dir, label="--out")


def check_window_options(
    *, overlap: float | None = None, blend: str | None = None, resizes_to: int | None = None
) -> None:
    """Raise one :class:`ConfigError` naming every bad option: ``overlap`` outside 0 <= x < 1, an unknown
    ``blend``, and either of them for a model that resizes every image to a square of side ``resizes_to``
    (its ``data.image_size``; None: a model trained on patches, or one not known yet), which has no windows."""
    problems: list[str] = []
    if overlap is not None and (
        isinstance(overlap, bool) or not isinstance(overlap, int | float) or not 0.0 <= overlap < 1.0
    ):
        problems.append(f"overlap: {overlap!r} is out of range; allowed: 0 <= x < 1")
    if blend is not None and blend not in BLENDS:
        problems.append(f"blend: {blend!r} is not allowed; allowed: {', '.join(BLENDS)}")
    if resizes_to is not None:
        for name, value in (("overlap", overlap), ("blend", blend)):
            if value is not None:
                problems.append(
                    f"{name}: {value!r} is for the sliding window of a model trained on patches; this model "
                    f"resizes every image to data.image_size {resizes_to}, one pass each"
                )
    raise_problems(problems, ConfigError)


def collect_inputs(inputs: Sequence[Path]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders as their images sorted by name.

    Raises DataError naming every input that does not exist and every folder without images.
    """
    files: list[Path] = []
    problems: list[str] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                problems.append(f"{path}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    if not inputs:
        problems.append("no input images given")
    raise_problems(problems, DataError)
    return files


def output_paths(files: Sequence[Path], out_dir: Path, *, overlay: bool) -> list[tuple[Path, Path | None]]:
    """(mask, overlay) paths per input; two inputs that would write the same file are a DataError."""
    written: dict[Path, Path] = {}
    problems: list[str] = []
    paths: list[tuple[Path, Path | None]] = []
    for file in files:
        mask = out_dir / f"{file.stem}.png"
        picture = out_dir / f"{file.stem}.overlay.png" if overlay else None
        for target in (mask, picture):
            if target is None:
                continue
            if target in written:
                problems.append(f"{file}: would overwrite {target.name}, also written for {written[target]}")
            written[target] = file
        paths.append((mask, picture))
    raise_problems(problems, DataError)
    return paths


def read_input(path: Path, channels: int) -> np.ndarray:
    """The image file as training reads it (:func:`~edgesearch.trainer.images.read_image`); a DataError
    naming the file when it cannot be decoded."""
    try:
        return read_image(path, channels=channels)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable image ({first_line(exc)})") from None


def check_inputs(files: Sequence[Path], *, channels: int, normalize: str) -> None:
    """Read every file once, up front, so that a bad one stops the run before any write: one DataError
    naming each file that cannot be read, or whose NaN pixels ``data.normalize`` would pass to the model."""
    problems: list[str] = []
    for file in files:
        try:
            check_nan(read_input(file, channels), normalize)
        except DataError as exc:
            problems.append(str(exc))
        except ValueError as exc:
            problems.append(f"{file}: {exc}")
    raise_problems(problems, DataError)


def binary_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """The (H, W) uint8 0/1 mask of a probability map: ``>= threshold`` is foreground, as the validation
    metrics count it."""
    # The comparison's bools as 0/1 bytes: a view, no second full-size array.
    return (prob >= threshold).view(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    # Atomic: an interrupted run never leaves a truncated mask behind.
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def write_predictions(
    files: Sequence[Path],
    outputs: Sequence[tuple[Path, Path | None]],
    maps: ProbabilityMaps,
    *,
    channels: int,
    normalize: str,
    threshold: float,
    edge_width: int,
    step: int,
    on_image: Callable[[Path, Path], None] | None = None,
) -> list[Path]:
    """Predict ``files`` ``step`` at a time with ``maps`` and write each one's (mask, overlay) of ``outputs``
    (:func:`output_paths`, whose folder is made); the masks' paths back.

    Images are read with ``channels`` channels, overlays drawn with edge bands of ``edge_width`` pixels over
    the image shown per ``normalize``. ``on_image`` is called with (input, mask path) after each mask is written.
    """
    if outputs:
        outputs[0][0].parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for start in range(0, len(files), step):
        chunk = list(zip(files[start : start + step], outputs[start : start + step], strict=True))
        written += _write_chunk(
            chunk,
            maps,
            channels=channels,
            normalize=normalize,
            threshold=threshold,
            edge_width=edge_width,
            on_image=on_image,
        )
    return written


def _write_chunk(
    chunk: Sequence[tuple[Path, tuple[Path, Path | None]]],
    maps: ProbabilityMaps,
    *,
    channels: int,
    normalize: str,
    threshold: float,
    edge_width: int,
    on_image: Callable[[Path, Path], None] | None,
) -> list[Path]:
    """Predict and write the masks (and overlays) of ``chunk``'s (input, (mask, overlay)) files; the masks'
    paths back. A function of its own so that its images and maps are freed before the next chunk's."""
    images = [read_input(file, channels) for file, _ in chunk]
    probs = maps(images)
    done: list[Path] = []
    for (file, (mask_path, overlay_path)), image, prob in zip(chunk, images, probs, strict=True):
        mask = binary_mask(prob, threshold)
        _save_png(mask * 255, mask_path)
        if overlay_path is not None:
            picture = to_display(image, normalize)
            _save_png(edge_overlay(picture, np.zeros_like(mask), mask, width=edge_width), overlay_path)
        done.append(mask_path)
        if on_image is not None:
            on_image(file, mask_path)
    return done
