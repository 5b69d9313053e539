"""Sliding-window probabilities: the blend formula against an independent reference, agreement with a
single forward pass and with MONAI called directly, every shape back at its own size, flips, bad options."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from edgesearch.errors import ConfigError
from edgesearch.trainer.sliding import TTA_FLIPS, Blend, sliding_window_probabilities


class Identity(nn.Module):
    """Its input's first channel as the logits: through a sigmoid, ``sigmoid(x[0])`` comes back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


class PositionBias(nn.Module):
    """The first channel plus a bias that depends on where in the window a pixel is.

    Overlapping windows then disagree, so the blended map depends on every window's position and
    weight. With ``symmetric`` the bias is the same under flips (the model is flip-equivariant).
    """

    def __init__(self, *, symmetric: bool) -> None:
        super().__init__()
        self.symmetric = symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + torch.from_numpy(position_bias(x.shape[-1], symmetric=self.symmetric))


def position_bias(size: int, *, symmetric: bool) -> np.ndarray:
    ramp = np.linspace(-2.0, 2.0, size, dtype=np.float32)
    if symmetric:
        return np.outer(ramp, ramp)
    return np.add.outer(np.linspace(0.0, 3.0, size, dtype=np.float32), 0.5 * ramp)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def reference(
    window_probs: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    window: int,
    overlap: float,
    blend: Blend,
) -> np.ndarray:
    """The documented formula, in float64 and loops: zero-pad short axes, place windows, weigh, divide."""
    _, height, width = image.shape
    pads = [(0, 0)]
    for length in (height, width):
        extra = max(window - length, 0)
        pads.append((extra // 2, extra - extra // 2))
    padded = np.pad(image.astype(np.float64), pads)
    stride = max(1, math.floor(window * (1 - overlap)))

    def starts(length: int) -> list[int]:
        found = [min(i * stride, length - window) for i in range(length)]
        return found[: next(i for i, a in enumerate(found) if a + window >= length) + 1]

    u = np.arange(window, dtype=np.float64)
    g = np.exp(-((u - (window - 1) / 2) ** 2) / (2 * (window / 8) ** 2))
    weight = np.maximum(np.outer(g, g), 1e-3) if blend == "gaussian" else np.ones((window, window))
    total = np.zeros(padded.shape[1:])
    weights = np.zeros(padded.shape[1:])
    for a in starts(padded.shape[1]):
        for b in starts(padded.shape[2]):
            total[a : a + window, b : b + window] += weight * window_probs(padded[:, a : a + window, b : b + window])
            weights[a : a + window, b : b + window] += weight
    (top, _), (left, _) = pads[1], pads[2]
    return (total / weights)[top : top + height, left : left + width]


def probability_image(height: int, width: int, *, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """(logits image with ``channels`` channels, the probabilities of its first channel)."""
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.02, 0.98, size=(height, width)).astype(np.float32)
    logits = np.log(probs) - np.log1p(-probs)
    image = np.concatenate([logits[None], rng.normal(size=(channels - 1, height, width)).astype(np.float32)])
    return torch.from_numpy(image), _sigmoid(logits.astype(np.float64))


# -- the formula --------------------------------------------------------------------------------------


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
@pytest.mark.parametrize(("height", "width", "window"), [(50, 70, 64), (257, 1031, 64), (1024, 1344, 256)])
def test_identity_model_gives_its_input_back(blend: Blend, height: int, width: int, window: int) -> None:
    image, probs = probability_image(height, width, channels=2)
    out = sliding_window_probabilities(Identity(), image, window=window, blend=blend)
    assert out.shape == (height, width) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), probs, rtol=0, atol=1e-6)  # every pixel covered, no seam


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
@pytest.mark.parametrize(
    ("height", "width", "window", "overlap"),
    [(150, 170, 64, 0.5), (150, 170, 64, 0.25), (130, 100, 32, 0.0), (45, 200, 64, 0.5), (1, 90, 32, 0.7)],
)
def test_blend_matches_the_documented_formula(
    blend: Blend, height: int, width: int, window: int, overlap: float
) -> None:
    image, _ = probability_image(height, width)
    bias = position_bias(window, symmetric=True)
    out = sliding_window_probabilities(
        PositionBias(symmetric=True),
        image,
        window=window,
        overlap=overlap,
        blend=blend,
    )
    expected = reference(lambda x: _sigmoid(x[0] + bias), image.numpy(), window=window, overlap=overlap, blend=blend)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)


def test_tta_averages_the_four_flips_each_flipped_back() -> None:
    window = 64
    image, _ = probability_image(100, 150)
    bias = position_bias(window, symmetric=False)

    def flipped_mean(x: np.ndarray) -> np.ndarray:
        # TTA_FLIPS counts dims from the end: on an (H, W) array they are the same axes.
        return np.mean([np.flip(_sigmoid(np.flip(x[0], dims) + bias), dims) for dims in TTA_FLIPS], axis=0)

    out = sliding_window_probabilities(PositionBias(symmetric=False), image, window=window, tta=True)
    expected = reference(flipped_mean, image.numpy(), window=window, overlap=0.5, blend="gaussian")
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)
    plain = sliding_window_probabilities(PositionBias(symmetric=False), image, window=window)
    assert (out - plain).abs().max() > 1e-2  # the flips changed something: the test can tell


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
def test_tta_of_a_flip_equivariant_model_is_the_identity(blend: Blend) -> None:
    image, probs = probability_image(90, 130, channels=3)
    out = sliding_window_probabilities(Identity(), image, window=64, blend=blend, tta=True)
    np.testing.assert_allclose(out.numpy(), probs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize(("height", "width"), [(150, 170), (40, 300), (1, 1)])
def test_stitching_on_the_cpu_by_columns_gives_the_same_map(height: int, width: int, tta: bool) -> None:
    image, _ = probability_image(height, width)
    model = PositionBias(symmetric=False)
    whole = sliding_window_probabilities(model, image, window=64, tta=tta, stitch_on_cpu_above=None)
    columns = sliding_window_probabilities(model, image, window=64, tta=tta, stitch_on_cpu_above=0)
    assert columns.device.type == "cpu"
    np.testing.assert_allclose(columns.numpy(), whole.numpy(), rtol=0, atol=1e-6)


# -- a real smp U-Net ---------------------------------------------------------------------------------


def _unet(channels: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.Unet("resnet18", encoder_weights=None, in_channels=channels, classes=1).eval()


@pytest.fixture(scope="module")
def unets() -> dict[int, nn.Module]:
    return {1: _unet(1), 3: _unet(3)}


def _image(channels: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(channels, height, width, generator=torch.Generator().manual_seed(seed))


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    both = (a & b).sum().item()
    return 2 * both / (a.sum().item() + b.sum().item())


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
def test_one_window_agrees_with_one_forward_pass(unets: dict[int, nn.Module], blend: Blend) -> None:
    image = _image(3, 64, 64)
    with torch.inference_mode():
        single = torch.sigmoid(unets[3](image[None]))[0, 0]
    out = sliding_window_probabilities(unets[3], image, window=64, blend=blend)
    # A random network's probabilities sit near one value: threshold at their median, so that the
    # masks are half the image and Dice says something.
    threshold = single.median()
    assert dice(out >= threshold, single >= threshold) >= 0.99
    assert (out - single).abs().max().item() < 1e-5


def test_an_image_smaller_than_the_window_is_zero_padded_around_its_centre(unets: dict[int, nn.Module]) -> None:
    image = _image(3, 50, 41)
    padded = torch.zeros(1, 3, 64, 64)
    padded[0, :, 7:57, 11:52] = image  # (64 - 50) // 2 = 7 rows before, (64 - 41) // 2 = 11 columns
    with torch.inference_mode():
        single = torch.sigmoid(unets[3](padded))[0, 0, 7:57, 11:52]
    out = sliding_window_probabilities(unets[3], image, window=64)
    assert (out - single).abs().max().item() < 1e-5


def test_gaussian_agrees_with_monai_called_directly(unets: dict[int, nn.Module]) -> None:
    from monai.inferers import sliding_window_inference

    model, image = unets[3], _image(3, 160, 224)
    with torch.inference_mode():
        direct = sliding_window_inference(
            image[None],
            roi_size=(64, 64),
            sw_batch_size=4,
            predictor=lambda windows: torch.sigmoid(model(windows)),
            overlap=0.5,
            mode="gaussian",
            sigma_scale=0.125,
        )
    assert isinstance(direct, torch.Tensor)
    out = sliding_window_probabilities(model, image, window=64, overlap=0.5, blend="gaussian")
    assert (out - direct[0, 0]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 97), (97, 1), (33, 65), (31, 200), (50, 70)])
def test_every_shape_comes_back_at_its_own_size(
    unets: dict[int, nn.Module], channels: int, height: int, width: int
) -> None:
    # 33 x 65 and the others are not multiples of 32: the model only ever sees whole windows.
    out = sliding_window_probabilities(unets[channels], _image(channels, height, width), window=32)
    assert out.shape == (height, width) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_a_batch_of_one_image_is_accepted(unets: dict[int, nn.Module]) -> None:
    image = _image(1, 40, 70)
    assert torch.equal(
        sliding_window_probabilities(unets[1], image[None], window=32),
        sliding_window_probabilities(unets[1], image, window=32),
    )


def test_tta_with_a_real_model_is_the_mean_of_the_flipped_passes(unets: dict[int, nn.Module]) -> None:
    model, image = unets[3], _image(3, 64, 64)
    with torch.inference_mode():
        flips = [torch.sigmoid(model(image[None].flip(d) if d else image[None])) for d in TTA_FLIPS]
        expected = torch.stack([p.flip(d) if d else p for p, d in zip(flips, TTA_FLIPS, strict=True)]).mean(0)
    out = sliding_window_probabilities(model, image, window=64, tta=True)
    assert (out - expected[0, 0]).abs().max().item() < 1e-5
    larger = sliding_window_probabilities(model, _image(3, 70, 130), window=64, tta=True)
    assert larger.shape == (70, 130) and larger.min() >= 0.0 and larger.max() <= 1.0


def test_the_model_runs_in_eval_mode_and_keeps_its_own_modes(unets: dict[int, nn.Module]) -> None:
    model, image = unets[1], _image(1, 64, 90)
    evaluated = sliding_window_probabilities(model, image, window=64)
    model.train()
    model.encoder.eval()  # a frozen encoder keeps its BatchNorm statistics (trainer/model.py) while the rest trains
    try:
        assert torch.equal(sliding_window_probabilities(model, image, window=64), evaluated)
        assert model.training and model.decoder.training and not model.encoder.training
    finally:
        model.eval()


# -- bad options and inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("window", 0),
        ("window", 16),
        ("window", 48),
        ("window", -32),
        ("window", 64.0),
        ("overlap", -0.1),
        ("overlap", 1.0),
        ("overlap", float("nan")),
        ("blend", "max"),
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("stitch_on_cpu_above", -1),
    ],
)
def test_a_bad_option_is_a_config_error_naming_it(option: str, value: object) -> None:
    options: dict[str, object] = {"window": 64, option: value}
    with pytest.raises(ConfigError, match=rf"^{option}: .*allowed: "):
        sliding_window_probabilities(Identity(), torch.zeros(1, 8, 8), **options)


def test_every_bad_option_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        sliding_window_probabilities(Identity(), torch.zeros(1, 8, 8), window=20, overlap=2.0, batch_size=0)
    assert [line.split(":")[0] for line in str(raised.value).splitlines()] == ["window", "overlap", "batch_size"]


@pytest.mark.parametrize(
    "image",
    [torch.zeros(8, 8), torch.zeros(2, 1, 8, 8), torch.zeros(1, 0, 8), torch.zeros(1, 8, 8, dtype=torch.uint8)],
    ids=["2d", "batch-of-2", "empty", "uint8"],
)
def test_an_image_of_another_shape_or_dtype_is_a_value_error(image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="image must be"):
        sliding_window_probabilities(Identity(), image, window=32)


def test_a_model_with_more_than_one_output_channel_is_a_value_error() -> None:
    class TwoChannels(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x[:, :1], x[:, :1]], dim=1)

    with pytest.raises(ValueError, match="one logit channel"):
        sliding_window_probabilities(TwoChannels(), torch.zeros(1, 8, 8), window=32)
