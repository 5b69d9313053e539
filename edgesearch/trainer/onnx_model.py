"""An exported model in onnxruntime: ``predict --onnx`` without torch.

``edgesearch export-model`` (:mod:`~edgesearch.trainer.onnx_export`) writes one ONNX file whose graph gives
probabilities and whose metadata says how to feed it (:mod:`~edgesearch.trainer.onnx_metadata`).
:func:`load_onnx_model` reads a file back into onnxruntime, and :meth:`OnnxModel.probability_maps` predicts
whole images as :func:`~edgesearch.trainer.inference.probability_maps` does with the PyTorch model: the
same inputs (:mod:`~edgesearch.trainer.model_input`), the same windows and weights
(:mod:`~edgesearch.trainer.sliding_numpy`), the same resampling back. Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgesearch.errors import ConfigError, first_line
from edgesearch.trainer.model_input import at_size, normalized_input, unit_image
from edgesearch.trainer.onnx_metadata import DEFAULT_THRESHOLD, ModelInfo, parse_metadata
from edgesearch.trainer.predict_io import (
    check_inputs,
    check_output_options,
    check_threshold,
    check_window_options,
    collect_inputs,
    output_paths,
    write_predictions,
)
from edgesearch.trainer.sliding_numpy import Blend, flip_mean, sliding_window_numpy

__all__ = ["OnnxModel", "load_onnx_model", "predict_onnx_files"]


class OnnxModel:
    """An exported model loaded into onnxruntime (:func:`load_onnx_model`): its :class:`ModelInfo` and its
    probabilities, of one batch or of whole images."""

    def __init__(self, session: Any, info: ModelInfo, path: Path) -> None:
        self.session = session
        self.info = info
        self.path = path
        self._input = session.get_inputs()[0].name

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """The (N, 1, H, W) float32 probabilities of an (N, C, H, W) batch normalised as the metadata says.

        H and W must be multiples of the metadata's ``input.stride`` (the encoder halves the resolution
        that many times over): a ValueError names another size, and a batch of other channels or dtype.
        """
        info = self.info
        if batch.ndim != 4 or batch.shape[1] != info.in_channels or batch.dtype != np.float32:
            raise ValueError(
                f"{self.path}: expected an (N, {info.in_channels}, H, W) float32 batch, got {batch.shape} {batch.dtype}"
            )
        height, width = batch.shape[2:]
        if height % info.stride or width % info.stride or 0 in batch.shape:
            raise ValueError(
                f"{self.path}: an input of {height}x{width} pixels; H and W must be multiples of the encoder's "
                f"output stride {info.stride} (pad the image, as predict's sliding window does)"
            )
        (probs,) = self.session.run(None, {self._input: np.ascontiguousarray(batch)})
        return np.asarray(probs, dtype=np.float32)

    def probability_maps(
        self,
        images: Sequence[np.ndarray],
        *,
        overlap: float | None = None,
        blend: Blend | None = None,
        tta: bool = False,
    ) -> list[np.ndarray]:
        """One (H, W) float32 probability map per (H, W, C) image as read, each at its image's own size.

        As :func:`~edgesearch.trainer.inference.probability_maps` with the PyTorch model: a model trained on
        patches slides its window over each image at ``data.scale`` (``overlap`` None: the metadata's
        ``data.overlap``; ``blend`` None: the metadata's), one that resizes predicts all ``images`` at its
        square in one batch (``overlap`` and ``blend`` refused); ``tta`` averages the four flips.
        """
        info = self.info
        check_window_options(overlap=overlap, blend=blend, resizes_to=info.window if info.resize else None)
        if info.resize:
            return self._resized_maps(images, tta=tta)
        maps = []
        for image in images:
            unit = normalized_input(
                image,
                channels=info.in_channels,
                normalize=info.normalize,
                scale=info.scale,
                mean=info.mean,
                std=info.std,
            )
            prob = sliding_window_numpy(
                self.probabilities,
                unit.transpose(2, 0, 1),
                window=info.window,
                overlap=info.overlap if overlap is None else overlap,
                blend=info.blend if blend is None else blend,
                tta=tta,
                batch_size=info.batch_size,
            )
            maps.append(at_size(prob, image.shape[:2]))
        return maps

    def _resized_maps(self, images: Sequence[np.ndarray], *, tta: bool) -> list[np.ndarray]:
        if not images:
            return []
        batch = np.stack([self._resized_input(image) for image in images])
        probs = flip_mean(self.probabilities, batch, tta=tta)[:, 0]
        return [at_size(prob, image.shape[:2]) for prob, image in zip(probs, images, strict=True)]

    def _resized_input(self, image: np.ndarray) -> np.ndarray:
        """(C, s, s): the image at 0..1, resized (bilinear) to the model's square, normalised, as the
        validation transform (albumentations' ``Resize`` then ``Normalize``) makes it."""
        info, side = self.info, self.info.window
        unit = unit_image(image, channels=info.in_channels, normalize=info.normalize)
        resized: np.ndarray = cv2.resize(unit, (side, side), interpolation=cv2.INTER_LINEAR)
        resized = resized.reshape(side, side, info.in_channels)  # OpenCV drops a single channel
        resized -= np.asarray(info.mean, dtype=np.float32)
        resized /= np.asarray(info.std, dtype=np.float32)
        return np.ascontiguousarray(resized.transpose(2, 0, 1))


def _threads() -> int:
    """onnxruntime's threads per operator: ``$OMP_NUM_THREADS`` where set, as torch takes it, else its default."""
    text = os.environ.get("OMP_NUM_THREADS", "")
    return int(text) if text.isdigit() and int(text) > 0 else 0


def load_onnx_model(path: Path, *, threads: int | None = None) -> OnnxModel:
    """The model of an ONNX file written by ``edgesearch export-model``, in onnxruntime on the CPU.

    ``threads`` per operator (None: ``$OMP_NUM_THREADS`` where set, else onnxruntime's default, 0). A
    missing file, one onnxruntime cannot load, a graph of other inputs or outputs than one image batch and
    one probability batch, and metadata a predictor cannot use raise a one-line :class:`ConfigError` each.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: ONNX model not found")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _threads() if threads is None else threads
    options.log_severity_level = 3  # errors only: its warnings about the graph's initialisers are not the user's
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises kinds of its own (InvalidProtobuf, Fail, InvalidGraph, ...)
        raise ConfigError(f"{path}: not an ONNX model onnxruntime can load ({first_line(exc)})") from None
    info = parse_metadata(session.get_modelmeta().custom_metadata_map, source=str(path))
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if len(inputs) != 1 or len(outputs) != 1 or len(shape) != 4 or shape[1] != info.in_channels:
        shapes = ", ".join(f"{arg.name} ({', '.join(map(str, arg.shape))})" for arg in [*inputs, *outputs])
        raise ConfigError(
            f"{path}: expected one input (N, {info.in_channels}, H, W) and one output (N, 1, H, W); "
            f"the graph has {shapes}"
        )
    return OnnxModel(session, info, path)


def predict_onnx_files(
    model: OnnxModel | Path,
    inputs: Sequence[Path],
    out_dir: Path,
    *,
    threshold: float | None = None,
    overlay: bool = False,
    overlap: float | None = None,
    blend: Blend | None = None,
    tta: bool = False,
    threads: int | None = None,
    on_image: Callable[[Path, Path], None] | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<stem>.png`` (0/255, the input's size) for every input image with an exported model
    (loaded, or the path of its file: :func:`load_onnx_model` with ``threads``); return their paths. What
    :func:`~edgesearch.trainer.predict.predict_files` does with a checkpoint, with onnxruntime on the CPU
    instead of torch.

    ``threshold`` None: the file's (0.5); ``overlap``, ``blend`` and ``tta`` as in
    :meth:`OnnxModel.probability_maps`; ``overlay`` and ``on_image`` as in ``predict_files``. Bad inputs and
    options, an out_dir that is not new or empty, and a file that is not an exported model raise a
    :class:`~edgesearch.errors.UserError` before anything is written.
    """
    check_output_options(threshold=DEFAULT_THRESHOLD if threshold is None else threshold, out_dir=out_dir)
    check_window_options(overlap=overlap, blend=blend)
    files = collect_inputs(inputs)
    outputs = output_paths(files, out_dir, overlay=overlay)
    loaded = model if isinstance(model, OnnxModel) else load_onnx_model(model, threads=threads)
    info = loaded.info
    check_window_options(overlap=overlap, blend=blend, resizes_to=info.window if info.resize else None)
    threshold = info.threshold if threshold is None else threshold
    check_threshold(threshold)
    check_inputs(files, channels=info.in_channels, normalize=info.normalize)

    def maps(images: list[np.ndarray]) -> list[np.ndarray]:
        return loaded.probability_maps(images, overlap=overlap, blend=blend, tta=tta)

    # As predict_files: a resizing model takes a batch of images, one trained on patches one image at a time.
    return write_predictions(
        files,
        outputs,
        maps,
        channels=info.in_channels,
        normalize=info.normalize,
        threshold=threshold,
        edge_width=info.edge_width,
        step=info.batch_size if info.resize else 1,
        on_image=on_image,
    )
