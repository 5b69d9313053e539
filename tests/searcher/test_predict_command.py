"""``edgesearch predict``: the best trial's masks score its recorded val IoU; bad input exits 2."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner, Result

from edgesearch.cli import app
from edgesearch.searcher.config import StudyConfig
from edgesearch.searcher.study import create_study, load_study
from edgesearch.searcher.worker import run_worker
from edgesearch.trainer import TrainConfig
from edgesearch.trainer.data import build_datasets

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make check`

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

    _, val_ds = build_datasets(config.data, channels=config.model.in_channels, seed=config.seed)
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


def test_a_checkpoint_without_config_json_asks_for_config(trained: TrainedStudy, tmp_path: Path) -> None:
    lonely = tmp_path / "elsewhere" / "best.pt"
    lonely.parent.mkdir()
    lonely.write_bytes(trained.checkpoint.read_bytes())
    result = _predict("--checkpoint", lonely, "--out", tmp_path / "o", trained.val_images[0])
    assert result.exit_code == 2
    assert "config.json" in result.stderr and "--config" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("which", ["neither", "both"])
def test_exactly_one_of_study_and_checkpoint_is_required(trained: TrainedStudy, tmp_path: Path, which: str) -> None:
    source = ["--study", STUDY["name"], "--checkpoint", str(trained.checkpoint)] if which == "both" else []
    result = _predict(*source, "--storage", trained.url, "--out", tmp_path / "o", trained.val_images[0])
    assert result.exit_code == 2
    assert "exactly one of --study NAME or --checkpoint PATH" in result.stderr
    assert not (tmp_path / "o").exists()


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


def test_a_missing_input_exits_2_with_one_line_and_writes_nothing(trained: TrainedStudy, tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    result = _predict("--checkpoint", trained.checkpoint, "--out", tmp_path / "o", trained.val_images[0], missing)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {missing}: no such file or folder"]
    assert not (tmp_path / "o").exists()
