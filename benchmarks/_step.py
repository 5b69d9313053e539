"""The optimisation-step harness shared by ``trainer_overhead.py`` and ``edge_cost.py``.

Everything is in memory: one fixed list of batches, built once, fed to every variant, so the
timings are of the step alone (forward, loss, backward, optimizer, and for edgesearch its
per-step lr schedule, NaN guard and callbacks), not of decoding or augmenting images.

- ``bare``: a hand-written loop over an ``smp.Unet`` with Adam and ``binary_cross_entropy_with_logits``,
  the least a user could write;
- ``edgesearch``: the trainer's own epoch (``EpochRunner.train_epoch``, the code ``train()``
  runs) with a given loss config.

Every variant gets its own model with the same initial weights, and all parameters train (no
frozen stage), so the work per step is the same arithmetic.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

SIZES = {
    "full": {"encoder": "resnet18", "image_size": 128, "batch_size": 8, "steps": 2, "rounds": 11},
    "tiny": {"encoder": "resnet18", "image_size": 32, "batch_size": 2, "steps": 1, "rounds": 2},
}


@dataclass(frozen=True)
class Setup:
    encoder: str
    image_size: int
    batch_size: int
    steps: int
    rounds: int
    device: str


def batches(setup: Setup, *, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches of synthetic shapes, already tensors on the device."""
    from edgesearch.trainer.data import synthetic_sample

    out = []
    for b in range(setup.steps):
        images, masks = [], []
        for i in range(setup.batch_size):
            image, mask = synthetic_sample(b * setup.batch_size + i, size=setup.image_size, seed=seed)
            images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255.0)
            masks.append(torch.from_numpy(mask)[None].float())
        out.append((torch.stack(images).to(setup.device), torch.stack(masks).to(setup.device)))
    return out


def train_config(setup: Setup, **loss: Any) -> Any:
    from edgesearch.trainer import TrainConfig

    return TrainConfig.model_validate(
        {
            "model": {"arch": "unet", "encoder": setup.encoder, "encoder_weights": None},
            "data": {"image_size": setup.image_size, "batch_size": setup.batch_size, "num_workers": 0},
            "optim": {"name": "adam", "lr": 1.0e-3, "warmup_epochs": 1, "freeze_epochs": 0},
            "loss": {"kind": "bce", **loss},
            "device": setup.device,
        }
    )


def bare_step_runner(model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], float]:
    """A hand-written loop: returns a callable that runs one pass and gives seconds per step."""
    import time

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0e-3)

    def run() -> float:
        _sync(data[0][0])
        started = time.perf_counter()
        for images, masks in data:
            logits = model(images)
            loss = F.binary_cross_entropy_with_logits(logits, masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(data[0][0])
        return (time.perf_counter() - started) / len(data)

    return run


def edgesearch_step_runner(
    model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]], config: Any
) -> Callable[[], float]:
    """The trainer's epoch function over the same batches: returns seconds per step."""
    import time

    from edgesearch.trainer.epoch import EpochRunner

    device = torch.device(config.device)
    # freeze_epochs is 0: the runner's optimizer trains the encoder too, as the bare loop does.
    runner = EpochRunner.build(config, model, device=device, steps_per_epoch=len(data))
    runner.set_train_mode(0)

    def run() -> float:
        _sync(data[0][0])
        started = time.perf_counter()
        runner.train_epoch(data, 0)
        _sync(data[0][0])
        return (time.perf_counter() - started) / len(data)

    return run


def _sync(tensor: torch.Tensor) -> None:
    if tensor.device.type == "cuda":
        torch.cuda.synchronize(tensor.device)


def models(setup: Setup, n: int) -> list[torch.nn.Module]:
    """``n`` copies of one freshly initialised model, on the device."""
    from edgesearch.trainer.model import build_model

    base = build_model(train_config(setup).model).to(setup.device)
    if setup.device.startswith("cuda"):
        base = base.to(memory_format=torch.channels_last)
    return [copy.deepcopy(base) for _ in range(n)]
