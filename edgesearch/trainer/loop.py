"""train(config) -> TrainResult: the whole training run, top to bottom, as one function to read.

Each epoch is :class:`~edgesearch.trainer.epoch.EpochRunner`'s, the checkpoints are written behind the loop
(:mod:`~edgesearch.trainer.checkpoint_writer`), and the order of things in an epoch is told once, in
ARCHITECTURE.md ("The path of one trial", step 4).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader

from edgesearch.files import atomic_write, atomic_write_text
from edgesearch.trainer import data_cache, run_files
from edgesearch.trainer.callbacks import Callback, StopForGood
from edgesearch.trainer.checkpoint_files import load_checkpoint, read_resume_state
from edgesearch.trainer.checkpoint_writer import Checkpointer
from edgesearch.trainer.config import TrainConfig
from edgesearch.trainer.data import SegmentationDataset, build_datasets, build_loader
from edgesearch.trainer.device import resolve_device
from edgesearch.trainer.device_data import DeviceBatches, device_batches
from edgesearch.trainer.device_patches import DevicePatches
from edgesearch.trainer.epoch import Batches, EpochRunner, NonFiniteLossError
from edgesearch.trainer.model import build_model
from edgesearch.trainer.patch_data import PatchDataset, WholeImages
from edgesearch.trainer.plots import draw_edge_overlay, plot_curves
from edgesearch.trainer.records import EpochRecord

__all__ = ["NonFiniteLossError", "TrainResult", "seed_everything", "train"]

_log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best_val_iou: float
    best_epoch: int
    history: list[EpochRecord] = field(default_factory=list)
    best_checkpoint: Path | None = None
    run_dir: Path | None = None
    checkpoint_wait_s: float = 0.0
    """Seconds the epochs waited on checkpoints (host copies, a write still in flight)."""
    checkpoint_final_s: float = 0.0
    """Seconds the end of the run waited for the last checkpoint write."""
    model: torch.nn.Module | None = None
    """The trained model with its best epoch's weights, in eval mode on the training device (also
    without a ``run_dir``): ready for ``trainer.inference.probability_maps`` or ``torch.save``."""


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


@dataclass
class _Best:
    """The best epoch so far: its weights live in the Checkpointer; its per-image IoU here."""

    iou: float = -math.inf
    epoch: int = 0
    image_ious: list[float] | None = None


def _draw(
    history: list[EpochRecord],
    run_dir: Path,
    *,
    model: torch.nn.Module,
    val_ds: SegmentationDataset,
    config: TrainConfig,
    best: _Best,
    best_weights: dict[str, Any] | None,
) -> None:
    """curves.png, then edges.png from the best weights (kept in memory, or best.pt of a resumed run).

    Pictures are best effort: a failure is logged, never the end of a trained run.
    """
    try:
        plot_curves(history, run_dir / run_files.CURVES, title=f"best val IoU {best.iou:.3f}")
    except Exception as exc:
        _log.warning("could not draw %s: %s", run_dir / run_files.CURVES, exc)
    try:
        if best_weights is not None:
            model.load_state_dict(best_weights)
        elif (run_dir / run_files.BEST).is_file():  # resumed, and no better epoch since
            model.load_state_dict(load_checkpoint(run_dir / run_files.BEST))
        else:
            return
        model.eval()
        ious = best.image_ious if best.image_ious is not None and len(best.image_ious) == len(val_ds) else None
        draw_edge_overlay(model, val_ds, config, run_dir / run_files.EDGES, image_ious=ious)
    except Exception as exc:
        _log.warning("could not draw %s: %s", run_dir / run_files.EDGES, exc)


def _carry_best(last: Path, run_dir: Path, best: _Best) -> None:
    """Give a resumed run its best weights so far, so that it ends with a ``best.pt`` however its epochs go.

    They are the ``best.pt`` beside ``last``: copied when the run goes on in another folder. Without
    one, the best is chosen again among the epochs trained now.
    """
    source, target = last.parent / run_files.BEST, run_dir / run_files.BEST
    if not source.is_file():
        _log.warning(
            "%s: no %s beside it; the best model is chosen again from the epochs trained now", last, source.name
        )
        best.iou, best.epoch = -math.inf, 0
    elif not (target.exists() and source.samefile(target)):
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def _with_best_weights(
    model: torch.nn.Module, best_weights: dict[str, Any] | None, run_dir: Path | None
) -> torch.nn.Module:
    """``model`` holding the run's best weights: those kept in memory, else (a resumed run with no
    better epoch since) its ``best.pt``; in eval mode."""
    if best_weights is not None:
        model.load_state_dict(best_weights)
    elif run_dir is not None and (run_dir / run_files.BEST).is_file():
        model.load_state_dict(load_checkpoint(run_dir / run_files.BEST))
    return model.eval()


def _write_json(obj: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def train(
    config: TrainConfig,
    *,
    callbacks: Sequence[Callback] = (),
    run_dir: Path | None = None,
    resume_from: Path | None = None,
    force_resume: bool = False,
    last_at_end: bool = True,
) -> TrainResult:
    """Train one model as ``config`` says; write the run directory when ``run_dir`` is given.

    ``resume_from`` is a ``last.pt`` of an interrupted run with the same config: training
    continues at the epoch after the one it recorded, with the optimizer, schedule and RNG
    state it had; ``force_resume`` lets it continue with changed loss, optimiser or data settings.
    ``last_at_end=False``: a run that trains all its epochs writes no ``last.pt`` for its end (a study
    trial, which nothing resumes once it is finished; ``best.pt`` is written as always), as a callback's
    :class:`~edgesearch.trainer.callbacks.StopForGood` ends any run. A stop or a failure still writes it.
    Bad data or config raise a :class:`UserError` before anything is written.
    """
    data_cache.check_budget()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    train_ds, val_ds = build_datasets(config.data, model=config.model, seed=config.seed)
    source = str(config.data.root) if config.data.root is not None else "synthetic shapes"
    for cb in callbacks:
        cb.on_data(train=len(train_ds), val=len(val_ds), source=source)
    model = build_model(config.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    state = read_resume_state(resume_from, config, force=force_resume) if resume_from is not None else None

    generator = torch.Generator()
    channels = config.model.in_channels
    on_device = device_batches(
        train_ds, val_ds, config.data, channels=channels, edge_width=config.loss.edge_width, device=device
    )
    train_loader: DataLoader[tuple[torch.Tensor, torch.Tensor]] | DeviceBatches | DevicePatches
    val_loader: Batches
    train_set = train_ds
    if on_device is not None:
        train_loader, val_loader = on_device
    else:
        # Patches: training on native-resolution patches, validation on whole images (trainer/patches.py).
        # Built only here: it keeps every prepared image in host memory, which the device path does not need.
        if not config.data.resize:
            train_set = PatchDataset(train_ds, config.data, edge_width=config.loss.edge_width)
        pin = device.type == "cuda"
        train_loader = build_loader(
            train_set, config.data, train=True, generator=generator, pin_memory=pin, device=device
        )
        val_loader = (
            build_loader(val_ds, config.data, train=False, pin_memory=pin, device=device)
            if config.data.resize
            else WholeImages(val_ds, config.data)
        )
    start_epoch = int(state["epoch"]) if state else 0
    runner = EpochRunner.build(
        config,
        model,
        device=device,
        steps_per_epoch=len(train_loader),
        start_epoch=start_epoch,
        callbacks=callbacks,
        with_backbone=len(state["optimizer"]["param_groups"]) > 1 if state else None,
    )

    history: list[EpochRecord] = []
    best = _Best()
    kept: dict[str, Any] | None = None  # the best weights, when no Checkpointer keeps them
    if state:
        model.load_state_dict(state["model"])
        runner.optimizer.load_state_dict(state["optimizer"])
        runner.schedule.load_state_dict(state["schedule"])
        _set_rng_state(state["rng"])
        history = list(state["history"])
        best.iou, best.epoch = float(state["best_val_iou"]), int(state["best_epoch"])

    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(config.model_dump(mode="json"), run_dir / run_files.CONFIG)
        if resume_from is not None and state:
            _carry_best(resume_from, run_dir, best)
    best_path = run_dir / run_files.BEST if run_dir is not None else None
    checkpoints = (
        Checkpointer(run_dir / run_files.LAST, run_dir / run_files.BEST, interval=config.checkpoint_interval)
        if run_dir is not None
        else None
    )

    def finish() -> None:
        # The last write runs behind the pictures: they take about as long, and need no disk bandwidth.
        if checkpoints is not None:
            checkpoints.start_close()
        try:
            if run_dir is not None and history:
                best_weights = checkpoints.best_weights if checkpoints is not None else None
                _draw(history, run_dir, model=model, val_ds=val_ds, config=config, best=best, best_weights=best_weights)
        finally:
            if checkpoints is not None:
                checkpoints.close()

    for cb in callbacks:
        cb.on_train_start(epochs=config.epochs, start_epoch=start_epoch, steps_per_epoch=len(train_loader))
    try:
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            runner.enter_stage(epoch)
            runner.set_train_mode(epoch)
            # Shuffling and augmentation depend on (seed, epoch) only, so a resumed run sees
            # the same batches as an uninterrupted one.
            epoch_seed = config.seed * 100_003 + epoch
            if isinstance(train_loader, (DeviceBatches, DevicePatches)):
                train_loader.reseed(epoch_seed)
            else:
                generator.manual_seed(epoch_seed)
                train_set.reseed(epoch_seed)
            train_loss = runner.train_epoch(train_loader, epoch)
            metrics = runner.validate(val_loader) if config.data.resize else runner.validate_whole(val_loader)
            lrs = {group["name"]: group["lr"] for group in runner.optimizer.param_groups}
            lr_cut = runner.schedule.end_epoch(epoch, metrics["val_iou"])
            record = EpochRecord(
                epoch=epoch + 1,
                stage=runner.schedule.stage(epoch),
                train_loss=train_loss,
                val_loss=metrics["val_loss"],
                val_iou=metrics["val_iou"],
                val_boundary_iou=metrics["val_boundary_iou"],
                val_edge_corr=metrics["val_edge_corr"],
                lrs=lrs,
                lr_cut=lr_cut,
                seconds=time.perf_counter() - started,
            )
            history.append(record)
            if record["val_iou"] > best.iou:
                best.iou, best.epoch, best.image_ious = record["val_iou"], epoch + 1, runner.image_ious
                if checkpoints is not None:
                    checkpoints.improved(model.state_dict())
                else:
                    kept = {name: value.detach().clone() for name, value in model.state_dict().items()}
            finished = not last_at_end and epoch + 1 == config.epochs
            if checkpoints is not None and finished:
                checkpoints.skip_last()  # its last epoch: nothing will resume the run from a last.pt
            elif checkpoints is not None and run_dir is not None:
                checkpoints.epoch_end(
                    {
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimizer": runner.optimizer.state_dict(),
                        "schedule": runner.schedule.state_dict(),
                        "rng": _rng_state(),
                        "history": history,
                        "best_val_iou": best.iou,
                        "best_epoch": best.epoch,
                        "config": config.model_dump(mode="json"),
                    }
                )
            if run_dir is not None:
                _write_json(history, run_dir / run_files.HISTORY)
            for cb in callbacks:
                cb.on_epoch_end(record)
    except BaseException as exc:
        # Stopped, pruned or failed: the last whole epoch is written, then the error goes on. A
        # failure to write is only logged here: the error that stopped the run comes first.
        if isinstance(exc, StopForGood) and checkpoints is not None:
            checkpoints.skip_last()
        try:
            finish()
        except Exception as exc:
            _log.warning("could not write the last checkpoint of %s: %s", run_dir, exc)
        raise
    finish()
    trained = _with_best_weights(model, checkpoints.best_weights if checkpoints is not None else kept, run_dir)
    for cb in callbacks:
        cb.on_train_end(history)
    return TrainResult(
        best_val_iou=best.iou if history else 0.0,
        best_epoch=best.epoch,
        history=history,
        best_checkpoint=best_path if best_path is not None and best_path.exists() else None,
        run_dir=run_dir,
        checkpoint_wait_s=checkpoints.epoch_wait_s if checkpoints is not None else 0.0,
        checkpoint_final_s=checkpoints.final_wait_s if checkpoints is not None else 0.0,
        model=trained,
    )
