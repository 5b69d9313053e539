"""train(config) -> TrainResult: the whole training run, top to bottom.

Per epoch: enter stage 2 when it is due (the encoder joins the optimizer), one pass over
the training data with the lr set per step by the schedule, one validation pass under
``inference_mode``, the plateau tracker, the history record, ``best.pt``/``last.pt``, then
the callbacks. On CUDA the forward pass runs under bf16 autocast (fp16 + GradScaler where
bf16 is missing) with channels_last tensors.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from edgesearch.errors import ConfigError, UserError
from edgesearch.trainer.callbacks import Callback, load_checkpoint, save_atomic
from edgesearch.trainer.config import TrainConfig
from edgesearch.trainer.data import build_datasets, build_loader
from edgesearch.trainer.edges import edge_map
from edgesearch.trainer.losses import total_loss
from edgesearch.trainer.metrics import MetricAccumulator
from edgesearch.trainer.model import backbone_parameters, build_model, head_parameters, set_backbone_trainable
from edgesearch.trainer.plots import plot_curves
from edgesearch.trainer.schedule import BACKBONE, HEAD, StagedSchedule, add_backbone_group, build_optimizer

__all__ = ["NonFiniteLossError", "TrainResult", "resolve_device", "train"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot continue."""


@dataclass
class TrainResult:
    best_val_iou: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_checkpoint: Path | None = None
    run_dir: Path | None = None


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit choice is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available here; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device: {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {name!r} requested but MPS is not available here; use cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    np_state = cast(tuple[Any, ...], np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)), "pos": int(np_state[2])},
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class _Precision:
    """Autocast + optional GradScaler for the device: bf16 on CUDA, fp16 + scaler without bf16."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.dtype: torch.dtype | None = None
        if device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()


@dataclass
class _Run:
    """What one epoch needs, built once by train()."""

    config: TrainConfig
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: StagedSchedule
    precision: _Precision
    callbacks: Sequence[Callback]

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda"

    @property
    def nonfinite_check_steps(self) -> int:
        """How often the running loss is checked for NaN/inf: each step where that costs no
        host-device sync (CPU), every 8th step on accelerators, and always at the epoch's end."""
        return 1 if self.device.type == "cpu" else 8

    def to_device(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks.to(self.device, non_blocking=True)


def _batches(loader: DataLoader[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[tuple[int, Any]]:
    try:
        yield from enumerate(loader)
    except (OSError, ValueError) as exc:  # a file changed or vanished after the data scan
        raise UserError(f"data: reading a batch failed: {exc}") from exc


def _train_epoch(run: _Run, loader: DataLoader[Any], epoch: int) -> float:
    cfg = run.config.loss
    loss_sum = torch.zeros((), device=run.device)
    n_steps = 0
    for step, (images, masks) in _batches(loader):
        images, masks = run.to_device(images, masks)
        run.schedule.apply(run.optimizer, epoch, step)
        with run.precision.autocast():
            logits = run.model(images)
        loss = total_loss(logits, masks, cfg)
        run.optimizer.zero_grad(set_to_none=True)
        run.precision.step(loss, run.optimizer)
        detached = loss.detach()
        loss_sum += detached
        n_steps += 1
        if n_steps % run.nonfinite_check_steps == 0 and not bool(torch.isfinite(loss_sum)):
            raise NonFiniteLossError(f"training loss became {loss_sum.item()} in epoch {epoch + 1}, step {step + 1}")
        for cb in run.callbacks:
            cb.on_batch_end(epoch=epoch, step=step, loss=detached)
    mean = (loss_sum / max(n_steps, 1)).item()
    if not math.isfinite(mean):
        raise NonFiniteLossError(f"training loss became {mean} in epoch {epoch + 1}")
    return mean


def _validate(run: _Run, loader: DataLoader[Any]) -> dict[str, float]:
    cfg = run.config.loss
    meter = MetricAccumulator(width=cfg.edge_width, device=run.device)
    loss_sum = torch.zeros((), device=run.device)
    n_batches = 0
    run.model.eval()
    with torch.inference_mode():
        for _, (images, masks) in _batches(loader):
            images, masks = run.to_device(images, masks)
            with run.precision.autocast():
                logits = run.model(images)
            # The target's edge map serves the edge term of the loss and two of the metrics: computed once.
            target_edges = edge_map(masks.float(), cfg.edge_width)
            loss_sum += total_loss(logits, masks, cfg, target_edges=target_edges)
            meter.update(torch.sigmoid(logits.float()), masks, target_edges=target_edges)
            n_batches += 1
    metrics = meter.compute()
    metrics["val_loss"] = loss_sum.item() / max(n_batches, 1)
    return metrics


def _enter_stage(run: _Run, epoch: int) -> None:
    has_backbone = any(group["name"] == BACKBONE for group in run.optimizer.param_groups)
    if run.schedule.stage(epoch) == 2 and not has_backbone:
        set_backbone_trainable(run.model, True)
        add_backbone_group(run.optimizer, backbone_parameters(run.model), run.config.optim)


def _set_train_mode(run: _Run, epoch: int) -> None:
    run.model.train()
    if run.schedule.stage(epoch) == 1:
        set_backbone_trainable(run.model, False)


def _write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def train(
    config: TrainConfig,
    *,
    callbacks: Sequence[Callback] = (),
    run_dir: Path | None = None,
    resume_from: Path | None = None,
) -> TrainResult:
    """Train one model as ``config`` says; write the run directory when ``run_dir`` is given.

    ``resume_from`` is a ``last.pt`` of an interrupted run with the same config: training
    continues at the epoch after the one it recorded, with the optimizer, schedule and RNG
    state it had. Bad data or config raise a :class:`UserError` before anything is written.
    """
    device = resolve_device(config.device)
    seed_everything(config.seed)
    train_ds, val_ds = build_datasets(config.data, channels=config.model.in_channels, seed=config.seed)
    model = build_model(config.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    state = _read_resume_state(resume_from, config) if resume_from is not None else None

    generator = torch.Generator()
    pin = device.type == "cuda"
    train_loader = build_loader(train_ds, config.data, train=True, generator=generator, pin_memory=pin)
    val_loader = build_loader(val_ds, config.data, train=False, pin_memory=pin)
    schedule = StagedSchedule(config.optim, steps_per_epoch=len(train_loader))
    start_epoch = int(state["epoch"]) if state else 0
    groups = {HEAD: head_parameters(model)}
    if schedule.stage(start_epoch) == 2:
        groups[BACKBONE] = backbone_parameters(model)
    optimizer = build_optimizer(config.optim, groups)
    run = _Run(config, device, model, optimizer, schedule, _Precision(device), callbacks)

    history: list[dict[str, Any]] = []
    best_iou, best_epoch = -math.inf, 0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        _set_rng_state(state["rng"])
        history = list(state["history"])
        best_iou, best_epoch = float(state["best_val_iou"]), int(state["best_epoch"])

    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(config.model_dump(mode="json"), run_dir / "config.json")
    best_path = run_dir / "best.pt" if run_dir is not None else None

    for cb in callbacks:
        cb.on_train_start(epochs=config.epochs, start_epoch=start_epoch, steps_per_epoch=len(train_loader))
    try:
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            _enter_stage(run, epoch)
            _set_train_mode(run, epoch)
            # Shuffling and augmentation depend on (seed, epoch) only, so a resumed run sees
            # the same batches as an uninterrupted one.
            generator.manual_seed(config.seed * 100_003 + epoch)
            train_ds.reseed(config.seed * 100_003 + epoch)
            train_loss = _train_epoch(run, train_loader, epoch)
            metrics = _validate(run, val_loader)
            lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
            lr_cut = schedule.end_epoch(epoch, metrics["val_iou"])
            record = {
                "epoch": epoch + 1,
                "stage": schedule.stage(epoch),
                "train_loss": train_loss,
                **metrics,
                "lrs": lrs,
                "lr_cut": lr_cut,
                "seconds": time.perf_counter() - started,
            }
            history.append(record)
            if metrics["val_iou"] > best_iou:
                best_iou, best_epoch = metrics["val_iou"], epoch + 1
                if best_path is not None:
                    save_atomic(model.state_dict(), best_path)
            if run_dir is not None:
                save_atomic(
                    {
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(),
                        "rng": _rng_state(),
                        "history": history,
                        "best_val_iou": best_iou,
                        "best_epoch": best_epoch,
                        "config": config.model_dump(mode="json"),
                    },
                    run_dir / "last.pt",
                )
                _write_json(history, run_dir / "history.json")
            for cb in callbacks:
                cb.on_epoch_end(record)
    finally:
        if run_dir is not None and history:
            plot_curves(history, run_dir / "curves.png", title=f"best val IoU {max(r['val_iou'] for r in history):.3f}")
    for cb in callbacks:
        cb.on_train_end(history)
    return TrainResult(
        best_val_iou=best_iou if history else 0.0,
        best_epoch=best_epoch,
        history=history,
        best_checkpoint=best_path if best_path is not None and best_path.exists() else None,
        run_dir=run_dir,
    )


def _read_resume_state(path: Path, config: TrainConfig) -> dict[str, Any]:
    try:
        state = load_checkpoint(path)
    except FileNotFoundError:
        raise ConfigError(f"resume: {path}: file not found") from None
    except Exception as exc:  # corrupt file, or not a checkpoint at all
        raise ConfigError(f"resume: {path}: not a readable edgesearch last.pt ({exc})") from None
    needed = {"epoch", "model", "optimizer", "schedule", "rng", "history", "best_val_iou", "best_epoch"}
    if not isinstance(state, dict) or not needed <= state.keys():
        raise ConfigError(f"resume: {path}: not an edgesearch last.pt (keys {sorted(needed)} expected)")
    saved_model = state.get("config", {}).get("model")
    if saved_model is not None and saved_model != config.model.model_dump(mode="json"):
        raise ConfigError(f"resume: {path}: was trained with model {saved_model}, not {config.model.model_dump()}")
    if int(state["epoch"]) >= config.epochs:
        raise ConfigError(f"resume: {path}: already has {state['epoch']} epochs; epochs is {config.epochs}")
    return state
