"""End to end: a whole ``edgesearch train`` process against a whole bare PyTorch + smp process.

Both are timed from start to exit (Python start-up and imports included on both sides), on the
same data (the DSB 2018 nuclei of ``edgesearch.sample_data`` as whole images: two 192x512 training
images, one 128x512 validation image), model (U-Net/resnet18 from scratch, one input channel),
batch (8) and epochs (12), both training on random square patches at native resolution, of 64 and
of 128 px, as many per epoch on both sides (the trainer's default count, which covers the training
images once), and validating the whole image by sliding window (overlap 0.5) after every epoch,
taking turns; the ratio is the median of each round's ratio. edgesearch runs with the trainer's
defaults for everything else, so this is what a user pays: its patch plan with foreground-centred
patches and the edge term's targets, its loss with the edge term, the checkpoints, the history, the
curves. The bare loop (``_bare.py``'s ``bare_train_patches``) cuts uniform random patches, trains
with BCE, validates with MONAI's ``sliding_window_inference`` (as edgesearch does underneath) and
saves its best weights. Target: <= 1.10 with patches of 64 px.

    python benchmarks/end_to_end.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

TARGET = 1.10
BATCH = 8
SIZES = {"full": {"sizes": (64, 128), "epochs": 12, "rounds": 3}, "tiny": {"sizes": (64,), "epochs": 1, "rounds": 1}}
HERE = Path(__file__).resolve().parent


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return elapsed


def _edgesearch(root: Path, patch: int, epochs: int, tmp: Path) -> list[str]:
    import yaml

    config = tmp / f"train-{patch}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None, "in_channels": 1},
                "data": {"root": str(root), "patch_size": patch, "batch_size": BATCH},
                "epochs": epochs,
                "device": "cpu",
            }
        )
    )
    out = tmp / f"run-{patch}-{time.monotonic_ns()}"
    return [sys.executable, "-m", "edgesearch", "train", str(config), "--out", str(out)]


def _bare(root: Path, patch: int, epochs: int, tmp: Path) -> list[str]:
    out = tmp / f"bare-{patch}-{time.monotonic_ns()}"
    out.mkdir()
    args = (root, patch, epochs, _patches_per_epoch(root, patch), out)
    return [sys.executable, str(HERE / "_bare_process.py"), *map(str, args)]


def _patches_per_epoch(root: Path, patch: int) -> int:
    """The trainer's default count for the training images: the bare loop cuts as many."""
    from PIL import Image

    from edgesearch.trainer.patches import patches_per_epoch

    sizes = []
    for path in sorted((root / "train" / "images").iterdir()):
        with Image.open(path) as image:
            sizes.append((image.height, image.width))
    return patches_per_epoch(sizes, patch=patch, batch_size=BATCH, requested=None)


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    from edgesearch.sample_data import cache_dir, write_whole

    setup = SIZES["tiny" if args.tiny else "full"]
    root = write_whole(cache_dir() / "nuclei-whole")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for size in setup["sizes"]:
            samples = _common.alternate(
                {
                    "edgesearch": lambda size=size: _timed(_edgesearch(root, size, setup["epochs"], tmp)),
                    "bare": lambda size=size: _timed(_bare(root, size, setup["epochs"], tmp)),
                },
                rounds=setup["rounds"],
                warmup=0,
            )
            ratio = _common.paired_ratio(samples, "edgesearch", "bare")
            medians = {name: _common.median(values) for name, values in samples.items()}
            _common.log(
                f"{size} px: edgesearch {medians['edgesearch']:.1f} s, bare {medians['bare']:.1f} s, x{ratio:.3f}"
            )
            results[str(size)] = {
                "seconds": samples,
                "median_seconds": medians,
                "ratio": ratio,
                "patches_per_epoch": _patches_per_epoch(root, size),
            }
    at_64 = results["64"]["ratio"]
    _common.emit(
        "end_to_end",
        args,
        {
            "setup": {
                **setup,
                "model": "unet/resnet18",
                "batch_size": BATCH,
                "mode": "patches",
                "data": "nuclei whole images (2 train 192x512, 1 val 128x512)",
            },
            "results": results,
            "target": f"<= {TARGET} at 64 px",
            "met": at_64 <= TARGET,
        },
    )


if __name__ == "__main__":
    main()
