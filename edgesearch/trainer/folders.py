"""An image folder checked before training: images and masks paired by stem, every problem listed.

Folder layouts (images and masks paired by file stem, a mask's stem being its image's plus
``data.mask_suffix``; png, jpg, jpeg, tif, tiff; read at full depth by :mod:`edgesearch.trainer.images`)::

    DIR/images/*  DIR/masks/*                       -> split by data.val_fraction (seeded)
    DIR/train/{images,masks}  DIR/val/{images,masks}  -> the given split

Mask foreground is any non-zero pixel (labels too). Everything wrong with a folder (unpaired files,
links that lead nowhere, unreadable images, size mismatches, masks that look like images, NaN
pixels that ``normalize: imagenet`` would pass on, no files at all) is found by :func:`scan_folder`
before training starts and reported in one :class:`~edgesearch.errors.DataError` that names the files.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from edgesearch.errors import DataError, raise_problems
from edgesearch.trainer import data_cache
from edgesearch.trainer.config import IMAGE_SUFFIXES
from edgesearch.trainer.images import binarize_mask, check_nan, is_lossy, read_image, read_mask

__all__ = ["Pair", "pair_key", "scan_folder"]


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path


def _link_problem(path: Path) -> str | None:
    """Why the symbolic link ``path`` leads to no file (a loop, a missing target), or None when it does."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path}: symbolic link loop (it leads back to itself); replace it with the file or a link to one"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"{path}: broken symbolic link (its target {os.readlink(path)} does not exist)"
        return f"{path}: symbolic link cannot be followed ({exc.strerror})"
    return None


def _files_by_stem(folder: Path, problems: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        # A link that leads nowhere is a file the user meant to train on: named, not skipped.
        problem = _link_problem(path) if path.is_symlink() else None
        if problem is not None:
            problems.append(problem)
            continue
        if not path.is_file():
            continue
        if path.stem in found:
            problems.append(f"{path}: two files share the stem {path.stem!r} (also {found[path.stem].name})")
            continue
        found[path.stem] = path
    return found


_SEPARATORS = "_-. "
"""Where a mask's name may start adding to its image's (``a_mask``, ``a-label``, ``a.mask``, ``a mask``)."""


def _suffix_hint(masks_dir: Path, images: Collection[str], masks: dict[str, Path], mask_suffix: str) -> str | None:
    """``data.mask_suffix: X``, when the masks' names are their images' plus X more often than plus ``mask_suffix``."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for stem, path in masks.items():
        cuts = [len(stem), *(i for i, c in enumerate(stem) if c in _SEPARATORS and i > 0)]
        for cut in cuts:
            if stem[:cut] in images:
                counts[stem[cut:]] += 1
                examples.setdefault(stem[cut:], path.name)
    if not counts:
        return None
    best, paired = counts.most_common(1)[0]
    if best == mask_suffix or paired <= counts[mask_suffix]:
        return None
    if not best:
        return f'{masks_dir}: masks are named as their images (such as {examples[best]}): set data.mask_suffix: ""'
    return (
        f"{masks_dir}: mask names add {best!r} to their images' (such as {examples[best]}): "
        f"set data.mask_suffix: {best}"
    )


def _pair_folder(folder: Path, problems: list[str], mask_suffix: str = "") -> list[Pair]:
    images_dir, masks_dir = folder / "images", folder / "masks"
    missing = [sub for sub in (images_dir, masks_dir) if not sub.is_dir()]
    problems.extend(f"{sub}: folder missing (expected images/ and masks/ side by side)" for sub in missing)
    if missing:
        return []
    start = len(problems)
    images = _files_by_stem(images_dir, problems)
    named = _files_by_stem(masks_dir, problems)
    if not images and not named:
        problems.append(f"{folder}: empty: no images in images/ ({', '.join(IMAGE_SUFFIXES)})")
        return []
    masks: dict[str, Path] = {}
    unpaired = 0
    for stem, path in named.items():
        if len(stem) > len(mask_suffix) and stem.endswith(mask_suffix):
            masks[stem[: len(stem) - len(mask_suffix)]] = path
        else:
            unpaired += 1
            problems.append(
                f"{path}: mask name does not end with data.mask_suffix {mask_suffix!r} "
                f"(expected IMAGE{mask_suffix}.<png|jpg|tif>)"
            )
    for stem in sorted(masks.keys() - images.keys()):
        problems.append(f"{masks[stem]}: mask without an image (expected {images_dir}/{stem}.<png|jpg|tif>)")
    for stem in sorted(images.keys() - masks.keys()):
        problems.append(
            f"{images[stem]}: image without a mask (expected {masks_dir}/{stem}{mask_suffix}.<png|jpg|tif>)"
        )
    unpaired += len(masks.keys() ^ images.keys())
    hint = _suffix_hint(masks_dir, images.keys(), named, mask_suffix) if unpaired else None
    if hint is not None:  # first, so that a long list of unpaired files does not hide it
        problems.insert(start, hint)
    return [Pair(images[s], masks[s]) for s in sorted(images.keys() & masks.keys())]


def pair_key(pair: Pair, channels: int) -> tuple[Any, ...]:
    return ("pair", data_cache.file_key(pair.image), data_cache.file_key(pair.mask), channels)


def _check_pair(pair: Pair, channels: int, normalize: str, problems: list[str]) -> None:
    """Read and check one pair; a good one is kept decoded (within the cache budget) for training."""
    try:
        key = pair_key(pair, channels)
    except OSError as exc:
        problems.append(f"{pair.image}: unreadable ({exc.strerror})")
        return
    kept = data_cache.decoded().get(key)
    if kept is not None:  # checked before, and unchanged since: only the normalize mode may differ
        _check_nan(pair.image, kept[0], normalize, problems)
        return
    try:
        image = read_image(pair.image, channels=channels)
    except (OSError, ValueError, SyntaxError) as exc:
        problems.append(f"{pair.image}: unreadable image ({exc})")
        return
    _check_nan(pair.image, image, normalize, problems)
    try:
        raw = read_mask(pair.mask)
    except (OSError, ValueError, SyntaxError) as exc:
        problems.append(f"{pair.mask}: unreadable mask ({exc})")
        return
    if raw.shape[:2] != image.shape[:2]:
        problems.append(
            f"{pair.mask}: mask is {raw.shape[1]}x{raw.shape[0]} but its image is "
            f"{image.shape[1]}x{image.shape[0]} (width x height)"
        )
        return
    mask = binarize_mask(raw, lossy=is_lossy(pair.mask))
    if mask is None:
        problems.append(
            f"{pair.mask}: mask is not binary ({len(np.unique(raw))} levels varying like an image's); expected "
            "background 0 and foreground non-zero, e.g. 0/255, 0/1 or instance labels"
        )
        return
    data_cache.decoded().put(key, (image, mask))


def _check_nan(path: Path, image: np.ndarray, normalize: str, problems: list[str]) -> None:
    try:
        check_nan(image, normalize)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")


def scan_folder(
    root: Path, *, channels: int = 3, normalize: str = "auto", mask_suffix: str = ""
) -> tuple[list[Pair], list[Pair] | None]:
    """Pair and check every file under ``root``; returns (train, val) or (all, None).

    A mask is paired with the image whose stem its own stem is, less ``mask_suffix``. Raises
    DataError listing the problems (the first few of them) when any file is broken: unpaired files
    and broken content together, so that one run shows them all. A folder checked before in this
    process, none of whose files changed since, is not read again.
    """
    if not root.is_dir():
        raise DataError(f"data.root: {root}: no such folder")
    split = (root / "train").is_dir() or (root / "val").is_dir()
    parts = [root / "train", root / "val"] if split else [root]
    folders = [part / sub for part in parts for sub in ("images", "masks")]
    key = (str(root.resolve()), channels, normalize, mask_suffix)
    seen = data_cache.fingerprint(folders)
    kept = data_cache.scan_result(key, seen)
    if kept is not None:
        return cast(tuple[list[Pair], list[Pair] | None], kept)
    problems: list[str] = []
    if split:
        train = _pair_folder(root / "train", problems, mask_suffix)
        val: list[Pair] | None = _pair_folder(root / "val", problems, mask_suffix)
    else:
        train, val = _pair_folder(root, problems, mask_suffix), None
    for pair in [*train, *(val or [])]:
        _check_pair(pair, channels, normalize, problems)
    raise_problems(problems, DataError)
    data_cache.keep_scan(key, folders, (train, val), seen=seen)
    return train, val
