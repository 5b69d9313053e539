"""The NumPy sliding window: MONAI's windows and Gaussian weights exactly, and the PyTorch sliding window's
maps for every shape, blend, overlap and flip, from the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval
from torch import nn

from edgesearch.errors import ConfigError
from edgesearch.trainer.sliding import sliding_window_probabilities
from edgesearch.trainer.sliding_numpy import (
    SIGMA_SCALE,
    Blend,
    Predictor,
    importance_map,
    sliding_window_numpy,
    window_starts,
)


class PositionBias(nn.Module):
    """A 3x3 convolution plus a bias that depends on where in the window a pixel is: overlapping windows
    disagree, and a flip gives other logits, so every window's place, weight and flip shows in the map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = x.shape[-1]
        bias = torch.linspace(0.0, 3.0, side)[:, None] + 0.5 * torch.linspace(-2.0, 2.0, side)[None, :]
        return self.conv(x) + bias


def _predictor(model: nn.Module) -> Predictor:
    """The model as the NumPy sliding window calls it: a batch of windows in, probabilities out."""

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(model(torch.from_numpy(batch))).numpy()

    return predict


@pytest.mark.parametrize("window", [32, 64, 96, 256])
@pytest.mark.parametrize(("blend", "mode"), [("gaussian", "gaussian"), ("mean", "constant")])
def test_the_importance_map_is_monais(window: int, blend: Blend, mode: str) -> None:
    theirs = compute_importance_map((window, window), mode=mode, sigma_scale=SIGMA_SCALE, device="cpu").numpy()
    ours = importance_map(window, blend)
    assert ours.dtype == np.float32 and ours.shape == (window, window)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)
    assert ours.min() >= 1e-3


@pytest.mark.parametrize("window", [32, 64, 256])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75, 0.9, 0.999])
def test_the_windows_are_monais(window: int, overlap: float) -> None:
    for length in [window, window + 1, window + 31, 2 * window, 3 * window - 5, 1000, 1344]:
        interval = _get_scan_interval((length,), (window,), 1, (overlap,))
        expected = [s[0].start for s in dense_patch_slices((length,), (window,), interval)]
        assert window_starts(length, window, overlap) == expected, (length, window, overlap)


def test_an_axis_shorter_than_the_window_has_no_windows() -> None:
    with pytest.raises(ValueError, match="shorter than the window"):
        window_starts(31, 32, 0.5)


@pytest.mark.parametrize("shape", [(1, 1), (50, 77), (64, 64), (131, 250), (200, 97)])
@pytest.mark.parametrize(
    ("overlap", "blend", "tta", "batch_size"),
    [(0.5, "gaussian", False, 4), (0.25, "mean", False, 3), (0.0, "gaussian", False, 1), (0.5, "gaussian", True, 2)],
)
def test_the_map_is_the_pytorch_sliding_windows(
    shape: tuple[int, int], overlap: float, blend: Blend, tta: bool, batch_size: int
) -> None:
    model = PositionBias().eval()
    image = np.random.default_rng(1).normal(size=(3, *shape)).astype(np.float32)
    options = {"window": 32, "overlap": overlap, "blend": blend, "tta": tta, "batch_size": batch_size}

    ours = sliding_window_numpy(_predictor(model), image, **options)
    theirs = sliding_window_probabilities(model, torch.from_numpy(image), **options).numpy()

    assert ours.shape == shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert ours.size == 1 or ours.std() > 0.01  # windows that disagree: the comparison means something


def test_bad_options_and_images_are_refused() -> None:
    predict = _predictor(PositionBias().eval())
    image = np.zeros((3, 40, 40), np.float32)
    with pytest.raises(ConfigError) as raised:
        sliding_window_numpy(predict, image, window=30, overlap=1.0, blend="median", batch_size=0)  # type: ignore[arg-type]
    for expected in ("window: 30", "overlap: 1.0", "blend: 'median'", "batch_size: 0"):
        assert expected in str(raised.value)
    for bad in (np.zeros((40, 40), np.float32), np.zeros((3, 40, 40), np.float64), np.zeros((3, 0, 40), np.float32)):
        with pytest.raises(ValueError, match="float32"):
            sliding_window_numpy(predict, bad, window=32)
