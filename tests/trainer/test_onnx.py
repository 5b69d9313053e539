"""The ONNX export and ``predict --onnx``: onnxruntime's probabilities are PyTorch's on whole images at their
native size (real nuclei, 16-bit grey; 3-channel images of awkward sizes; a resizing model), the masks are
``predict --checkpoint``'s, the metadata reads back, and sizes off the stride are refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner, Result

from edgesearch.cli import app
from edgesearch.sample_data import nuclei_arrays, write_whole
from edgesearch.trainer import TrainConfig
from edgesearch.trainer.data import synthetic_sample
from edgesearch.trainer.images import read_image
from edgesearch.trainer.inference import probability_maps
from edgesearch.trainer.onnx_export import OPSET, export_onnx
from edgesearch.trainer.onnx_metadata import METADATA_KEYS, parse_metadata
from edgesearch.trainer.onnx_model import OnnxModel, load_onnx_model
from edgesearch.trainer.predict import load_model
from tests.helpers import random_run

pytestmark = pytest.mark.slow  # exports models (seconds each)

PARITY = 1e-4
"""The largest difference allowed between onnxruntime's and PyTorch's probability of a pixel."""


@dataclass(frozen=True)
class Exported:
    config: TrainConfig
    checkpoint: Path
    onnx: Path
    images: list[Path]


def _export(root: Path, trainer: dict[str, Any], images: list[Path]) -> Exported:
    config, checkpoint = random_run(root / "run", trainer)
    exported = export_onnx(config, checkpoint, root / "model.onnx")
    return Exported(config, checkpoint, exported.path, images)


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A 1-channel U-Net/resnet18 on 128 px windows, and the real nuclei as whole 16-bit images: the three of
    ``sample_data --whole`` (192x512 and 128x512) and a 150x333 crop, whose sides no window divides."""
    root = tmp_path_factory.mktemp("nuclei")
    whole = write_whole(root / "data")
    images = sorted((whole / "train" / "images").iterdir()) + sorted((whole / "val" / "images").iterdir())
    source, _ = nuclei_arrays()
    images.append(_save(np.ascontiguousarray(source[101:251, 57:390]), root / "crop.png"))
    trainer = {
        "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None, "in_channels": 1},
        "data": {"patch_size": 128, "batch_size": 4},
    }
    return _export(root, trainer, images)


@pytest.fixture(scope="module")
def rgb(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A 3-channel U-Net/resnet18 on 64 px windows at scale 0.75, and RGB images of sizes no window divides."""
    root = tmp_path_factory.mktemp("rgb")
    images = []
    for index, (height, width) in enumerate([(131, 250), (300, 97), (20, 30)]):
        image, _ = synthetic_sample(index, size=max(height, width), seed=5)
        images.append(_save(np.ascontiguousarray(image[:height, :width]), root / "in" / f"rgb{index}.png"))
    trainer = {
        "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
        "data": {"patch_size": 64, "scale": 0.75, "overlap": 0.25, "batch_size": 3},
    }
    return _export(root, trainer, images)


@pytest.fixture(scope="module")
def resized(tmp_path_factory: pytest.TempPathFactory, rgb: Exported) -> Exported:
    """A 3-channel FPN/resnet18 that resizes every image to 64 x 64 (``data.image_size``)."""
    root = tmp_path_factory.mktemp("resized")
    trainer = {
        "model": {"arch": "fpn", "encoder": "resnet18", "encoder_weights": None},
        "data": {"image_size": 64, "batch_size": 2},
    }
    return _export(root, trainer, rgb.images)


def _torch_maps(exported: Exported, **options: Any) -> list[np.ndarray]:
    model = load_model(exported.config, exported.checkpoint, device=torch.device("cpu"))
    channels = exported.config.model.in_channels
    images = [read_image(path, channels=channels) for path in exported.images]
    return probability_maps(model, images, config=exported.config, **options)


def _onnx_maps(exported: Exported, **options: Any) -> list[np.ndarray]:
    model = load_onnx_model(exported.onnx)
    channels = exported.config.model.in_channels
    return model.probability_maps([read_image(path, channels=channels) for path in exported.images], **options)


@pytest.mark.parametrize("which", ["nuclei", "rgb", "resized"])
def test_the_metadata_reads_back_and_the_graph_checks(which: str, request: pytest.FixtureRequest) -> None:
    exported: Exported = request.getfixturevalue(which)
    config = exported.config
    proto = onnx.load(str(exported.onnx))
    onnx.checker.check_model(proto, full_check=True)
    props = {entry.key: entry.value for entry in proto.metadata_props}
    assert set(METADATA_KEYS) <= props.keys()
    info = parse_metadata(props, source=str(exported.onnx))
    assert info == load_onnx_model(exported.onnx).info
    channels = config.model.in_channels
    mean, std = ((0.449,) * 1, (0.226,) * 1) if channels == 1 else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    expected = {
        "arch": config.model.arch,
        "encoder": "resnet18",
        "in_channels": channels,
        "stride": 32,
        "normalize": "auto",
        "inference": "resize" if config.data.resize else "sliding_window",
        "window": config.data.window,
        "scale": config.data.scale,
        "overlap": config.data.overlap,
        "batch_size": config.data.batch_size,
        "blend": "gaussian",
        "threshold": 0.5,
        "edge_width": 2,
        "source": str(exported.checkpoint),
    }
    assert {key: getattr(info, key) for key in expected} == expected
    np.testing.assert_allclose(info.mean, mean, atol=1e-3)
    np.testing.assert_allclose(info.std, std, atol=1e-3)
    assert [op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")] == [OPSET]
    (graph_input,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert (graph_input.name, dims) == ("image", ["n", channels, "32*h", "32*w"])
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("which", ["nuclei", "rgb", "resized"])
def test_onnxruntime_gives_pytorchs_probabilities_on_whole_images(which: str, request: pytest.FixtureRequest) -> None:
    exported: Exported = request.getfixturevalue(which)
    theirs, ours = _torch_maps(exported), _onnx_maps(exported)
    for path, mine, reference in zip(exported.images, ours, theirs, strict=True):
        with Image.open(path) as opened:
            assert mine.shape == reference.shape == (opened.height, opened.width), path
        assert float(np.abs(mine - reference).max()) <= PARITY, path
        assert reference.std() > 1e-3, path  # a map that varies: the comparison means something


def test_flips_mean_blend_and_overlap_give_pytorchs_probabilities(rgb: Exported) -> None:
    options = {"tta": True, "blend": "mean", "overlap": 0.5}
    for mine, reference in zip(_onnx_maps(rgb, **options), _torch_maps(rgb, **options), strict=True):
        assert float(np.abs(mine - reference).max()) <= PARITY


def _predict(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["predict", *map(str, args)])


@pytest.mark.parametrize("which", ["nuclei", "rgb", "resized"])
def test_predict_onnx_writes_predict_checkpoints_masks(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    exported: Exported = request.getfixturevalue(which)
    probs = _torch_maps(exported)
    # The median of the maps: half the pixels foreground, and many near the threshold, where a difference shows.
    threshold = float(np.median(np.concatenate([p.ravel() for p in probs])))
    options = ("--threshold", str(threshold), "--overlay")

    by_onnx = _predict("--onnx", exported.onnx, *exported.images, "--out", tmp_path / "onnx", *options)
    by_torch = _predict("--checkpoint", exported.checkpoint, *exported.images, "--out", tmp_path / "torch", *options)

    assert by_onnx.exit_code == 0, by_onnx.output
    assert by_torch.exit_code == 0, by_torch.output
    assert f"model: {exported.onnx} ({exported.config.model.arch}/resnet18 of {exported.checkpoint})" in by_onnx.stdout
    foreground = 0
    for path, prob in zip(exported.images, probs, strict=True):
        mine = np.asarray(Image.open(tmp_path / "onnx" / f"{path.stem}.png"))
        theirs = np.asarray(Image.open(tmp_path / "torch" / f"{path.stem}.png"))
        assert set(np.unique(mine)) <= {0, 255} and mine.shape == theirs.shape == prob.shape
        near = np.abs(prob - threshold) <= PARITY
        np.testing.assert_array_equal(mine[~near], theirs[~near])
        foreground += int(np.count_nonzero(theirs))
        assert (tmp_path / "onnx" / f"{path.stem}.overlay.png").is_file()
    assert 0.3 < foreground / sum(p.size for p in probs) < 0.7  # masks with both classes in them


def test_the_files_threshold_is_the_default(rgb: Exported, tmp_path: Path) -> None:
    probs = _torch_maps(rgb)
    threshold = float(np.median(np.concatenate([p.ravel() for p in probs])))
    proto = onnx.load(str(rgb.onnx))
    next(entry for entry in proto.metadata_props if entry.key == "threshold").value = str(threshold)
    edited = tmp_path / "edited.onnx"
    onnx.save_model(proto, str(edited))

    by_onnx = _predict("--onnx", edited, *rgb.images, "--out", tmp_path / "onnx")
    by_torch = _predict(
        "--checkpoint", rgb.checkpoint, *rgb.images, "--out", tmp_path / "torch", "--threshold", str(threshold)
    )

    assert by_onnx.exit_code == 0 and by_torch.exit_code == 0, by_onnx.output + by_torch.output
    differs_from_half = 0
    for path, prob in zip(rgb.images, probs, strict=True):
        steady = np.abs(prob - threshold) > PARITY
        mine = np.asarray(Image.open(tmp_path / "onnx" / f"{path.stem}.png"))
        theirs = np.asarray(Image.open(tmp_path / "torch" / f"{path.stem}.png"))
        np.testing.assert_array_equal(mine[steady], theirs[steady])
        differs_from_half += int(np.count_nonzero((mine > 0) != (prob >= 0.5)))
    assert differs_from_half > 100  # the file's threshold, not 0.5, made these masks


def test_a_batch_whose_sides_are_not_multiples_of_the_stride_is_refused(rgb: Exported) -> None:
    model: OnnxModel = load_onnx_model(rgb.onnx)
    assert model.probabilities(np.zeros((3, 3, 64, 96), np.float32)).shape == (3, 1, 64, 96)
    with pytest.raises(ValueError, match="50x64 pixels; H and W must be multiples of the encoder's output stride 32"):
        model.probabilities(np.zeros((1, 3, 50, 64), np.float32))
    with pytest.raises(ValueError, match=r"expected an \(N, 3, H, W\) float32 batch"):
        model.probabilities(np.zeros((1, 1, 64, 64), np.float32))


def test_export_model_writes_a_studys_best_model(finished_study: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "best.onnx"
    out.write_bytes(b"an older export: replaced whole")
    study = ("--study", finished_study["name"], "--storage", finished_study["url"])

    result = CliRunner().invoke(app, ["export-model", *study, "--format", "onnx", "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert f"wrote {out} (onnx, opset {OPSET}): image (N, 3, H, W) float32, H and W multiples of 32" in result.stdout
    info = load_onnx_model(out).info
    assert info.source.startswith(f"study {finished_study['name']} trial ")
    assert (info.inference, info.window) == ("resize", 64)
    assert [p.name for p in tmp_path.iterdir()] == ["best.onnx"]  # no temporary file left behind
