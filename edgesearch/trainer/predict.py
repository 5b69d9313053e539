"""Masks for new images from a trained model: ``best.pt`` + its TrainConfig in, 0/255 PNGs out.

A model sees new images exactly as it saw its validation images (:mod:`~edgesearch.trainer.inference`):
a model trained on patches predicts each image whole at native resolution by sliding window, one
that resizes (``data.image_size``) predicts at that size; either way the probability map has the
input's own size and is thresholded there. Everything that can be wrong with the inputs, the options
or the output folder is found before the first file is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from edgesearch.errors import ConfigError, DataError, first_line, raise_problems
from edgesearch.files import atomic_write, check_new_or_empty
from edgesearch.trainer import run_files
from edgesearch.trainer.checkpoint_files import read_checkpoint
from edgesearch.trainer.config import TrainConfig, load_train_config, prediction_overrides, validate_train_config
from edgesearch.trainer.data import IMAGE_SUFFIXES
from edgesearch.trainer.device import resolve_device
from edgesearch.trainer.images import check_nan, read_image, to_display
from edgesearch.trainer.inference import (
    check_inference_options,
    predict_probabilities,
    prepare_image,
    probability_maps,
)
from edgesearch.trainer.model import build_model
from edgesearch.trainer.overlay import edge_overlay
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


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold: {threshold!r} is out of range; allowed: 0 < x < 1")


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
    _check_threshold(threshold)
    (prob,) = probability_maps(model, [image], config=config, overlap=overlap, blend=blend, tta=tta)
    return _mask(prob, threshold)


def _mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    # The comparison's bools as 0/1 bytes: a view, no second full-size array.
    return (prob >= threshold).view(np.uint8)


def collect_inputs(inputs: Sequence[Path]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders as their images sorted by name.

    Raises DataError naming every input that does not exist and every folder without images.
    """
    files: list[Path] = []
    problems: list[str] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                problems.append(f"{path}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    if not inputs:
        problems.append("no input images given")
    raise_problems(problems, DataError)
    return files


def _output_paths(files: Sequence[Path], out_dir: Path, *, overlay: bool) -> list[tuple[Path, Path | None]]:
    """(mask, overlay) paths per input; two inputs that would write the same file are a DataError."""
    written: dict[Path, Path] = {}
    problems: list[str] = []
    paths: list[tuple[Path, Path | None]] = []
    for file in files:
        mask = out_dir / f"{file.stem}.png"
        picture = out_dir / f"{file.stem}.overlay.png" if overlay else None
        for target in (mask, picture):
            if target is None:
                continue
            if target in written:
                problems.append(f"{file}: would overwrite {target.name}, also written for {written[target]}")
            written[target] = file
        paths.append((mask, picture))
    raise_problems(problems, DataError)
    return paths


def check_output_options(*, threshold: float, out_dir: Path) -> None:
    """Raise a UserError for a threshold outside (0, 1) or an ``out_dir`` that is not new or empty.

    Cheap and offline: the CLI calls it before it loads a study or a checkpoint.
    """
    _check_threshold(threshold)
    check_new_or_empty(out_dir, label="--out")


def _read(path: Path, channels: int) -> np.ndarray:
    try:
        return read_image(path, channels=channels)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable image ({first_line(exc)})") from None


def _save_png(array: np.ndarray, path: Path) -> None:
    # Atomic: an interrupted run never leaves a truncated mask behind.
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


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
    outputs = _output_paths(files, out_dir, overlay=overlay)
    channels = config.model.in_channels
    problems: list[str] = []
    for file in files:  # read once up front so that a bad file stops the run before any write
        try:
            check_nan(_read(file, channels), config.data.normalize)
        except DataError as exc:
            problems.append(str(exc))
        except ValueError as exc:
            problems.append(f"{file}: {exc}")
    raise_problems(problems, DataError)
    model = load_model(config, checkpoint, device=resolve_device(device))

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    # A resizing model takes a batch of images in one pass; one trained on patches takes one whole
    # image at a time (a batch of its windows), so that a single decoded image is held at once.
    step = config.data.batch_size if config.data.resize else 1
    for start in range(0, len(files), step):
        chunk = list(zip(files[start : start + step], outputs[start : start + step], strict=True))
        written += _write_chunk(
            model, chunk, config=config, threshold=threshold, overlap=overlap, blend=blend, tta=tta, on_image=on_image
        )
    return written


def _write_chunk(
    model: nn.Module,
    chunk: Sequence[tuple[Path, tuple[Path, Path | None]]],
    *,
    config: TrainConfig,
    threshold: float,
    overlap: float | None,
    blend: Blend | None,
    tta: bool,
    on_image: Callable[[Path, Path], None] | None,
) -> list[Path]:
    """Predict and write the masks (and overlays) of ``chunk``'s (input, (mask, overlay)) files; the masks'
    paths back. A function of its own so that its images and maps are freed before the next chunk's."""
    images = [_read(file, config.model.in_channels) for file, _ in chunk]
    probs = probability_maps(model, images, config=config, overlap=overlap, blend=blend, tta=tta)
    done: list[Path] = []
    for (file, (mask_path, overlay_path)), image, prob in zip(chunk, images, probs, strict=True):
        mask = _mask(prob, threshold)
        _save_png(mask * 255, mask_path)
        if overlay_path is not None:
            picture = to_display(image, config.data.normalize)
            _save_png(edge_overlay(picture, np.zeros_like(mask), mask, width=config.loss.edge_width), overlay_path)
        done.append(mask_path)
        if on_image is not None:
            on_image(file, mask_path)
    return done
