"""Masks for new images: the input's size, threshold semantics, and nothing written on bad input."""

from __future__ import annotations

import re
import tracemalloc
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
from edgesearch.trainer.data import build_transforms, normalization, synthetic_sample
from edgesearch.trainer.images import read_image
from edgesearch.trainer.overlay import edge_overlay
from edgesearch.trainer.predict import load_model, predict_files, predict_image, probability_maps
from edgesearch.trainer.sliding import sliding_window_probabilities
from tests.helpers import train_patch_run, train_tiny_run

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

    transform = build_transforms(image_size=64, stats=normalization(3), augment=False)
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


# --------------------------------------------------------------------------- native resolution (patch mode)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
STEADY = 1e-4
"""Pixels whose probability lies this close to the threshold may land on either side of it in a
computation that adds up in another order; masks are compared everywhere else."""


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path]:
    """An FPN (which refuses sides 32 does not divide) trained on 64 px patches of 96 px images."""
    return train_patch_run(tmp_path_factory.mktemp("patch_run"))


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path]:
    """The same with one input channel."""
    return train_patch_run(tmp_path_factory.mktemp("grey_run"), channels=1)


def _with_data(config: TrainConfig, **data: object) -> TrainConfig:
    """``config`` with some ``data`` fields replaced, validated again."""
    raw = config.model_dump(mode="json")
    return TrainConfig.model_validate({**raw, "data": {**raw["data"], **data}})


def _tiled(height: int, width: int, channels: int = 3) -> np.ndarray:
    """An 8-bit image of any size: a 128 px synthetic sample repeated (a 3000 px sample would take a GB)."""
    tile = _rgb(128, 128)
    rows, cols = -(-height // 128), -(-width // 128)
    image = np.tile(tile, (rows, cols, 1))[:height, :width]
    return np.ascontiguousarray(image if channels == 3 else image[:, :, :channels])


def _normalised(unit: np.ndarray) -> torch.Tensor:
    """(H, W, C) 0..1 -> (1, C, H, W), contiguous, less ImageNet's mean over its std (their averages
    for other channel counts than 3)."""
    channels = unit.shape[2]
    mean = IMAGENET_MEAN if channels == 3 else np.full(channels, IMAGENET_MEAN.mean(), np.float32)
    std = IMAGENET_STD if channels == 3 else np.full(channels, IMAGENET_STD.mean(), np.float32)
    return torch.from_numpy(np.ascontiguousarray(((unit - mean) / std).transpose(2, 0, 1)))[None]


def _forward(model: torch.nn.Module, unit: np.ndarray) -> np.ndarray:
    """sigmoid(model(x)) of one (H, W, C) 0..1 image in a single forward pass: (H, W)."""
    with torch.inference_mode():
        return torch.sigmoid(model(_normalised(unit)))[0, 0].numpy()


def _assert_masks_equal(mask: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> None:
    """``mask`` is ``prob >= threshold`` wherever ``prob`` is not within :data:`STEADY` of the threshold."""
    steady = np.abs(prob - threshold) > STEADY
    assert steady.mean() > 0.99
    np.testing.assert_array_equal(mask[steady], (prob >= threshold)[steady])


SHAPES = [(1, 1), (1, 700), (700, 1), (50, 70), (64, 64), (97, 33), (257, 1031), (3000, 200)]


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_patch_mode_masks_have_each_inputs_shape_whatever_its_size(
    patch_run: tuple[TrainConfig, Path], tmp_path: Path, scale: float
) -> None:
    config, checkpoint = patch_run
    config = _with_data(config, scale=scale)
    inputs = [_save(_tiled(h, w), tmp_path / "in" / f"rgb_{h}x{w}.png") for h, w in SHAPES]
    inputs.append(_save(_tiled(45, 33)[:, :, 0], tmp_path / "in" / "grey_45x33.png"))
    deep = tmp_path / "in" / "deep_61x83.tif"
    tifffile.imwrite(deep, _tiled(61, 83)[:, :, 0].astype(np.uint16) * 257)
    inputs.append(deep)
    rgb_deep = tmp_path / "in" / "deep_rgb_39x71.tif"
    tifffile.imwrite(rgb_deep, _tiled(39, 71).astype(np.uint16) * 257, photometric="rgb")
    inputs.append(rgb_deep)

    written = predict_files(config, checkpoint, inputs, tmp_path / "out", device="cpu")

    assert len(written) == len(inputs)
    for source, mask_path in zip(inputs, written, strict=True):
        height, width = (int(side) for side in source.stem.rsplit("_", 1)[1].split("x"))
        mask = np.asarray(Image.open(mask_path))
        assert mask.shape == (height, width), source
        assert set(np.unique(mask)) <= {0, 255}


def test_a_one_channel_model_predicts_grey_and_16_bit_inputs_at_their_shape(
    grey_run: tuple[TrainConfig, Path], tmp_path: Path
) -> None:
    config, checkpoint = grey_run
    inputs = [_save(_tiled(h, w)[:, :, 0], tmp_path / "in" / f"grey_{h}x{w}.png") for h, w in [(1, 1), (50, 70)]]
    deep = tmp_path / "in" / "deep_130x67.tif"
    tifffile.imwrite(deep, _tiled(130, 67)[:, :, 0].astype(np.uint16) * 257)
    inputs.append(deep)
    written = predict_files(config, checkpoint, inputs, tmp_path / "out", device="cpu")
    for source, mask_path in zip(inputs, written, strict=True):
        height, width = (int(side) for side in source.stem.rsplit("_", 1)[1].split("x"))
        assert np.asarray(Image.open(mask_path)).shape == (height, width), source


@pytest.mark.parametrize("channels", [3, 1])
def test_an_image_of_one_window_at_scale_1_gets_the_models_single_forward_pass(
    patch_run: tuple[TrainConfig, Path], grey_run: tuple[TrainConfig, Path], channels: int
) -> None:
    config, checkpoint = patch_run if channels == 3 else grey_run
    model = load_model(config, checkpoint, device=CPU)
    image = _tiled(64, 64, channels)  # exactly one 64 px window
    reference = _forward(model, image.astype(np.float32) / 255.0)
    assert reference.std() > 0.01  # a map that varies, so that equal maps mean something

    (prob,) = probability_maps(model, [image], config=config)

    assert prob.shape == (64, 64) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, reference, rtol=0, atol=1e-5)
    _assert_masks_equal(predict_image(model, image, config=config), reference)


def test_at_scale_one_half_the_map_is_the_half_size_sliding_window_map_resized_back(
    patch_run: tuple[TrainConfig, Path],
) -> None:
    config, checkpoint = patch_run
    model = load_model(config, checkpoint, device=CPU)
    image = _tiled(180, 260)
    half = cv2.resize(image.astype(np.float32) / 255.0, (130, 90), interpolation=cv2.INTER_AREA)
    small = sliding_window_probabilities(model, _normalised(half)[0], window=64, overlap=0.5).numpy()
    reference = cv2.resize(small, (260, 180), interpolation=cv2.INTER_LINEAR)

    (prob,) = probability_maps(model, [image], config=_with_data(config, scale=0.5))

    assert prob.shape == (180, 260)
    np.testing.assert_allclose(prob, reference, rtol=0, atol=1e-5)
    # Not what scale 1 gives, so the comparison tells the two apart.
    (native,) = probability_maps(model, [image], config=config)
    assert np.abs(native - reference).max() > 0.01


def _flip_mean(single: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """The mean over the four flips F of an (H, W, C) ``x`` of F(single(F(x))), written out."""
    return (single(x) + single(x[::-1])[::-1] + single(x[:, ::-1])[:, ::-1] + single(x[::-1, ::-1])[::-1, ::-1]) / 4


def test_tta_is_the_mean_of_the_four_flipped_passes_on_one_window(patch_run: tuple[TrainConfig, Path]) -> None:
    config, checkpoint = patch_run
    model = load_model(config, checkpoint, device=CPU)
    image = _tiled(64, 64)
    unit = image.astype(np.float32) / 255.0
    reference = _flip_mean(lambda x: _forward(model, np.ascontiguousarray(x)), unit)
    assert np.abs(reference - _forward(model, unit)).max() > 1e-3  # the flips change the map

    (prob,) = probability_maps(model, [image], config=config, tta=True)

    np.testing.assert_allclose(prob, reference, rtol=0, atol=1e-5)
    _assert_masks_equal(predict_image(model, image, config=config, tta=True), reference)


def test_tta_in_resize_mode_averages_the_flipped_passes_at_the_training_size(run: tuple[TrainConfig, Path]) -> None:
    config, checkpoint = run
    model = load_model(config, checkpoint, device=CPU)
    image = _rgb(50, 70)
    transform = build_transforms(image_size=64, stats=normalization(3), augment=False)
    resized = transform(image=image.astype(np.float32) / 255.0)["image"].numpy().transpose(1, 2, 0)

    def single(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
            return torch.sigmoid(model(batch))[0, 0].numpy()

    small = _flip_mean(single, resized)
    reference = cv2.resize(small, (70, 50), interpolation=cv2.INTER_LINEAR)
    assert np.abs(small - single(resized)).max() > 1e-3

    (prob,) = probability_maps(model, [image], config=config, tta=True)

    assert prob.shape == (50, 70)
    np.testing.assert_allclose(prob, reference, rtol=0, atol=1e-5)


def test_overlap_and_blend_are_those_of_the_sliding_window(patch_run: tuple[TrainConfig, Path]) -> None:
    config, checkpoint = patch_run
    model = load_model(config, checkpoint, device=CPU)
    image = _tiled(100, 150)
    x = _normalised(image.astype(np.float32) / 255.0)[0]
    maps = {}
    for overlap, blend in [(0.5, "gaussian"), (0.25, "mean"), (0.0, "gaussian"), (0.75, "mean")]:
        reference = sliding_window_probabilities(model, x, window=64, overlap=overlap, blend=blend).numpy()
        (prob,) = probability_maps(model, [image], config=config, overlap=overlap, blend=blend)  # type: ignore[arg-type]
        np.testing.assert_allclose(prob, reference, rtol=0, atol=1e-5)
        maps[overlap, blend] = reference
    assert np.abs(maps[0.25, "mean"] - maps[0.5, "gaussian"]).max() > 1e-3
    # By default: the run's data.overlap, blended by the Gaussian.
    (default,) = probability_maps(model, [image], config=config)
    np.testing.assert_allclose(default, maps[0.5, "gaussian"], rtol=0, atol=1e-5)
    (quarter,) = probability_maps(model, [image], config=_with_data(config, overlap=0.0))
    np.testing.assert_allclose(quarter, maps[0.0, "gaussian"], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"overlap": 1.0}, "overlap: 1.0"),
        ({"overlap": -0.1}, "overlap: -0.1"),
        ({"overlap": float("nan")}, "overlap: nan"),
        ({"blend": "median"}, "blend: 'median'"),
    ],
    ids=["overlap-1", "overlap-negative", "overlap-nan", "blend-median"],
)
def test_bad_sliding_window_options_are_refused_before_anything_is_written(
    patch_run: tuple[TrainConfig, Path], tmp_path: Path, options: dict[str, object], named: str
) -> None:
    config, checkpoint = patch_run
    image = _save(_rgb(32, 32), tmp_path / "a.png")
    with pytest.raises(ConfigError, match=re.escape(named)):
        predict_files(config, checkpoint, [image], tmp_path / "out", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    model = load_model(config, checkpoint, device=CPU)
    with pytest.raises(ConfigError, match=re.escape(named)):
        predict_image(model, _rgb(32, 32), config=config, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [{"overlap": 0.25}, {"blend": "mean"}], ids=["overlap", "blend"])
def test_window_options_are_refused_for_a_model_that_resizes(
    run: tuple[TrainConfig, Path], tmp_path: Path, options: dict[str, object]
) -> None:
    config, checkpoint = run
    image = _save(_rgb(32, 32), tmp_path / "a.png")
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        predict_files(config, checkpoint, [image], tmp_path / "out", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_a_whole_image_is_held_as_floats_once_while_it_is_predicted(patch_run: tuple[TrainConfig, Path]) -> None:
    # tracemalloc sees numpy's arrays (not torch's own tensors): the 0..1 float copy of the image,
    # normalised in place and read by the sliding window as a view, is the one full-size float array.
    config, checkpoint = patch_run
    model = load_model(config, checkpoint, device=CPU)
    image = _tiled(512, 1024)
    floats = image.size * 4  # bytes of one float32 copy: 6 MiB
    probability_maps(model, [image[:64, :64]], config=config, overlap=0.0)  # first-call set-up out of the way
    tracemalloc.start()
    try:
        (prob,) = probability_maps(model, [image], config=config, overlap=0.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert prob.shape == (512, 1024)
    assert floats < peak < 1.25 * floats
