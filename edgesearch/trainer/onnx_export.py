"""A trained model exported to ONNX: ``best.pt`` and its config in, one self-contained ``.onnx`` file out.

The graph is the model followed by a sigmoid, so that it gives the probabilities ``predict`` thresholds:
input ``image`` (N, C, H, W) float32, normalised as training normalised it, output ``probability``
(N, 1, H, W). N, H and W are free, H and W as multiples of the encoder's output stride (32 for the usual
encoders; the graph names them ``32*h`` and ``32*w``). It is exported with torch's ``torch.export``-based
exporter (the one torch develops; it needs ``onnxscript``) at opset :data:`OPSET`, which onnxruntime and
the usual serving stacks run, with the weights inside the file. The file's ``metadata_props`` record what a
predictor needs (:data:`~edgesearch.trainer.onnx_metadata.METADATA_KEYS`), the graph is checked with
``onnx.checker``, and the file is written atomically: a failed export leaves nothing behind.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgesearch.files import atomic_write, writable_target
from edgesearch.trainer.config import TrainConfig
from edgesearch.trainer.input_stats import model_normalization
from edgesearch.trainer.onnx_metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo, metadata_of, parse_metadata
from edgesearch.trainer.predict import load_model

__all__ = ["OPSET", "ExportedModel", "export_onnx", "output_stride"]

OPSET = 18
"""The ONNX opset of exported graphs: torch's exporter's own, run by onnxruntime (1.14 and later) and TensorRT."""

_EXAMPLE_SIDES = (2, 3)
"""The example batch's height and width in strides: two different sizes above 1, so that the exporter keeps
both free (a side of 1 stride, or two equal ones, could be taken as fixed or as one)."""


@dataclass(frozen=True)
class ExportedModel:
    """An exported file and what its metadata says."""

    path: Path
    info: ModelInfo
    opset: int


class _Probabilities(nn.Module):
    """The model followed by the sigmoid: the exported graph gives what ``predict`` thresholds."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(image))


def output_stride(model: nn.Module) -> int:
    """The factor an smp model's input height and width must be multiples of: its encoder's output stride
    (32 for the usual encoders, 16 or 8 for dilated ones)."""
    encoder = getattr(model, "encoder", None)
    return int(getattr(encoder, "output_stride", 32))


def export_onnx(config: TrainConfig, checkpoint: Path, out: Path, *, source: str | None = None) -> ExportedModel:
    """Export the model of ``config`` with the weights of ``checkpoint`` to the ONNX file ``out``.

    ``source`` says in the metadata where the model came from (default: the checkpoint's path). A checkpoint
    that is missing or does not fit the config, and an ``out`` that cannot be written, raise a UserError
    before anything is written; the file is checked with ``onnx.checker`` before it replaces ``out``.
    """
    import onnx

    writable_target(out)  # its folder exists and it is no folder: checked before the model is loaded
    model = load_model(config, checkpoint, device=torch.device("cpu"))
    stride = output_stride(model)
    mean, std = model_normalization(config.model)
    metadata = metadata_of(config, mean=mean, std=std, stride=stride, source=source or str(checkpoint))
    proto = _export_graph(_Probabilities(model).eval(), channels=config.model.in_channels, stride=stride)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    m = config.model
    proto.doc_string = (
        f"edgesearch {m.arch}/{m.encoder}: {INPUT_NAME} (N, {m.in_channels}, H, W) float32, H and W multiples of "
        f"{stride} -> {OUTPUT_NAME} (N, 1, H, W), the sigmoid of the logits; see metadata_props"
    )
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(out, lambda tmp: onnx.save_model(proto, str(tmp)))
    return ExportedModel(out, parse_metadata(metadata, source=str(out)), OPSET)


def _export_graph(model: nn.Module, *, channels: int, stride: int) -> Any:
    """The ONNX ``ModelProto`` of ``model`` with a free batch size and free H and W that are multiples of ``stride``."""
    from torch.export import Dim

    height, width = (side * stride for side in _EXAMPLE_SIDES)
    example = torch.zeros(2, channels, height, width)
    free = {0: Dim("n", min=1), 2: stride * Dim("h", min=1), 3: stride * Dim("w", min=1)}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on deprecated torch internals, not the user's
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"image": free},
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    if program is None:  # the torch.export-based exporter returns its ONNXProgram; None would be torch's bug
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    return program.model_proto
