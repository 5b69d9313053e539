"""What an exported model's file records for a predictor: the ``metadata_props`` of ``export-model``'s ONNX files.

An exported graph (:mod:`~edgesearch.trainer.onnx_export`) maps an (N, C, H, W) float32 batch, normalised
as training normalised it, to (N, 1, H, W) foreground probabilities, with N, H and W free but H and W
multiples of the encoder's output stride. Its ``metadata_props`` (:data:`METADATA_KEYS`, all text) say what
a predictor needs to see an image as the model saw its validation images: the channels, how pixels become
0..1 (``data.normalize``), the mean and std, the stride, and either the sliding window (side, overlap,
``data.scale``, blend) or the square every image is resized to. :func:`metadata_of` writes them from a
trainer config, :func:`parse_metadata` reads them back (:mod:`~edgesearch.trainer.onnx_model`); one place
for both, so that what is written is what is read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edgesearch import __version__
from edgesearch.errors import ConfigError, raise_problems
from edgesearch.trainer.config import TrainConfig
from edgesearch.trainer.sliding_numpy import SIGMA_SCALE, Blend
from edgesearch.validation import shorten

__all__ = [
    "DEFAULT_THRESHOLD",
    "INPUT_NAME",
    "METADATA_FORMAT",
    "METADATA_KEYS",
    "OUTPUT_NAME",
    "ModelInfo",
    "metadata_of",
    "parse_metadata",
]

INPUT_NAME = "image"
OUTPUT_NAME = "probability"
DEFAULT_THRESHOLD = 0.5
"""The threshold the validation metrics count foreground at (``>=``), recorded as the file's default."""

METADATA_FORMAT = "1"
"""The layout of :data:`METADATA_KEYS`; a file of another layout is refused by name."""

METADATA_KEYS = (
    "edgesearch.metadata",
    "edgesearch.version",
    "edgesearch.source",
    "model.arch",
    "model.encoder",
    "model.in_channels",
    "input.stride",
    "input.normalize",
    "input.mean",
    "input.std",
    "inference",
    "window",
    "data.scale",
    "data.overlap",
    "data.batch_size",
    "blend",
    "sigma_scale",
    "threshold",
    "loss.edge_width",
)
"""What the file's ``metadata_props`` hold: the format and the edgesearch that wrote it, where the model came
from, arch and encoder, the input's channels, stride (H and W multiples of it), ``data.normalize`` mode, mean
and std (JSON lists, for 0..1 pixels), ``inference`` (``sliding_window``: ``window`` is the window's side;
``resize``: every image resized to a ``window`` square), ``data.scale``, ``data.overlap``, the windows per
batch, the default blend and the Gaussian's ``sigma_scale``, the default threshold and the overlay's edge width."""

Inference = Literal["sliding_window", "resize"]


@dataclass(frozen=True)
class ModelInfo:
    """What an exported model's metadata says (:data:`METADATA_KEYS`), parsed."""

    version: str
    source: str
    arch: str
    encoder: str
    in_channels: int
    stride: int
    normalize: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    inference: Inference
    window: int
    scale: float
    overlap: float
    batch_size: int
    blend: Blend
    threshold: float
    edge_width: int

    @property
    def resize(self) -> bool:
        """True when every image is resized to a ``window`` square, False for the sliding window."""
        return self.inference == "resize"


def metadata_of(
    config: TrainConfig, *, mean: Sequence[float], std: Sequence[float], stride: int, source: str
) -> dict[str, str]:
    """The ``metadata_props`` of ``config``'s model exported with the normalisation ``mean`` and ``std`` and
    the encoder's output ``stride``; ``source`` says which checkpoint (or trial) it came from."""
    data = config.data
    values: dict[str, Any] = {
        "edgesearch.metadata": METADATA_FORMAT,
        "edgesearch.version": __version__,
        "edgesearch.source": source,
        "model.arch": config.model.arch,
        "model.encoder": config.model.encoder,
        "model.in_channels": config.model.in_channels,
        "input.stride": stride,
        "input.normalize": data.normalize,
        "input.mean": json.dumps([float(v) for v in mean]),
        "input.std": json.dumps([float(v) for v in std]),
        "inference": "resize" if data.resize else "sliding_window",
        "window": data.window,
        "data.scale": data.scale,
        "data.overlap": data.overlap,
        "data.batch_size": data.batch_size,
        "blend": "gaussian",
        "sigma_scale": SIGMA_SCALE,
        "threshold": DEFAULT_THRESHOLD,
        "loss.edge_width": config.loss.edge_width,
    }
    return {key: str(values[key]) for key in METADATA_KEYS}


def parse_metadata(props: Mapping[str, str], *, source: str) -> ModelInfo:
    """The :class:`ModelInfo` of a file's ``metadata_props``; one :class:`ConfigError` naming ``source`` and
    every key that is missing or holds a value a predictor cannot use."""
    if "edgesearch.metadata" not in props:
        raise ConfigError(
            f"{source}: not a model exported by edgesearch export-model (its metadata has no edgesearch.metadata)"
        )
    if props["edgesearch.metadata"] != METADATA_FORMAT:
        raise ConfigError(
            f"{source}: metadata format {shorten(props['edgesearch.metadata'])} (written by edgesearch "
            f"{props.get('edgesearch.version')}); this edgesearch ({__version__}) reads format {METADATA_FORMAT}: "
            "export the model again"
        )
    problems: list[str] = []

    def read(key: str, parse: Callable[[str], Any], allowed: str) -> Any:
        try:
            return parse(props[key])
        except KeyError:
            problems.append(f"{source}: metadata {key} is missing")
        except (ValueError, TypeError):
            problems.append(f"{source}: metadata {key}: {shorten(props[key])} is not allowed; allowed: {allowed}")
        return None

    channels = read("model.in_channels", _positive_int, "an integer >= 1")
    info = {
        "version": read("edgesearch.version", str, "text"),
        "source": read("edgesearch.source", str, "text"),
        "arch": read("model.arch", str, "text"),
        "encoder": read("model.encoder", str, "text"),
        "in_channels": channels,
        "stride": read("input.stride", _positive_int, "an integer >= 1"),
        "normalize": read("input.normalize", _one_of("auto", "imagenet", "percentile"), "auto, imagenet, percentile"),
        "mean": read("input.mean", _floats(channels, positive=False), f"a JSON list of {channels} numbers"),
        "std": read("input.std", _floats(channels, positive=True), f"a JSON list of {channels} numbers > 0"),
        "inference": read("inference", _one_of("sliding_window", "resize"), "sliding_window, resize"),
        "window": read("window", _positive_int, "an integer >= 1"),
        "scale": read("data.scale", _number(0.0, math.inf), "a number > 0"),
        "overlap": read("data.overlap", _number(0.0, 1.0, low_open=False), "0 <= x < 1"),
        "batch_size": read("data.batch_size", _positive_int, "an integer >= 1"),
        "blend": read("blend", _one_of("gaussian", "mean"), "gaussian, mean"),
        "threshold": read("threshold", _number(0.0, 1.0), "0 < x < 1"),
        "edge_width": read("loss.edge_width", _positive_int, "an integer >= 1"),
    }
    if info["window"] is not None and info["stride"] is not None and info["window"] % info["stride"]:
        problems.append(
            f"{source}: metadata window {info['window']} is not a multiple of input.stride {info['stride']}"
        )
    raise_problems(problems, ConfigError)
    return ModelInfo(**info)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _one_of(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(text)
        return text

    return parse


def _number(low: float, high: float, *, low_open: bool = True) -> Callable[[str], float]:
    """A parser of a float in (low, high), or [low, high) when not ``low_open``."""

    def parse(text: str) -> float:
        value = float(text)
        if not (low < value if low_open else low <= value) or not value < high:
            raise ValueError(text)
        return value

    return parse


def _floats(count: int | None, *, positive: bool) -> Callable[[str], tuple[float, ...]]:
    def parse(text: str) -> tuple[float, ...]:
        values = json.loads(text)
        if not isinstance(values, list) or (count is not None and len(values) != count):
            raise ValueError(text)
        floats = tuple(float(v) for v in values if not isinstance(v, bool))
        if len(floats) != len(values) or not all(math.isfinite(v) and (v > 0 or not positive) for v in floats):
            raise ValueError(text)
        return floats

    return parse
