from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from edgesearch.errors import ConfigError
from edgesearch.trainer.config import ModelConfig
from edgesearch.trainer.model import (
    backbone_parameters,
    build_model,
    head_parameters,
    input_conv_weight,
    set_backbone_trainable,
)


@pytest.mark.parametrize("arch", ["unet", "fpn", "linknet"])
def test_build_model_gives_one_logit_channel_at_input_resolution(arch: str) -> None:
    model = build_model(ModelConfig(arch=arch, encoder="resnet18"))
    out = model.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)


def test_backbone_and_head_partition_the_parameters() -> None:
    model = build_model(ModelConfig(encoder="resnet18"))
    backbone = {id(p) for p in backbone_parameters(model)}
    head = {id(p) for p in head_parameters(model)}
    assert backbone and head and not backbone & head
    assert backbone | head == {id(p) for p in model.parameters()}
    assert backbone == {id(p) for p in model.encoder.parameters()}  # type: ignore[union-attr]


def test_freezing_the_backbone_stops_gradients_and_batchnorm_updates() -> None:
    model = build_model(ModelConfig(encoder="resnet18"))
    model.train()
    set_backbone_trainable(model, False)
    assert not model.encoder.training  # type: ignore[union-attr]
    assert all(not p.requires_grad for p in backbone_parameters(model))
    assert all(p.requires_grad for p in head_parameters(model))
    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in backbone_parameters(model))


def test_local_encoder_weights_are_loaded(tmp_path: Path) -> None:
    source = build_model(ModelConfig(encoder="resnet18"))
    torch.save(source.encoder.state_dict(), tmp_path / "enc.pt")  # type: ignore[union-attr]
    torch.save(source.state_dict(), tmp_path / "whole.pt")
    for name in ("enc.pt", "whole.pt"):
        model = build_model(ModelConfig(encoder="resnet18", encoder_weights=str(tmp_path / name)))
        for key, value in source.encoder.state_dict().items():  # type: ignore[union-attr]
            assert torch.equal(model.encoder.state_dict()[key], value), key  # type: ignore[union-attr]


def test_weights_for_another_encoder_are_rejected_clearly(tmp_path: Path) -> None:
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"bad.pt: does not fit encoder"):
        build_model(ModelConfig(encoder="resnet18", encoder_weights=str(tmp_path / "bad.pt")))


@pytest.mark.parametrize("channels", [1, 2, 5])
def test_input_conv_weight_adapts_an_rgb_convolution_as_smps_patch_first_conv(channels: int) -> None:
    from segmentation_models_pytorch.encoders._utils import patch_first_conv

    torch.manual_seed(0)
    original = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))
    patched = copy.deepcopy(original)
    patch_first_conv(patched, new_in_channels=channels, pretrained=True)
    conv = patched[0]
    assert isinstance(conv, torch.nn.Conv2d) and conv.weight.shape == (8, channels, 3, 3)
    torch.testing.assert_close(input_conv_weight(original[0].weight.detach(), channels), conv.weight.detach())
