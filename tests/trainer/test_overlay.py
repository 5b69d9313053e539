"""The edge overlay: colours per pixel on hand-made masks, and the good/bad picture of a trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgesearch.trainer import TrainConfig
from edgesearch.trainer.data import IMAGENET_MEAN, IMAGENET_STD, build_datasets, synthetic_sample
from edgesearch.trainer.edges import edge_map
from edgesearch.trainer.model import build_model
from edgesearch.trainer.overlay import BOTH_EDGE_COLOUR, PRED_EDGE_COLOUR, TRUE_EDGE_COLOUR, edge_overlay
from edgesearch.trainer.plots import write_edge_overlay
from edgesearch.trainer.sliding import sliding_window_probabilities
from tests.helpers import train_patch_run, train_tiny_run

GREY = (100, 100, 100)
COLOURS = {".": GREY, "g": TRUE_EDGE_COLOUR, "m": PRED_EDGE_COLOUR, "y": BOTH_EDGE_COLOUR}


def _square(top: int, left: int, bottom: int, right: int, size: int = 8) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[top : bottom + 1, left : right + 1] = 1
    return mask


def _grey_image(size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), GREY, np.uint8)


def _drawn(rows: list[str]) -> np.ndarray:
    return np.array([[COLOURS[c] for c in row] for row in rows], np.uint8)


def test_width_1_bands_of_two_shifted_squares_are_green_magenta_and_yellow_where_they_meet() -> None:
    # True square rows 1-5, cols 1-5; predicted square rows 1-5, cols 2-6 (one pixel to the right).
    # Each band is the square's one-pixel ring; the rings share the top and bottom rows of cols 2-5,
    # and the true ring's right column (col 5) lies inside the predicted square, not on its ring.
    expected = _drawn(
        [
            "........",
            ".gyyyym.",
            ".gm..gm.",
            ".gm..gm.",
            ".gm..gm.",
            ".gyyyym.",
            "........",
            "........",
        ]
    )
    picture = edge_overlay(_grey_image(), _square(1, 1, 5, 5), _square(1, 2, 5, 6), width=1)
    assert picture.dtype == np.uint8 and picture.shape == (8, 8, 3)
    np.testing.assert_array_equal(picture, expected)


def test_width_2_band_of_a_mask_filling_the_image_runs_along_the_border() -> None:
    # Outside the image is background, so a full mask has a two-pixel band along the border.
    full = np.ones((6, 6), np.uint8)
    expected = _drawn(["yyyyyy", "yyyyyy", "yy..yy", "yy..yy", "yyyyyy", "yyyyyy"])
    np.testing.assert_array_equal(edge_overlay(_grey_image(6), full, full, width=2), expected)


def test_only_a_predicted_mask_draws_magenta_and_leaves_the_input_image_unchanged() -> None:
    image = _grey_image()
    before = image.copy()
    picture = edge_overlay(image, np.zeros((8, 8), np.uint8), _square(2, 2, 4, 4), width=1)
    expected = _drawn(["........", "........", "..mmm...", "..m.m...", "..mmm...", "........", "........", "........"])
    np.testing.assert_array_equal(picture, expected)
    np.testing.assert_array_equal(image, before)


def test_a_grey_image_is_drawn_as_rgb() -> None:
    grey = np.full((8, 8), 100, np.uint8)
    picture = edge_overlay(grey, _square(1, 1, 5, 5), _square(1, 2, 5, 6), width=1)
    np.testing.assert_array_equal(
        picture, edge_overlay(_grey_image(), _square(1, 1, 5, 5), _square(1, 2, 5, 6), width=1)
    )


@pytest.mark.parametrize("width", [1, 2, 3, 7])
def test_the_bands_are_the_edge_maps_the_metrics_score(width: int) -> None:
    rng = np.random.default_rng(width)
    for _ in range(10):
        height, side = (int(n) for n in rng.integers(1, 60, size=2))
        true_mask, pred_mask = (rng.random((2, height, side)) < rng.random()).astype(np.uint8)
        bands = [
            edge_map(torch.from_numpy(m).float()[None, None], width)[0, 0].numpy() > 0.5 for m in (true_mask, pred_mask)
        ]
        expected = np.zeros((height, side, 3), np.uint8)
        expected[bands[0] & ~bands[1]] = TRUE_EDGE_COLOUR
        expected[bands[1] & ~bands[0]] = PRED_EDGE_COLOUR
        expected[bands[0] & bands[1]] = BOTH_EDGE_COLOUR
        picture = edge_overlay(np.zeros((height, side, 3), np.uint8), true_mask, pred_mask, width=width)
        np.testing.assert_array_equal(picture, expected)


def test_masks_of_another_size_than_the_image_are_refused() -> None:
    with pytest.raises(ValueError, match="pred_mask"):
        edge_overlay(_grey_image(), _square(1, 1, 5, 5), np.zeros((7, 8), np.uint8), width=1)


# --------------------------------------------------------------------------- write_edge_overlay


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path]:
    config, checkpoint = train_tiny_run(tmp_path_factory.mktemp("run"), image_size=32, n_images=24, epochs=2)
    return config, checkpoint


def _reference_ious(config: TrainConfig, checkpoint: Path) -> list[float]:
    """Per-image IoU of the validation split through the training pipeline (dataset __getitem__)."""
    _, val_ds = build_datasets(config.data, model=config.model, seed=config.seed)
    model = build_model(config.model)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    images, masks = zip(*(val_ds[i] for i in range(len(val_ds))), strict=True)
    with torch.inference_mode():
        preds = torch.sigmoid(model(torch.stack(images))) >= 0.5
    ious = []
    for pred, mask in zip(preds.numpy(), torch.stack(masks).numpy() > 0.5, strict=True):
        union = np.count_nonzero(pred | mask)
        ious.append(1.0 if union == 0 else np.count_nonzero(pred & mask) / union)
    return ious


@pytest.mark.slow
def test_the_picture_shows_the_best_iou_images_as_good_and_the_worst_as_bad(
    trained_run: tuple[TrainConfig, Path], tmp_path: Path
) -> None:
    config, checkpoint = trained_run
    path = tmp_path / "edges.png"
    ranking = write_edge_overlay(config, checkpoint, path, n_good=2, n_bad=2)

    reference = _reference_ious(config, checkpoint)
    assert len(reference) == 5  # 24 images, val_fraction 0.2
    by_iou = sorted(reference, reverse=True)
    assert [iou for _, iou in ranking["good"]] == pytest.approx(by_iou[:2])
    assert [iou for _, iou in ranking["bad"]] == pytest.approx(by_iou[::-1][:2])
    for index, iou in ranking["good"] + ranking["bad"]:
        assert reference[index] == pytest.approx(iou)
    assert min(iou for _, iou in ranking["good"]) >= max(iou for _, iou in ranking["bad"])

    with Image.open(path) as png:
        assert png.format == "PNG"
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.std() > 0  # not a blank canvas
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_a_small_split_shows_every_image_once(trained_run: tuple[TrainConfig, Path], tmp_path: Path) -> None:
    config, checkpoint = trained_run
    ranking = write_edge_overlay(config, checkpoint, tmp_path / "edges.png", n_good=4, n_bad=4)
    good, bad = [i for i, _ in ranking["good"]], [i for i, _ in ranking["bad"]]
    assert len(good) == 4 and len(bad) == 1
    assert sorted(good + bad) == [0, 1, 2, 3, 4]
    assert (tmp_path / "edges.png").is_file()


@pytest.mark.slow
def test_showing_no_image_at_all_is_refused(trained_run: tuple[TrainConfig, Path], tmp_path: Path) -> None:
    config, checkpoint = trained_run
    with pytest.raises(ValueError, match="n_good"):
        write_edge_overlay(config, checkpoint, tmp_path / "edges.png", n_good=0, n_bad=0)
    assert not (tmp_path / "edges.png").exists()


@pytest.mark.slow
def test_validation_gives_each_image_its_iou_in_split_order(trained_run: tuple[TrainConfig, Path]) -> None:
    # The run's own overlay ranks the images by these, instead of predicting the split again.
    from edgesearch.trainer.data import build_loader
    from edgesearch.trainer.epoch import EpochRunner

    config, checkpoint = trained_run
    _, val_ds = build_datasets(config.data, model=config.model, seed=config.seed)
    model = build_model(config.model)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    runner = EpochRunner.build(config, model, device=torch.device("cpu"), steps_per_epoch=1)
    runner.validate(build_loader(val_ds, config.data, train=False))
    assert runner.image_ious == pytest.approx(_reference_ious(config, checkpoint))


@pytest.mark.slow
def test_a_training_run_draws_its_edge_overlay_from_its_best_weights(
    trained_run: tuple[TrainConfig, Path], tmp_path: Path
) -> None:
    config, checkpoint = trained_run
    drawn = checkpoint.parent / "edges.png"
    with Image.open(drawn) as png:
        from_run = np.asarray(png.convert("RGB"))
    # The same picture as one drawn afterwards from best.pt: same images, same predictions.
    write_edge_overlay(config, checkpoint, tmp_path / "edges.png")
    with Image.open(tmp_path / "edges.png") as png:
        from_file = np.asarray(png.convert("RGB"))
    np.testing.assert_array_equal(from_run, from_file)


# --------------------------------------------------------------------------- a model trained on patches


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path]:
    """An FPN (it refuses sides 32 does not divide) trained on patches of non-square images of odd sizes."""
    root = tmp_path_factory.mktemp("data")
    for split, count in (("train", 4), ("val", 3)):
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True)
        for i in range(count):
            image, mask = synthetic_sample(i + 10 * (split == "val"), size=100, seed=1)
            height = 67 + 9 * i  # 67, 76, 85 rows of 100 columns
            Image.fromarray(image[:height]).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask[:height] * 255).save(root / split / "masks" / f"{i}.png")
    config, checkpoint = train_patch_run(tmp_path_factory.mktemp("run"), root=str(root))
    return config, checkpoint


def _sliding_ious(config: TrainConfig, checkpoint: Path) -> list[float]:
    """Per-image IoU of the validation images predicted whole by the sliding window, written out here."""
    _, val_ds = build_datasets(config.data, model=config.model, seed=config.seed)
    model = build_model(config.model)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    ious = []
    for i in range(len(val_ds)):
        image, mask = val_ds.raw(i)
        unit = (image.astype(np.float32) / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(
            IMAGENET_STD, np.float32
        )
        x = torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1)))
        pred = sliding_window_probabilities(model, x, window=64, overlap=0.5).numpy() >= 0.5
        union = np.count_nonzero(pred | (mask > 0))
        ious.append(1.0 if union == 0 else np.count_nonzero(pred & (mask > 0)) / union)
    return ious


@pytest.mark.slow
def test_a_run_on_patches_draws_the_edge_overlay_of_its_non_square_validation_images(
    patch_run: tuple[TrainConfig, Path], tmp_path: Path
) -> None:
    config, checkpoint = patch_run
    drawn = checkpoint.parent / "edges.png"
    assert drawn.is_file()  # the run drew it: its model saw each image by sliding window, not whole
    with Image.open(drawn) as png:
        assert png.size == (600, 700)  # 2 panels wide (6 in), a good and a bad row (7 in), at 100 dpi
        from_run = np.asarray(png.convert("RGB"))

    ranking = write_edge_overlay(config, checkpoint, tmp_path / "edges.png", n_good=2, n_bad=1)

    reference = _sliding_ious(config, checkpoint)
    assert [iou for _, iou in ranking["good"] + ranking["bad"]] == pytest.approx(sorted(reference, reverse=True))
    for index, iou in ranking["good"] + ranking["bad"]:
        assert reference[index] == pytest.approx(iou)
    with Image.open(tmp_path / "edges.png") as png:
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), from_run)
