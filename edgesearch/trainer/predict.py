"""Masks for new images from a trained model: ``best.pt`` + its TrainConfig in, 0/255 PNGs out.

A model sees new images exactly as it saw its validation images (:mod:`~edgesearch.trainer.inference`):
a model trained on patches predicts each image whole at native resolution by sliding window, one
that resizes (``data.image_size``) predicts at that size; either way the probability map has the
input's own size and is thresholded there. Everything that can be wrong with the inputs, the options
or the output folder is found before the first file is written (:mod:`~edgesearch.trainer.predict_io`,
which an exported model's predictions share).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgesearch.errors import ConfigError
from edgesearch.trainer import run_files
from edgesearch.trainer.checkpoint_files import read_checkpoint
from edgesearch.trainer.config import TrainConfig, load_train_config, prediction_overrides, validate_train_config
from edgesearch.trainer.device import resolve_device
from edgesearch.trainer.inference import (
    check_inference_options,
    predict_probabilities,
    prepare_image,
    probability_maps,
)
from edgesearch.trainer.model import build_model
from edgesearch.trainer.predict_io import (
    binary_mask,
    check_inputs,
    check_output_options,
    check_threshold,
    collect_inputs,
    output_paths,
    write_predictions,
)
from edgesearch.trainer.sliding import Blend

__all__ = [
    "check_inference_options",
    "check_output_options",
    "checkpoint_config",
    "collect_inputs",
    "load_model",
    "predict_files",
    "predict_image",
    "predict_probabilities",
    "prepare_image",
    "probability_maps",
]


def load_model(config: TrainConfig, checkpoint: Path, *, device: torch.device) -> nn.Module:
    """The model ``config`` describes with the weights of ``checkpoint``, in eval mode on ``device``.

    ``checkpoint`` is a ``best.pt`` (a state dict) or a ``last.pt`` (its ``model`` entry). The
    encoder is built without pretrained weights: the checkpoint replaces all of them, and
    prediction must work offline. A missing or unreadable file, or weights of another model,
    raise a one-line :class:`ConfigError` naming the file.
    """
    if not checkpoint.is_file():
        raise ConfigError(f"{checkpoint}: checkpoint not found")
    state: Any = read_checkpoint(checkpoint, map_location=device)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a last.pt
    if not isinstance(state, dict):
        raise ConfigError(f"{checkpoint}: expected a model state dict, got {type(state).__name__}")
    model = build_model(config.model.model_copy(update={"encoder_weights": None}))
    m = config.model
    what = f"{m.arch}/{m.encoder} with {m.in_channels} input channel(s)"
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    reshaped = [key for key, value in expected.items() if key in state and _shape(state[key]) != tuple(value.shape)]
    parts = [f"{len(missing)} missing weights such as {missing[0]!r}"] if missing else []
    parts += [f"{len(unexpected)} unexpected weights such as {unexpected[0]!r}"] if unexpected else []
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{len(reshaped)} weights of another shape such as {key!r} "
            f"({_shape(state[key])} in the file, {tuple(expected[key].shape)} in the model)"
        )
    if parts:
        raise ConfigError(f"{checkpoint}: does not fit the config's model {what}: {'; '.join(parts)}")
    model.load_state_dict(state)
    return model.to(device).eval()


def checkpoint_config(checkpoint: Path, config_file: Path | None = None) -> TrainConfig:
    """The config of ``checkpoint``'s model: ``config_file`` if given, else the run directory's config.json.

    Pretrained encoder weights are never loaded: the checkpoint replaces all of them
    (:func:`~edgesearch.trainer.config.prediction_overrides`).
    """
    if not checkpoint.is_file():
        raise ConfigError(f"{checkpoint}: checkpoint not found")
    if config_file is not None:
        return load_train_config(config_file, overrides=prediction_overrides)
    path = checkpoint.parent / run_files.CONFIG
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; a run directory has one beside best.pt, or pass --config FILE") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable config.json ({exc})") from None
    return validate_train_config(raw, source=str(path), overrides=prediction_overrides)


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def predict_image(
    model: nn.Module,
    image: np.ndarray,
    *,
    config: TrainConfig,
    threshold: float = 0.5,
    overlap: float | None = None,
    blend: Blend | None = None,
    tta: bool = False,
) -> np.ndarray:
    """The (H,W) uint8 0/1 mask of an (H,W,C) image as read: probability ``>= threshold`` is foreground.

    ``>=`` as in the validation metrics, so a threshold of 0.5 gives the masks ``val_iou`` scored.
    ``overlap``, ``blend`` and ``tta`` as in :func:`~edgesearch.trainer.inference.probability_maps`.
    """
    check_threshold(threshold)
    (prob,) = probability_maps(model, [image], config=config, overlap=overlap, blend=blend, tta=tta)
    return binary_mask(prob, threshold)


def predict_files(
    config: TrainConfig,
    checkpoint: Path,
    inputs: Sequence[Path],
    out_dir: Path,
    *,
    threshold: float = 0.5,
    overlay: bool = False,
    device: str = "auto",
    overlap: float | None = None,
    blend: Blend | None = None,
    tta: bool = False,
    on_image: Callable[[Path, Path], None] | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<stem>.png`` (0/255, the input's size) for every input image; return their paths.

    ``inputs`` are image files or folders of them. With ``overlay`` each input also gets
    ``<stem>.overlay.png``: the predicted mask's edge band drawn over the image. Inputs are
    read as training reads them (at full depth; grey and RGBA files get the model's channels).
    ``overlap``, ``blend`` and ``tta`` as in :func:`~edgesearch.trainer.inference.probability_maps`
    (a model trained on patches predicts one whole image at a time). ``on_image`` is
    called with (input, mask path) after each mask is written. Bad inputs, a threshold outside
    (0, 1), bad or misplaced window options, an out_dir that is not new or empty, and a checkpoint
    that does not fit the config raise a :class:`~edgesearch.errors.UserError` before anything is written.
    """
    check_output_options(threshold=threshold, out_dir=out_dir)
    check_inference_options(overlap=overlap, blend=blend, config=config)
    files = collect_inputs(inputs)
    outputs = output_paths(files, out_dir, overlay=overlay)
    check_inputs(files, channels=config.model.in_channels, normalize=config.data.normalize)
    model = load_model(config, checkpoint, device=resolve_device(device))

    def maps(images: list[np.ndarray]) -> list[np.ndarray]:
        return probability_maps(model, images, config=config, overlap=overlap, blend=blend, tta=tta)

    # A resizing model takes a batch of images in one pass; one trained on patches takes one whole
    # image at a time (a batch of its windows), so that a single decoded image is held at once.
    return write_predictions(
        files,
        outputs,
        maps,
        channels=config.model.in_channels,
        normalize=config.data.normalize,
        threshold=threshold,
        edge_width=config.loss.edge_width,
        step=config.data.batch_size if config.data.resize else 1,
        on_image=on_image,
    )
