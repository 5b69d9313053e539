"""``edgesearch predict``: the best trial's masks score its recorded val IoU; bad input exits 2."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner, Result

from edgesearch.cli import app
from edgesearch.searcher.run.worker import run_worker
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.studies import create_study, load_study
from edgesearch.trainer import TrainConfig
from edgesearch.trainer.data import build_datasets, synthetic_sample
from edgesearch.trainer.predict import load_model
from edgesearch.trainer.sliding import Blend, sliding_window_probabilities

runner = CliRunner()

STUDY: dict[str, Any] = {
    "name": "predict-me",
    "n_trials": 1,
    "sampler": {"kind": "random", "seed": 0},
    "pruner": {"kind": "none"},
    "trainer": {
        "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
        "data": {"image_size": 64, "batch_size": 8, "num_workers": 0, "synthetic": {"n_images": 48}},
        "optim": {"lr": 3.0e-3, "warmup_epochs": 0, "freeze_epochs": 0},
        "epochs": 4,
        "device": "cpu",
    },
    # One point, so the trial trains the base config; focal_gamma is unused by the bce loss.
    "space": {"loss.focal_gamma": {"choices": [2.0]}},
}


def _predict(*args: str | Path) -> Result:
    return runner.invoke(app, ["predict", *map(str, args)])


@dataclass(frozen=True)
class TrainedStudy:
    url: str
    best_value: float
    config: TrainConfig
    checkpoint: Path
    val_images: list[Path]
    val_masks: list[np.ndarray]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedStudy:
    """One trial of a tiny study, trained by a real worker, and its validation images as PNG files."""
    root = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{root}/study.db"
    create_study(StudyConfig.from_dict(STUDY, source="test"), url)
    run_worker(STUDY["name"], url, runs_dir=root / "runs")
    study, _ = load_study(STUDY["name"], url)
    best = study.best_trial
    config = TrainConfig.model_validate(best.user_attrs["config"])

    _, val_ds = build_datasets(config.data, model=config.model, seed=config.seed)
    (root / "val").mkdir()
    images, masks = [], []
    for i in range(len(val_ds)):
        image, mask = val_ds.raw(i)
        path = root / "val" / f"val{i:03d}.png"
        Image.fromarray(image).save(path)
        images.append(path)
        masks.append(mask)
    return TrainedStudy(url, study.best_value, config, Path(best.user_attrs["best_checkpoint"]), images, masks)


def _read_masks(out_dir: Path, images: list[Path]) -> list[np.ndarray]:
    masks = []
    for image in images:
        written = np.asarray(Image.open(out_dir / f"{image.stem}.png"))
        assert set(np.unique(written)) <= {0, 255}
        masks.append(written > 0)
    return masks


def _dataset_iou(preds: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """Intersections and unions summed over all images, as val_iou is defined."""
    inter = sum(np.count_nonzero(p & (t > 0)) for p, t in zip(preds, targets, strict=True))
    union = sum(np.count_nonzero(p | (t > 0)) for p, t in zip(preds, targets, strict=True))
    return inter / union


@pytest.mark.slow
def test_masks_of_the_best_trial_score_its_recorded_val_iou_on_the_validation_images(
    trained: TrainedStudy, tmp_path: Path
) -> None:
    out_dir = tmp_path / "masks"
    result = _predict("--study", STUDY["name"], "--storage", trained.url, "--out", out_dir, *trained.val_images)

    assert result.exit_code == 0, result.output
    assert len(trained.val_images) == 10  # 48 images, val_fraction 0.2
    preds = _read_masks(out_dir, trained.val_images)
    assert all(p.shape == (64, 64) for p in preds)
    iou = _dataset_iou(preds, trained.val_masks)
    assert trained.best_value > 0.3  # the trial learned something, so the comparison means something
    assert iou == pytest.approx(trained.best_value, abs=0.02)
    lines = result.stdout.splitlines()
    assert sum(1 for line in lines if " -> " in line) == len(trained.val_images)
    assert f"wrote {len(trained.val_images)} mask(s) to {out_dir}" in lines[-1]


@pytest.mark.slow
def test_a_checkpoint_uses_its_run_dirs_config_json_or_a_given_config(trained: TrainedStudy, tmp_path: Path) -> None:
    images = trained.val_images[:3]
    by_study = _predict("--study", STUDY["name"], "--storage", trained.url, "--out", tmp_path / "s", *images)
    by_checkpoint = _predict("--checkpoint", trained.checkpoint, "--out", tmp_path / "c", *images)
    config_file = tmp_path / "trainer.yaml"
    config_file.write_text(yaml.safe_dump({"trainer": trained.config.model_dump(mode="json")}))
    by_config = _predict(
        "--checkpoint", trained.checkpoint, "--config", config_file, "--out", tmp_path / "f", "--overlay", *images
    )
    for result in (by_study, by_checkpoint, by_config):
        assert result.exit_code == 0, result.output
    expected = _read_masks(tmp_path / "s", trained.val_images[:3])
    for folder in ("c", "f"):
        for mine, theirs in zip(_read_masks(tmp_path / folder, trained.val_images[:3]), expected, strict=True):
            np.testing.assert_array_equal(mine, theirs)
    assert (tmp_path / "f" / f"{trained.val_images[0].stem}.overlay.png").is_file()


@pytest.mark.slow
def test_a_checkpoint_without_config_json_asks_for_config(trained: TrainedStudy, tmp_path: Path) -> None:
    lonely = tmp_path / "elsewhere" / "best.pt"
    lonely.parent.mkdir()
    lonely.write_bytes(trained.checkpoint.read_bytes())
    result = _predict("--checkpoint", lonely, "--out", tmp_path / "o", trained.val_images[0])
    assert result.exit_code == 2
    assert "config.json" in result.stderr and "--config" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.parametrize("which", ["neither", "both"])
def test_exactly_one_of_study_and_checkpoint_is_required(trained: TrainedStudy, tmp_path: Path, which: str) -> None:
    source = ["--study", STUDY["name"], "--checkpoint", str(trained.checkpoint)] if which == "both" else []
    result = _predict(*source, "--storage", trained.url, "--out", tmp_path / "o", trained.val_images[0])
    assert result.exit_code == 2
    assert "exactly one of --study NAME or --checkpoint PATH" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_an_unknown_study_exits_2_and_names_the_studies_there(trained: TrainedStudy, tmp_path: Path) -> None:
    result = _predict("--study", "nope", "--storage", trained.url, "--out", tmp_path / "o", "x.png")
    assert result.exit_code == 2
    assert "nope" in result.stderr and STUDY["name"] in result.stderr
    assert "Traceback" not in result.output


def test_a_study_without_a_completed_trial_exits_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    create_study(StudyConfig.from_dict({**STUDY, "name": "fresh"}, source="test"), url)
    result = _predict("--study", "fresh", "--storage", url, "--out", tmp_path / "o", "x.png")
    assert result.exit_code == 2
    assert "study 'fresh' has no completed trial yet" in result.stderr


@pytest.mark.slow
def test_a_missing_input_exits_2_with_one_line_and_writes_nothing(trained: TrainedStudy, tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    result = _predict("--checkpoint", trained.checkpoint, "--out", tmp_path / "o", trained.val_images[0], missing)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {missing}: no such file or folder"]
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- a study of models trained on patches

PATCH_STUDY: dict[str, Any] = {
    "name": "predict-patches",
    "n_trials": 1,
    "sampler": {"kind": "random", "seed": 0},
    "pruner": {"kind": "none"},
    "trainer": {
        # The base config's window is the default 256 px at scale 1; the trial trains with its own.
        "model": {"arch": "fpn", "encoder": "resnet18", "encoder_weights": None},
        "data": {"batch_size": 4, "num_workers": 0, "synthetic": {"n_images": 10, "size": 96}},
        "optim": {"lr": 3.0e-3, "warmup_epochs": 0, "freeze_epochs": 0},
        "epochs": 2,
        "device": "cpu",
    },
    "space": {"data.patch_size": {"choices": [64]}, "data.scale": {"choices": [0.5]}},
}


@dataclass(frozen=True)
class PatchStudy:
    url: str
    config: TrainConfig
    checkpoint: Path
    images: list[Path]


@pytest.fixture(scope="module")
def patch_study(tmp_path_factory: pytest.TempPathFactory) -> PatchStudy:
    """One trial trained on 64 px patches at scale 0.5 by a real worker, and inputs of awkward sizes."""
    root = tmp_path_factory.mktemp("patch_study")
    url = f"sqlite:///{root}/study.db"
    create_study(StudyConfig.from_dict(PATCH_STUDY, source="test"), url)
    run_worker(PATCH_STUDY["name"], url, runs_dir=root / "runs")
    study, _ = load_study(PATCH_STUDY["name"], url)
    best = study.best_trial
    config = TrainConfig.model_validate(best.user_attrs["config"])
    (root / "in").mkdir()
    images = []
    for index, (height, width) in enumerate([(96, 96), (50, 77), (1, 1), (131, 250)]):
        image, _ = synthetic_sample(index, size=256, seed=7)
        path = root / "in" / f"in{index}.png"
        Image.fromarray(np.ascontiguousarray(image[:height, :width])).save(path)
        images.append(path)
    return PatchStudy(url, config, Path(best.user_attrs["best_checkpoint"]), images)


def _edgesearch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real command, in a process of its own."""
    command = [sys.executable, "-m", "edgesearch", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def _by_hand(
    model: torch.nn.Module,
    path: Path,
    *,
    window: int,
    scale: float,
    overlap: float = 0.5,
    blend: Blend = "gaussian",
    tta: bool = False,
) -> np.ndarray:
    """The probability map of an 8-bit RGB file, step by step: 0..1, resampled by ``scale`` (area), ImageNet
    normalisation, the sliding window, resampled back (bilinear) to the file's size."""
    image = np.asarray(Image.open(path).convert("RGB"))
    height, width = image.shape[:2]
    unit = image.astype(np.float32) / 255.0
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        unit = cv2.resize(unit, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], 3)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    x = torch.from_numpy(np.ascontiguousarray(((unit - mean) / std).transpose(2, 0, 1)))
    prob = sliding_window_probabilities(model, x, window=window, overlap=overlap, blend=blend, tta=tta).numpy()
    return cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR) if prob.shape != (height, width) else prob


def _assert_steady_masks_equal(written: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> None:
    """The written 0/255 mask is ``prob >= threshold`` except within 0.1% of the threshold, where a sum added
    up in another order (a convolution's) may land on either side."""
    assert written.shape == prob.shape
    steady = np.abs(prob - threshold) > 1e-3 * threshold
    assert steady.mean() > 0.99
    np.testing.assert_array_equal(written[steady] > 0, (prob >= threshold)[steady])


@pytest.mark.slow
def test_a_trial_predicts_with_the_patch_size_and_scale_it_trained_with(
    patch_study: PatchStudy, tmp_path: Path
) -> None:
    assert (patch_study.config.data.window, patch_study.config.data.scale) == (64, 0.5)  # the trial's, not the base's
    model = load_model(patch_study.config, patch_study.checkpoint, device=torch.device("cpu"))
    trial = {path: _by_hand(model, path, window=64, scale=0.5) for path in patch_study.images}
    base = {path: _by_hand(model, path, window=256, scale=1.0) for path in patch_study.images}
    # A threshold with a tenth of one map's pixels above it (a model of 2 epochs is seldom sure of 0.5).
    threshold = float(np.quantile(trial[patch_study.images[-1]], 0.9))
    out_dir = tmp_path / "masks"

    study = ("--study", PATCH_STUDY["name"], "--storage", patch_study.url)
    done = _edgesearch("predict", *study, "--out", out_dir, "--threshold", str(threshold), *patch_study.images)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    differs = 0
    for path in patch_study.images:
        written = np.asarray(Image.open(out_dir / f"{path.stem}.png"))
        assert set(np.unique(written)) <= {0, 255}
        _assert_steady_masks_equal(written, trial[path], threshold)
        differs += int(np.count_nonzero((base[path] >= threshold) != (trial[path] >= threshold)))
    assert differs > 100  # the base config's window and scale would have given other masks


@pytest.mark.slow
def test_tta_overlap_and_blend_on_the_command_line(patch_study: PatchStudy, tmp_path: Path) -> None:
    model = load_model(patch_study.config, patch_study.checkpoint, device=torch.device("cpu"))
    images = patch_study.images[1:]
    plain = {path: _by_hand(model, path, window=64, scale=0.5) for path in images}
    tuned = {path: _by_hand(model, path, window=64, scale=0.5, overlap=0.25, blend="mean", tta=True) for path in images}
    # A threshold where a tenth of one map's pixels lie above it, so that options that changed
    # nothing, or changed the wrong thing, show as mask pixels (a model of 2 epochs is seldom sure).
    threshold = float(np.quantile(tuned[images[-1]], 0.9))

    options = ("--tta", "--overlap", "0.25", "--blend", "mean", "--threshold", str(threshold))
    done = _edgesearch("predict", "--checkpoint", patch_study.checkpoint, "--out", tmp_path / "o", *options, *images)

    assert done.returncode == 0, done.stdout + done.stderr
    differs = 0
    for path in images:
        written = np.asarray(Image.open(tmp_path / "o" / f"{path.stem}.png"))
        _assert_steady_masks_equal(written, tuned[path], threshold)
        differs += int(np.count_nonzero((plain[path] >= threshold) != (tuned[path] >= threshold)))
    assert differs > 0
