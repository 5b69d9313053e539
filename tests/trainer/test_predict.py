"""Masks for new images: the input's size, threshold semantics, and nothing written on bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from edgesearch.errors import ConfigError, DataError, UserError
from edgesearch.trainer import TrainConfig
from edgesearch.trainer.data import build_transforms, synthetic_sample
from edgesearch.trainer.images import read_image
from edgesearch.trainer.overlay import edge_overlay
from edgesearch.trainer.predict import load_model, predict_files, predict_image
from tests.helpers import train_tiny_run

pytestmark = pytest.mark.slow  # trains models or starts processes: not in `make check`

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path]:
    """One epoch at 64 px: enough for probabilities that vary across an image."""
    config, checkpoint = train_tiny_run(tmp_path_factory.mktemp("run"), image_size=64, n_images=16, epochs=1)
    return config, checkpoint


def _rgb(height: int, width: int, index: int = 0) -> np.ndarray:
    image, _ = synthetic_sample(index, size=max(height, width), seed=3)
    return np.ascontiguousarray(image[:height, :width])


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_masks_have_each_inputs_size_for_rgb_grey_rgba_and_16_bit_inputs(
    run: tuple[TrainConfig, Path], tmp_path: Path
) -> None:
    config, checkpoint = run
    rgb = _rgb(50, 70)
    inputs = [
        _save(rgb, tmp_path / "in" / "rgb.png"),
        _save(rgb[:45, :33, 0], tmp_path / "in" / "grey.png"),
        _save(np.dstack([_rgb(61, 40, 1), np.full((61, 40), 200, np.uint8)]), tmp_path / "in" / "rgba.png"),
        _save((_rgb(40, 30, 2)[:, :, 0].astype(np.uint16) * 257), tmp_path / "in" / "deep.png"),
    ]
    seen: list[tuple[Path, Path]] = []
    out_dir = tmp_path / "out"

    written = predict_files(
        config, checkpoint, inputs, out_dir, device="cpu", on_image=lambda image, mask: seen.append((image, mask))
    )

    assert written == [out_dir / f"{name}.png" for name in ("rgb", "grey", "rgba", "deep")]
    assert seen == list(zip(inputs, written, strict=True))
    model = load_model(config, checkpoint, device=CPU)
    for source, (height, width), mask_path in zip(
        inputs, [(50, 70), (45, 33), (61, 40), (40, 30)], written, strict=True
    ):
        mask = np.asarray(Image.open(mask_path))
        assert mask.shape == (height, width), source
        assert set(np.unique(mask)) <= {0, 255}
        expected = predict_image(model, read_image(source, channels=3), config=config)
        np.testing.assert_array_equal(mask, expected * 255)
    assert sorted(p.name for p in out_dir.iterdir()) == ["deep.png", "grey.png", "rgb.png", "rgba.png"]


def test_predict_image_runs_at_the_training_size_and_thresholds_the_resized_probabilities(
    run: tuple[TrainConfig, Path],
) -> None:
    config, checkpoint = run
    model = load_model(config, checkpoint, device=CPU)
    image = _rgb(50, 70)
    shapes: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[0].shape)))

    transform = build_transforms(image_size=64, channels=3, augment=False)
    with torch.inference_mode():
        # contiguous as a stacked batch is: a strided input may take another conv kernel (last-bit differences)
        logits = model(transform(image=image.astype(np.float32) / 255.0)["image"][None].contiguous())
    small = torch.sigmoid(logits)[0, 0].numpy()
    reference = cv2.resize(small, (70, 50), interpolation=cv2.INTER_LINEAR)

    # Thresholds halfway between neighbouring values, below the saturated ones (about half the
    # pixels of a one-epoch model have probability 1.0 in float32): no pixel lies within rounding of one.
    levels = np.unique(reference[reference < 0.999])
    masks = []
    for index in np.quantile(np.arange(len(levels) - 1), [0.25, 0.5, 0.75]).astype(int):
        threshold = (levels[index] + levels[index + 1]) / 2
        mask = predict_image(model, image, config=config, threshold=float(threshold))
        assert mask.shape == (50, 70) and mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, (reference >= threshold).astype(np.uint8))
        masks.append(mask)
    assert shapes == [(1, 3, 64, 64)] * 4
    # A higher threshold keeps a strict subset of the foreground.
    assert masks[0].sum() > masks[1].sum() > masks[2].sum() > 0
    assert not np.any(masks[2] & ~masks[1].astype(bool)) and not np.any(masks[1] & ~masks[0].astype(bool))


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5, -0.1])
def test_a_threshold_outside_0_1_is_refused(run: tuple[TrainConfig, Path], tmp_path: Path, threshold: float) -> None:
    config, checkpoint = run
    model = load_model(config, checkpoint, device=CPU)
    with pytest.raises(ConfigError, match="threshold"):
        predict_image(model, _rgb(32, 32), config=config, threshold=threshold)
    image = _save(_rgb(32, 32), tmp_path / "a.png")
    with pytest.raises(ConfigError, match="threshold"):
        predict_files(config, checkpoint, [image], tmp_path / "out", threshold=threshold)
    assert not (tmp_path / "out").exists()


def test_overlay_draws_the_predicted_edge_band_over_each_input(run: tuple[TrainConfig, Path], tmp_path: Path) -> None:
    config, checkpoint = run
    image = _rgb(50, 70)
    source = _save(image, tmp_path / "in" / "scan.png")
    predict_files(config, checkpoint, [tmp_path / "in"], tmp_path / "out", overlay=True, device="cpu")

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scan.overlay.png", "scan.png"]
    mask = np.asarray(Image.open(tmp_path / "out" / "scan.png")) // 255
    picture = np.asarray(Image.open(tmp_path / "out" / "scan.overlay.png"))
    assert picture.shape == (50, 70, 3)
    expected = edge_overlay(read_image(source, channels=3), np.zeros_like(mask), mask, width=config.loss.edge_width)
    np.testing.assert_array_equal(picture, expected)


def test_a_folder_input_means_its_images_sorted_by_name(run: tuple[TrainConfig, Path], tmp_path: Path) -> None:
    config, checkpoint = run
    for name in ("b.png", "a.jpg", "c.tif"):
        _save(_rgb(32, 40), tmp_path / "in" / name)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    written = predict_files(config, checkpoint, [tmp_path / "in"], tmp_path / "out")
    assert [p.name for p in written] == ["a.png", "b.png", "c.png"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["8-bit", "16-bit"])
def test_compressed_tiffs_get_the_masks_of_the_pixels_written(
    run: tuple[TrainConfig, Path], tmp_path: Path, dtype: type
) -> None:
    config, checkpoint = run
    model = load_model(config, checkpoint, device=CPU)
    scale = 257 if dtype == np.uint16 else 1
    arrays: dict[str, np.ndarray] = {}
    for index, writer in enumerate(["lzw", "zlib", "deflate", "zstd", "packbits", "opencv"]):
        array = (_rgb(40, 56, index).astype(dtype) * scale)[:, :, 0]
        path = tmp_path / "in" / f"{writer}.tif"
        path.parent.mkdir(exist_ok=True)
        if writer == "opencv":
            assert cv2.imwrite(str(path), array)  # LZW by default
        else:
            tifffile.imwrite(path, array, compression=writer)
        arrays[writer] = array

    written = predict_files(config, checkpoint, [tmp_path / "in"], tmp_path / "out", device="cpu")

    assert sorted(p.stem for p in written) == sorted(arrays)
    for mask_path in written:
        as_written = np.repeat(arrays[mask_path.stem][:, :, None], 3, axis=2)
        expected = predict_image(model, as_written, config=config)
        np.testing.assert_array_equal(np.asarray(Image.open(mask_path)), expected * 255)


# --------------------------------------------------------------------------- bad input


def _missing(tmp: Path, good: Path) -> tuple[list[Path], str]:
    return [good, tmp / "nope.png"], "nope.png"


def _unreadable(tmp: Path, good: Path) -> tuple[list[Path], str]:
    bad = tmp / "in" / "broken.png"
    bad.write_bytes(b"this is not a png")
    return [good, bad], "broken.png"


def _same_stem(tmp: Path, good: Path) -> tuple[list[Path], str]:
    return [good, _save(_rgb(32, 32), tmp / "other" / "good.jpg")], "good.png"


def _empty_folder(tmp: Path, good: Path) -> tuple[list[Path], str]:
    (tmp / "empty").mkdir()
    return [good, tmp / "empty"], "empty"


def _overlay_name_clash(tmp: Path, good: Path) -> tuple[list[Path], str]:
    # With --overlay, good.png's picture is good.overlay.png: the mask of this input.
    return [good, _save(_rgb(32, 32), tmp / "in" / "good.overlay.png")], "good.overlay.png"


@pytest.mark.parametrize("case", [_missing, _unreadable, _same_stem, _empty_folder, _overlay_name_clash])
def test_bad_inputs_are_reported_by_name_and_nothing_is_written(
    run: tuple[TrainConfig, Path], tmp_path: Path, case: Callable[[Path, Path], tuple[list[Path], str]]
) -> None:
    config, checkpoint = run
    good = _save(_rgb(32, 32), tmp_path / "in" / "good.png")
    inputs, named = case(tmp_path, good)
    with pytest.raises(DataError, match=named.replace(".", r"\.")):
        predict_files(config, checkpoint, inputs, tmp_path / "out", overlay=True)
    assert not (tmp_path / "out").exists()


def test_a_non_empty_out_dir_is_refused_and_left_as_it_was(run: tuple[TrainConfig, Path], tmp_path: Path) -> None:
    config, checkpoint = run
    good = _save(_rgb(32, 32), tmp_path / "in" / "good.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        predict_files(config, checkpoint, [good], out_dir)
    assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]
    assert (out_dir / "keep.txt").read_text() == "mine"


def test_an_unknown_device_is_refused_before_writing(run: tuple[TrainConfig, Path], tmp_path: Path) -> None:
    config, checkpoint = run
    good = _save(_rgb(32, 32), tmp_path / "in" / "good.png")
    with pytest.raises(ConfigError, match="device"):
        predict_files(config, checkpoint, [good], tmp_path / "out", device="tpu7")
    assert not (tmp_path / "out").exists()


def _corrupt(tmp: Path, checkpoint: Path, config: TrainConfig) -> tuple[Path, TrainConfig]:
    path = tmp / "corrupt.pt"
    path.write_bytes(checkpoint.read_bytes()[:1000])
    return path, config


def _other_arch(tmp: Path, checkpoint: Path, config: TrainConfig) -> tuple[Path, TrainConfig]:
    return checkpoint, config.model_copy(update={"model": config.model.model_copy(update={"arch": "fpn"})})


def _other_channels(tmp: Path, checkpoint: Path, config: TrainConfig) -> tuple[Path, TrainConfig]:
    return checkpoint, config.model_copy(update={"model": config.model.model_copy(update={"in_channels": 1})})


def _absent(tmp: Path, checkpoint: Path, config: TrainConfig) -> tuple[Path, TrainConfig]:
    return tmp / "absent.pt", config


@pytest.mark.parametrize("case", [_corrupt, _other_arch, _other_channels, _absent])
def test_a_checkpoint_that_cannot_be_used_is_one_line_naming_the_file(
    run: tuple[TrainConfig, Path],
    tmp_path: Path,
    case: Callable[[Path, Path, TrainConfig], tuple[Path, TrainConfig]],
) -> None:
    config, checkpoint = run
    path, config = case(tmp_path, checkpoint, config)
    with pytest.raises(ConfigError) as caught:
        load_model(config, path, device=CPU)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    good = _save(_rgb(32, 32), tmp_path / "in" / "good.png")
    with pytest.raises(ConfigError):
        predict_files(config, path, [good], tmp_path / "out")
    assert not (tmp_path / "out").exists()
