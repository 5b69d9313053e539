"""Real microscopy data for trying the method: nuclei from the 2018 Data Science Bowl, as tiles or whole images.

The source is the 512x512 fluorescence image of nuclei and its instance-label mask that the
``stardist`` package ships as ``stardist/data/images/img2d.tif`` and ``mask2d.tif`` (from the
2018 Kaggle Data Science Bowl; Caicedo et al., "Nucleus segmentation across imaging experiments:
the 2018 Data Science Bowl", Nature Methods 16, 1247-1253, 2019; the stage-1 images are BBBC038v1
of the Broad Bioimage Benchmark Collection, CC0; stardist itself is BSD-3-Clause). Only the
package's wheel is fetched, with pip, from the package index pip is configured for; the two files
are checked against their SHA-256 and cached, so later runs are offline. Nothing binary is committed.

``write_tiles`` cuts tiles of 128 px with the split fixed in space: the bottom-right quarter is
the validation split (4 tiles side by side), and the other three quarters give 33 training tiles
at a stride of 64 px (they overlap; none reaches into the validation quarter). Images stay 16-bit
and masks stay instance labels, the way microscopy data arrives (the trainer reads both).

``write_whole`` writes the source at native resolution instead, as whole full-width images split
by rows: rows 0-191 and 192-383 are the two training images (192x512 each) and rows 384-511 the
validation image (128x512), ``{train,val}/{images,masks}/rowsSTART-END.png`` (16-bit PNGs, instance
labels), no validation row in a training image: what ``studies/nuclei.yaml`` trains on, at native
resolution (patches to train, whole images by sliding window to validate and predict).

    python -m edgesearch.sample_data data/nuclei            # tiles
    python -m edgesearch.sample_data data/nuclei --whole    # whole images
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgesearch.errors import RunFailed, UserError
from edgesearch.files import check_folder_path
from edgesearch.wheel_files import cache_dir, fetch_from_wheel

__all__ = [
    "NUCLEI_FILES",
    "SOURCE",
    "STRIDE",
    "TILE",
    "USAGE",
    "WHOLE_TRAIN_ROWS",
    "WHOLE_VAL_ROWS",
    "cache_dir",
    "fetch_nuclei",
    "main",
    "nuclei_arrays",
    "tile_windows",
    "whole_name",
    "write_tiles",
    "write_whole",
]

SOURCE = "stardist==0.9.2"
"""The package (and version) whose wheel holds the files."""

NUCLEI_FILES = {
    "img2d.tif": "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
    "mask2d.tif": "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
}
"""File name inside ``stardist/data/images/`` -> its SHA-256."""

TILE = 128
STRIDE = 64
"""Training tiles start every STRIDE px: overlapping tiles give a small image more distinct batches."""

WHOLE_TRAIN_ROWS = ((0, 192), (192, 384))
"""Row ranges [start, stop) of the source that are the whole training images (full width)."""

WHOLE_VAL_ROWS = ((384, 512),)
"""Row range [start, stop) of the source that is the whole validation image (full width): below every training row."""

_WHOLE_SPLITS = {"train": WHOLE_TRAIN_ROWS, "val": WHOLE_VAL_ROWS}

USAGE = "usage: python -m edgesearch.sample_data OUT_DIR [--whole]"


def fetch_nuclei(cache: Path | None = None) -> dict[str, Path]:
    """The cached source files (name -> path), fetched from the package index the first time.

    Raises RunFailed when pip cannot get the wheel (no index reachable) or a file's digest differs.
    """
    members = {f"stardist/data/images/{name}": digest for name, digest in NUCLEI_FILES.items()}
    return fetch_from_wheel(SOURCE, members, (cache or cache_dir()) / "nuclei-dsb2018")


def nuclei_arrays(cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image uint16 (512, 512), instance labels uint16 (512, 512)) of the source."""
    import tifffile

    paths = fetch_nuclei(cache)
    return tifffile.imread(paths["img2d.tif"]), tifffile.imread(paths["mask2d.tif"])


def tile_windows(size: int) -> dict[str, list[tuple[int, int]]]:
    """Top-left corners (row, col) of the tiles of a ``size`` x ``size`` image, by split."""
    half = size // 2
    val = [(row, col) for row in range(half, size, TILE) for col in range(half, size, TILE)]
    starts = range(0, size - TILE + 1, STRIDE)
    # A training tile must stay out of the validation quarter: start above it or left of it.
    train = [(row, col) for row in starts for col in starts if row + TILE <= half or col + TILE <= half]
    return {"train": train, "val": val}


def write_tiles(out: Path, *, cache: Path | None = None) -> Path:
    """Write ``out/{train,val}/{images,masks}/yROWxCOL.png`` (16-bit PNGs) and return ``out``.

    An existing complete folder is kept.
    """
    from PIL import Image

    image, labels = nuclei_arrays(cache)
    windows = tile_windows(image.shape[0])
    expected = sum(len(corners) for corners in windows.values())
    if out.is_dir() and len(list(out.glob("*/images/*.png"))) == expected:
        return out
    for split, corners in windows.items():
        for row, col in corners:
            window = np.s_[row : row + TILE, col : col + TILE]
            for kind, array in (("images", image), ("masks", labels)):
                folder = out / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                tile = np.ascontiguousarray(array[window]).astype(np.uint16)
                Image.fromarray(tile).save(folder / f"y{row:03d}x{col:03d}.png")
    return out


def whole_name(rows: tuple[int, int]) -> str:
    """The file name of the whole image of source rows [start, stop): ``rowsSTART-END.png``, END included."""
    start, stop = rows
    return f"rows{start:03d}-{stop - 1:03d}.png"


def _whole_files() -> set[Path]:
    """Every file ``write_whole`` writes, relative to its folder."""
    return {
        Path(split, kind, whole_name(rows))
        for split, regions in _WHOLE_SPLITS.items()
        for rows in regions
        for kind in ("images", "masks")
    }


def _layout_files(out: Path) -> set[Path]:
    """The files in ``out/{train,val}/{images,masks}`` (relative to ``out``) that the trainer would pair."""
    folders = [out / split / kind for split in ("train", "val") for kind in ("images", "masks")]
    return {
        path.relative_to(out)
        for folder in folders
        if folder.is_dir()
        for path in folder.iterdir()
        if not path.name.startswith(".")
    }


def write_whole(out: Path, *, cache: Path | None = None) -> Path:
    """Write ``out/{train,val}/{images,masks}/rowsSTART-END.png``, whole full-width regions of the source
    (16-bit PNGs; see ``WHOLE_TRAIN_ROWS`` and ``WHOLE_VAL_ROWS``), and return ``out``.

    An existing complete folder is kept. Raises UserError when ``out`` cannot be a folder, or when its
    train/val folders hold other files (tiles, say): the trainer would take them into the same splits.
    """
    from PIL import Image

    check_folder_path(out, label="OUT_DIR")
    expected = _whole_files()
    present = _layout_files(out)
    if present == expected:
        return out
    others = sorted(present - expected)
    if others:
        raise UserError(
            f"OUT_DIR {out}: holds {len(others)} other image files (such as {others[0]}) that the trainer "
            "would mix with the whole images; choose a new or empty folder"
        )
    image, labels = nuclei_arrays(cache)
    for split, regions in _WHOLE_SPLITS.items():
        for start, stop in regions:
            for kind, array in (("images", image), ("masks", labels)):
                folder = out / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                region = np.ascontiguousarray(array[start:stop]).astype(np.uint16)
                final = folder / whole_name((start, stop))
                # Written aside, then renamed: an interrupted run leaves no truncated file to be kept.
                partial = folder / f".{final.name}.part"
                Image.fromarray(region).save(partial, format="PNG")
                partial.replace(final)
    return out


def _parse(args: list[str]) -> tuple[Path, bool] | str:
    """(OUT_DIR, whether --whole was given), or what is wrong with ``args``."""
    options = [arg for arg in args if arg.startswith("-")]
    positional = [arg for arg in args if not arg.startswith("-")]
    unknown = [option for option in options if option != "--whole"]
    if unknown:
        return f"unknown option {unknown[0]}"
    if len(options) > 1:
        return "--whole given twice"
    if len(positional) != 1:
        return f"expected one OUT_DIR, got {len(positional)}"
    return Path(positional[0]), bool(options)


def main(argv: list[str] | None = None) -> int:
    parsed = _parse(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, str):
        print(f"{parsed}; {USAGE}", file=sys.stderr)
        return 2
    target, whole = parsed
    try:
        out = write_whole(target) if whole else write_tiles(target)
    except UserError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    if whole:
        print(
            f"nuclei whole images in {out} (train: rows {', '.join(_rows(WHOLE_TRAIN_ROWS))}; "
            f"val: rows {', '.join(_rows(WHOLE_VAL_ROWS))}; from {SOURCE}, cached in {cache_dir()})"
        )
        return 0
    counts = {split: len(list((out / split / "images").iterdir())) for split in ("train", "val")}
    print(
        f"nuclei tiles in {out} (train: {counts['train']}, val: {counts['val']}; "
        f"from {SOURCE}, cached in {cache_dir()})"
    )
    return 0


def _rows(regions: tuple[tuple[int, int], ...]) -> list[str]:
    return [f"{start}-{stop - 1}" for start, stop in regions]


if __name__ == "__main__":
    raise SystemExit(main())
