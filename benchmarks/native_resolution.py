"""Native resolution on real whole images: patches + sliding window against the squashed resize and 128-px tiles.

The data are the DSB 2018 nuclei of ``edgesearch.sample_data`` (one 512x512 16-bit fluorescence
image with its instance labels). Three ways to train the same model (U-Net/resnet18 from scratch,
one input channel, batch 8, the trainer's defaults otherwise), with edgesearch's own ``train()``,
the same epochs and seeds, on the same rows of the same image: rows 0-383 train, rows 384-511
(the whole 128x512 validation image) are scored.

- **native**: ``write_whole``'s images (two 192x512 training images, the 128x512 validation
  image), ``data.patch_size: 128``: random patches at native resolution, validation on the whole
  image by sliding window (``trainer/sliding.py``, overlap 0.5, Gaussian blend).
- **squash**: the same whole images with ``data.image_size: 128`` (the old default): every image
  squashed to 128x128; the validation image is predicted by ``trainer/predict.py``'s
  ``predict_image`` (squashed, the probabilities resized back to 128x512).
- **tiles**: 128-px tiles of the same rows (``sample_data``'s own tiles keep the bottom-right
  quarter for validation, other rows than the whole images'): 35 training tiles at a stride of 64
  inside rows 0-383, and the 4 tiles of rows 384-511 for validation, ``data.image_size: 128`` (no
  resizing: the tiles are 128 px); the 4 validation tiles are predicted one by one, each normalised
  alone as in training, and put side by side.

Each run is scored with its ``best.pt`` (the epoch of best val IoU, what a user gets) on the
128x512 validation region at native resolution: IoU, Boundary IoU (d = the edge width, 2), and
object recall by nucleus area (connected components of the true mask, 8-connectivity; a nucleus
is recalled when at least half of its pixels are predicted foreground) in three bins: < 64,
64-256 and > 256 px. Also the same model on the whole 512x512 image (normalised whole, predicted
as its variant predicts: native and tiles by sliding window, squash by ``predict_image``), scored
on rows 384-511. Flip test-time augmentation: the native model's sliding window with ``tta=True``,
its time against the plain window (3 alternating rounds per model, median of the per-round ratios)
and its IoU. Validation cost: the share of each epoch spent in ``EpochRunner.validate_whole``
(median over the epochs after the first, which imports MONAI), for the native runs and for the
nuclei study's trainer settings in patch mode (``studies/nuclei.yaml`` with ``image_size``
dropped: patch 256).

``--grid`` adds what chose the epochs: native with patch 128, patch 128 at 32 patches per epoch
(the pixels of the tiles' 4 steps), patch 256, and tiles, each 40 epochs, with the best val IoU
reached by epoch 20, 30 and 40 (the schedule does not depend on the number of epochs, so a 40-epoch
run's first 20 epochs are the 20-epoch run).

Targets: native >= 0.85 whole-image IoU on the validation region, and within 0.02 of tiles;
validation <= 15% of an epoch at the study's size.

    python benchmarks/native_resolution.py [--tiny] [--grid] [--jobs N] [--json FILE]
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

IOU_TARGET = 0.85
TILES_TOLERANCE = 0.02
VALIDATION_SHARE_TARGET = 0.15

TILE = 128
TILE_STRIDE = 64
TRAIN_ROWS = (0, 384)
VAL_ROWS = (384, 512)
"""The rows of the source that train and that are scored: ``write_whole``'s split (``_roots`` checks)."""

AREA_BINS = (("< 64", 0, 64), ("64-256", 64, 257), ("> 256", 257, 1 << 30))
"""(name, low, high): a nucleus of ``area`` pixels is in the bin where low <= area < high."""

GRID_EPOCHS = (20, 30, 40)
TTA_ROUNDS = 3

SIZES = {
    "full": {"epochs": 40, "seeds": (0, 1, 2), "grid_epochs": 40, "study_epochs": 8},
    "tiny": {"epochs": 1, "seeds": (0,), "grid_epochs": 1, "study_epochs": 1},
}


@dataclass(frozen=True)
class Spec:
    """One way to train: the variant, its epochs and (native) its patch settings."""

    variant: str
    """native, squash or tiles."""
    epochs: int
    patch: int = 128
    patches_per_epoch: int | None = None
    foreground_fraction: float = 0.33
    study: bool = False
    """The nuclei study's trainer settings in patch mode (patch_size left to its default)."""


def comparison(epochs: int) -> dict[str, Spec]:
    return {name: Spec(name, epochs) for name in ("native", "squash", "tiles")}


def grid(epochs: int) -> dict[str, Spec]:
    return {
        "native, patch 128": Spec("native", epochs),
        "native, patch 128, 32 patches/epoch": Spec("native", epochs, patches_per_epoch=32),
        "native, patch 256": Spec("native", epochs, patch=256),
        "tiles": Spec("tiles", epochs),
    }


# --------------------------------------------------------------------------- data


def write_row_tiles(out: Path) -> Path:
    """``out/{train,val}/{images,masks}/yROWxCOL.png``: 128-px tiles of the whole images' rows (16-bit PNGs).

    Training tiles every 64 px inside rows 0-383 (35), validation tiles side by side over rows
    384-511 (4). An existing complete folder is kept.
    """
    from PIL import Image

    from edgesearch.sample_data import nuclei_arrays

    image, labels = nuclei_arrays()
    width = image.shape[1]
    corners = {
        "train": [
            (row, col)
            for row in range(TRAIN_ROWS[0], TRAIN_ROWS[1] - TILE + 1, TILE_STRIDE)
            for col in range(0, width - TILE + 1, TILE_STRIDE)
        ],
        "val": [(VAL_ROWS[0], col) for col in range(0, width, TILE)],
    }
    if len(list(out.glob("*/images/*.png"))) == sum(len(c) for c in corners.values()):
        return out
    for split, places in corners.items():
        for row, col in places:
            for kind, array in (("images", image), ("masks", labels)):
                folder = out / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                tile = np.ascontiguousarray(array[row : row + TILE, col : col + TILE]).astype(np.uint16)
                Image.fromarray(tile).save(folder / f"y{row:03d}x{col:03d}.png")
    return out


def _roots() -> dict[str, Path]:
    from edgesearch.sample_data import WHOLE_TRAIN_ROWS, WHOLE_VAL_ROWS, cache_dir, write_whole

    # The tiles are cut from the whole images' rows: the comparison holds only while that split does.
    assert (WHOLE_TRAIN_ROWS[0][0], WHOLE_TRAIN_ROWS[-1][1]) == TRAIN_ROWS and WHOLE_VAL_ROWS == (VAL_ROWS,)
    return {
        "whole": write_whole(cache_dir() / "nuclei-whole"),
        "tiles": write_row_tiles(cache_dir() / "nuclei-row-tiles"),
    }


def trainer_config(spec: Spec, roots: dict[str, Path], seed: int) -> dict[str, Any]:
    data: dict[str, Any] = {"batch_size": 8, "num_workers": 0}
    if spec.variant == "native":
        data |= {"root": str(roots["whole"]), "foreground_fraction": spec.foreground_fraction}
        data |= {} if spec.study else {"patch_size": spec.patch, "patches_per_epoch": spec.patches_per_epoch}
    elif spec.variant == "squash":
        data |= {"root": str(roots["whole"]), "image_size": TILE}
    else:
        data |= {"root": str(roots["tiles"]), "image_size": TILE}
    return {
        "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None, "in_channels": 1},
        "data": data,
        "epochs": spec.epochs,
        "seed": seed,
        "device": "cpu",
    }


def study_config(roots: dict[str, Path], epochs: int) -> dict[str, Any]:
    """``studies/nuclei.yaml``'s trainer block in patch mode: ``image_size`` dropped, the whole images."""
    import yaml

    trainer = yaml.safe_load((_common.ROOT / "studies" / "nuclei.yaml").read_text(encoding="utf-8"))["trainer"]
    data = {key: value for key, value in trainer["data"].items() if key != "image_size"}
    return {**trainer, "data": {**data, "root": str(roots["whole"]), "num_workers": 0}, "epochs": epochs}


# --------------------------------------------------------------------------- scoring


def scores(pred: np.ndarray, truth: np.ndarray, *, width: int) -> dict[str, Any]:
    """IoU, Boundary IoU (d = ``width``) and object recall by area of a 0/1 prediction against a 0/1 mask."""
    import cv2
    import torch

    from edgesearch.trainer.metrics import boundary_iou, iou

    p = torch.from_numpy(pred.astype(np.float32))[None, None]
    t = torch.from_numpy(truth.astype(np.float32))[None, None]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(truth.astype(np.uint8), connectivity=8)
    recall: dict[str, list[int]] = {name: [0, 0] for name, _, _ in AREA_BINS}
    for k in range(1, count):
        area = int(stats[k, cv2.CC_STAT_AREA])
        hit = float(pred[labels == k].mean()) >= 0.5
        for name, low, high in AREA_BINS:
            if low <= area < high:
                recall[name][0] += int(hit)
                recall[name][1] += 1
    return {"iou": iou(p, t), "boundary_iou": boundary_iou(p, t, width), "recall": recall}


def _normalised(image: np.ndarray, normalize: str) -> Any:
    """An (H, W, C) image as read, as the trainer's validation sees it: 0..1, then ImageNet-normalised (C, H, W)."""
    from edgesearch.trainer.data import normalization
    from edgesearch.trainer.images import to_unit_range
    from edgesearch.trainer.patches import as_tensor

    mean, std = (np.asarray(v, dtype=np.float32) for v in normalization(image.shape[2]))
    return as_tensor(((to_unit_range(image, normalize) - mean) / std).astype(np.float32))


def _sliding(model: Any, image: np.ndarray, config: Any, *, window: int, tta: bool = False) -> np.ndarray:
    from edgesearch.trainer.sliding import sliding_window_probabilities

    prob = sliding_window_probabilities(
        model,
        _normalised(image, config.data.normalize),
        window=window,
        overlap=config.data.overlap,
        tta=tta,
        batch_size=config.data.batch_size,
    )
    return prob.numpy() >= 0.5


def _predict_val(spec: Spec, model: Any, config: Any, root: Path) -> np.ndarray:
    """The 0/1 prediction of the validation region (rows 384-511), as the variant predicts it."""
    from edgesearch.trainer.images import read_image
    from edgesearch.trainer.predict import predict_image

    files = sorted((root / "val" / "images").iterdir())
    if spec.variant == "native":
        (file,) = files
        return _sliding(model, read_image(file, channels=1), config, window=config.data.window)
    if spec.variant == "squash":
        (file,) = files
        return predict_image(model, read_image(file, channels=1), config=config).astype(bool)
    # Tiles: each alone, as it was trained, side by side in column order.
    return np.concatenate([predict_image(model, read_image(f, channels=1), config=config) for f in files], axis=1) > 0


def _predict_full(spec: Spec, model: Any, config: Any, image: np.ndarray) -> np.ndarray:
    """The 0/1 prediction of a whole (H, W, 1) image (the 512x512 source, say), normalised whole."""
    from edgesearch.trainer.predict import predict_image

    if spec.variant == "squash":
        return predict_image(model, image, config=config).astype(bool)
    return _sliding(model, image, config, window=config.data.window)


def _tta(model: Any, config: Any, root: Path, truth: np.ndarray, width: int) -> dict[str, Any]:
    """The native model with and without flips on the validation image: time (alternating rounds) and scores."""
    from edgesearch.trainer.images import read_image

    (file,) = sorted((root / "val" / "images").iterdir())
    image = read_image(file, channels=1)
    window = config.data.window
    kept: dict[str, np.ndarray] = {}

    def run(tta: bool) -> Callable[[], float]:
        def timed() -> float:
            started = time.perf_counter()
            kept[str(tta)] = _sliding(model, image, config, window=window, tta=tta)
            return time.perf_counter() - started

        return timed

    samples = _common.alternate({"plain": run(False), "tta": run(True)}, rounds=TTA_ROUNDS, warmup=1)
    return {
        "seconds": samples,
        "time_ratio": _common.paired_ratio(samples, "tta", "plain"),
        "plain": scores(kept["False"], truth, width=width),
        "tta": scores(kept["True"], truth, width=width),
    }


# --------------------------------------------------------------------------- one run


class _Clock:
    """Times ``EpochRunner.validate_whole`` and each whole epoch of one ``train()`` in this process."""

    def __init__(self) -> None:
        self.validate: list[float] = []
        self.epochs: list[float] = []
        self.steps_per_epoch = 0
        self._mark = 0.0

    def __enter__(self) -> _Clock:
        from edgesearch.trainer.epoch import EpochRunner

        self._original = EpochRunner.validate_whole
        original, validate = self._original, self.validate

        def timed(runner: EpochRunner, images: Any) -> dict[str, float]:
            started = time.perf_counter()
            try:
                return original(runner, images)
            finally:
                validate.append(time.perf_counter() - started)

        EpochRunner.validate_whole = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        from edgesearch.trainer.epoch import EpochRunner

        EpochRunner.validate_whole = self._original  # type: ignore[method-assign]

    def callback(self) -> Any:
        from edgesearch.trainer.callbacks import Callback

        clock = self

        class Tick(Callback):
            def on_train_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int) -> None:
                clock.steps_per_epoch = steps_per_epoch
                clock._mark = time.perf_counter()

            def on_epoch_end(self, record: Any) -> None:
                now = time.perf_counter()
                clock.epochs.append(now - clock._mark)
                clock._mark = now

        return Tick()


def validation_share(clock: _Clock) -> dict[str, Any]:
    """validate_whole's share of each epoch's wall time: the median after the first epoch (MONAI's import)."""
    shares = [v / e for v, e in zip(clock.validate, clock.epochs, strict=False)]
    later = shares[1:] or shares
    return {
        "median": _common.median(later) if later else None,
        "first_epoch": shares[0] if shares else None,
        "validate_seconds_median": _common.median(clock.validate[1:] or clock.validate) if clock.validate else None,
        "epoch_seconds_median": _common.median(clock.epochs[1:] or clock.epochs) if clock.epochs else None,
    }


def run_spec(spec: Spec, seed: int, roots: dict[str, Path]) -> dict[str, Any]:
    """Train one spec at one seed; score its best.pt; the validation cost and the flips of a native one."""
    import torch

    from edgesearch.sample_data import nuclei_arrays
    from edgesearch.trainer import train
    from edgesearch.trainer.config import TrainConfig
    from edgesearch.trainer.predict import load_model

    raw = study_config(roots, spec.epochs) if spec.study else trainer_config(spec, roots, seed)
    config = TrainConfig.model_validate(raw)
    width = config.loss.edge_width
    root = Path(raw["data"]["root"])
    image, labels = nuclei_arrays()
    truth = labels[VAL_ROWS[0] : VAL_ROWS[1]] > 0
    with tempfile.TemporaryDirectory() as tmp, _Clock() as clock:
        started = time.perf_counter()
        result = train(config, callbacks=[clock.callback()], run_dir=Path(tmp))
        seconds = time.perf_counter() - started
        out: dict[str, Any] = {
            "seconds": seconds,
            "steps_per_epoch": clock.steps_per_epoch,
            "best_epoch": result.best_epoch,
            "trainer_val_iou": [r["val_iou"] for r in result.history],
            "epoch_seconds": clock.epochs,
            "validate_seconds": clock.validate,
        }
        if spec.variant == "native":
            out["validation_share"] = validation_share(clock)
        if spec.study:
            return out
        model = load_model(config, Path(tmp) / "best.pt", device=torch.device("cpu"))
    out["val"] = scores(_predict_val(spec, model, config, root), truth, width=width)
    # Native and tiles score the same region as their training's validation did: the same number back.
    out["agrees_with_trainer"] = (
        None if spec.variant == "squash" else abs(out["val"]["iou"] - max(out["trainer_val_iou"])) < 1e-6
    )
    full = _predict_full(spec, model, config, image[:, :, None])
    out["full_512"] = scores(full[VAL_ROWS[0] : VAL_ROWS[1]], truth, width=width)
    if spec.variant == "tiles":
        # The tile model by sliding window on the whole validation image (normalised whole), for information.
        out["val_sliding"] = scores(
            _predict_full(spec, model, config, image[VAL_ROWS[0] : VAL_ROWS[1], :, None]), truth, width=width
        )
    if spec.variant == "native":
        out["tta"] = _tta(model, config, root, truth, width)
    return out


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _job(spec: Spec, seed: int, roots: dict[str, Path]) -> dict[str, Any]:
    return run_spec(spec, seed, roots)


# --------------------------------------------------------------------------- summaries


def _mean_std(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "per_seed": values,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant over its seeds: IoU and Boundary IoU (mean, std, per seed), recall per area bin (pooled)."""
    out: dict[str, Any] = {}
    for part in ("val", "full_512", "val_sliding"):
        if part not in runs[0]:
            continue
        out[part] = {
            "iou": _mean_std([r[part]["iou"] for r in runs]),
            "boundary_iou": _mean_std([r[part]["boundary_iou"] for r in runs]),
            "recall": {
                name: {
                    "recalled": sum(r[part]["recall"][name][0] for r in runs),
                    "nuclei": sum(r[part]["recall"][name][1] for r in runs),
                    "share": sum(r[part]["recall"][name][0] for r in runs)
                    / max(sum(r[part]["recall"][name][1] for r in runs), 1),
                }
                for name, _, _ in AREA_BINS
            },
        }
    out["best_epoch"] = [r["best_epoch"] for r in runs]
    out["steps_per_epoch"] = runs[0]["steps_per_epoch"]
    agree = [r["agrees_with_trainer"] for r in runs if r.get("agrees_with_trainer") is not None]
    out["agrees_with_trainer"] = all(agree) if agree else None
    out["seconds"] = _mean_std([r["seconds"] for r in runs])
    if "tta" in runs[0]:
        out["tta"] = {
            "time_ratio": _common.median([r["tta"]["time_ratio"] for r in runs]),
            "iou_plain": _mean_std([r["tta"]["plain"]["iou"] for r in runs]),
            "iou_tta": _mean_std([r["tta"]["tta"]["iou"] for r in runs]),
            "iou_gain": statistics.fmean(r["tta"]["tta"]["iou"] - r["tta"]["plain"]["iou"] for r in runs),
        }
    shares = [r["validation_share"]["median"] for r in runs if "validation_share" in r]
    if shares:
        out["validation_share"] = _common.median(shares)
    return out


def grid_summary(runs: list[dict[str, Any]], checkpoints: tuple[int, ...]) -> dict[str, Any]:
    """The trainer's whole-region val IoU: the best reached by each of ``checkpoints`` epochs, over seeds."""
    return {
        str(epoch): _mean_std([max(r["trainer_val_iou"][:epoch]) for r in runs])
        for epoch in checkpoints
        if epoch <= len(runs[0]["trainer_val_iou"])
    } | {"seconds_per_epoch": _common.median([s for r in runs for s in r["epoch_seconds"][1:]] or [0.0])}


def table(results: dict[str, Any]) -> list[str]:
    def cell(entry: dict[str, Any]) -> str:
        per = ", ".join(f"{v:.3f}" for v in entry["per_seed"])
        return f"{entry['mean']:.3f} ± {entry['std']:.3f} ({per})"

    lines = [
        "| variant | IoU, val region | Boundary IoU | recall < 64 / 64-256 / > 256 px "
        "| IoU on the 512x512 image's val rows |",
        "|---|---|---|---|---|",
    ]
    for name, entry in results.items():
        val = entry["val"]
        recall = " / ".join(f"{b['share']:.2f} ({b['recalled']}/{b['nuclei']})" for b in val["recall"].values())
        full = cell(entry["full_512"]["iou"])
        lines.append(f"| {name} | {cell(val['iou'])} | {cell(val['boundary_iou'])} | {recall} | {full} |")
    return lines


def main() -> None:
    parser = _common.parser(__doc__.splitlines()[0])
    parser.add_argument("--grid", action="store_true", help="also the grid that chose the epochs (40 epochs each)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one math thread each")
    args = parser.parse_args()
    size = SIZES["tiny" if args.tiny else "full"]
    roots = _roots()
    started = time.perf_counter()
    named: dict[str, dict[str, Spec]] = {"comparison": comparison(size["epochs"])}
    named["study"] = {"nuclei study, patch mode": Spec("native", size["study_epochs"], patch=256, study=True)}
    if args.grid:
        named["grid"] = grid(size["grid_epochs"])
    # A spec named twice (the grid's tiles at the comparison's epochs, say) is trained once per seed.
    specs = sorted({spec for group in named.values() for spec in group.values()}, key=_order)
    jobs = [(spec, seed) for spec in specs for seed in (size["seeds"] if not spec.study else size["seeds"][:1])]
    with multiprocessing.get_context("spawn").Pool(args.jobs, initializer=_one_thread) as pool:
        done = pool.starmap(_job, [(spec, seed, roots) for spec, seed in jobs], chunksize=1)
    by_spec: dict[Spec, list[dict[str, Any]]] = {}
    for (spec, seed), run in zip(jobs, done, strict=True):
        by_spec.setdefault(spec, []).append({"seed": seed, **run})
    results = {name: {**summarise(by_spec[spec]), "runs": by_spec[spec]} for name, spec in named["comparison"].items()}
    study = by_spec[named["study"]["nuclei study, patch mode"]][0]
    validation = {
        "native (patch 128)": results["native"].get("validation_share"),
        "nuclei study, patch mode (patch 256)": study["validation_share"]["median"],
        "study_run": study,
    }
    checkpoints = tuple(e for e in GRID_EPOCHS if e <= size["grid_epochs"]) or (size["grid_epochs"],)
    grid_results = (
        {
            name: {**grid_summary(by_spec[spec], checkpoints), "spec": asdict(spec)}
            for name, spec in named["grid"].items()
        }
        if args.grid
        else {}
    )
    native, tiles = results["native"]["val"]["iou"]["mean"], results["tiles"]["val"]["iou"]["mean"]
    shares = [s for s in (validation["native (patch 128)"], validation["nuclei study, patch mode (patch 256)"]) if s]
    met = {
        "native_iou": native >= IOU_TARGET,
        "native_vs_tiles": native >= tiles - TILES_TOLERANCE,
        "validation_share": bool(shares) and max(shares) <= VALIDATION_SHARE_TARGET,
    }
    for line in table(results):
        _common.log(line)
    for name, entry in grid_results.items():
        by_epoch = ", ".join(f"by {e}: {entry[str(e)]['mean']:.3f}" for e in checkpoints if str(e) in entry)
        _common.log(f"grid {name}: {by_epoch}; {entry['seconds_per_epoch']:.1f} s/epoch")
    if "tta" in results["native"]:
        t = results["native"]["tta"]
        _common.log(f"tta: x{t['time_ratio']:.2f} time, IoU gain {t['iou_gain']:+.4f}")
    _common.log(f"validation share: {', '.join(f'{k} {v:.1%}' for k, v in validation.items() if isinstance(v, float))}")
    _common.emit(
        "native_resolution",
        args,
        {
            "data": "DSB 2018 nuclei (stardist==0.9.2 img2d/mask2d): train rows 0-383, val rows 384-511 (128x512)",
            "setup": {**size, "model": "unet/resnet18, encoder_weights null", "batch_size": 8},
            "specs": {group: {name: asdict(spec) for name, spec in specs_.items()} for group, specs_ in named.items()},
            "results": results,
            "grid": grid_results,
            "validation_share": validation,
            "targets": {
                "native_iou": f">= {IOU_TARGET}",
                "native_vs_tiles": f">= tiles - {TILES_TOLERANCE}",
                "validation_share": f"<= {VALIDATION_SHARE_TARGET:.0%} of an epoch",
            },
            "met": met,
            "seconds": time.perf_counter() - started,
        },
    )


def _order(spec: Spec) -> tuple[Any, ...]:
    return (spec.variant, spec.epochs, spec.patch, spec.patches_per_epoch or 0, spec.foreground_fraction, spec.study)


if __name__ == "__main__":
    main()
