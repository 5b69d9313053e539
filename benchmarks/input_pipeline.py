"""Input pipeline: images/s the loader delivers against images/s the training step consumes.

A folder of PNG image/mask pairs (320 px, written untimed) goes through edgesearch's own
dataset, albumentations pipeline and DataLoader at 256 px with two loader processes
(``persistent_workers``), and in-process. The step is edgesearch's trainer step with the default
model (U-Net, resnet34) and batch size on the same machine. Target: the loader delivers >= 1.5x
what the step consumes. As a check of the same thing from inside training, one real epoch
measures the share of its wall time spent waiting for the next batch.

Then the device path (``data.loader: device``) on the same images: the dataset resident on the
device (CUDA when there is one, else this CPU), flips, quarter turns and brightness applied a batch
at a time: its images/s against the CPU path's, and the one-time cost of making it resident.

    python benchmarks/input_pipeline.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import _step

TARGET = 1.5
SIZES = {
    "full": {
        "n_images": 80,
        "source_px": 320,
        "image_size": 256,
        "loader_epochs": 2,
        "step_rounds": 2,
        "epoch_batches": 3,
    },
    "tiny": {
        "n_images": 12,
        "source_px": 80,
        "image_size": 64,
        "loader_epochs": 1,
        "step_rounds": 1,
        "epoch_batches": 1,
    },
}


def write_pngs(root: Path, *, n: int, size: int) -> Path:
    from PIL import Image

    from edgesearch.trainer.data import synthetic_sample

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(n):
        image, mask = synthetic_sample(i, size=size, seed=0)
        Image.fromarray(image).save(root / "images" / f"{i:04d}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"{i:04d}.png")
    return root


def loader_images_per_second(loader: Any, epochs: int) -> float:
    for _ in loader:  # the first pass starts the (persistent) worker processes
        pass
    n, started = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _masks in loader:
            n += images.shape[0]
    return n / (time.perf_counter() - started)


class TimedLoader:
    """Wraps a loader; adds up the time the consumer waits for each next batch."""

    def __init__(self, loader: Any, limit: int) -> None:
        self.loader, self.limit, self.wait = loader, limit, 0.0

    def __len__(self) -> int:
        return min(len(self.loader), self.limit)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        for _ in range(len(self)):
            started = time.perf_counter()
            batch = next(it)
            self.wait += time.perf_counter() - started
            yield batch


class _Synced:
    """A batch iterable that waits for the device after each batch (CUDA runs asynchronously)."""

    def __init__(self, batches: Any, device: Any) -> None:
        self.batches, self.device = batches, device

    def __iter__(self) -> Iterator[Any]:
        import torch

        for batch in self.batches:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            yield batch


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    import torch

    from edgesearch.trainer import TrainConfig
    from edgesearch.trainer.config import ModelConfig
    from edgesearch.trainer.data import build_datasets, build_loader
    from edgesearch.trainer.epoch import EpochRunner
    from edgesearch.trainer.model import build_model

    size = SIZES["tiny" if args.tiny else "full"]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_pngs(Path(tmp) / "data", n=size["n_images"], size=size["source_px"])
        overrides: dict[str, Any] = {
            "data": {"root": str(root), "image_size": size["image_size"], "num_workers": 2},
            # The encoder trains too (stage 2): the most expensive step, the one the loader must keep up with.
            "optim": {"freeze_epochs": 0},
            "device": "cpu",
        }
        if args.tiny:
            overrides["model"] = {"encoder": "resnet18"}
            overrides["data"]["batch_size"] = 4
        config = TrainConfig.model_validate(overrides)
        data = config.data
        _common.log(
            f"input pipeline: {size['n_images']} PNGs of {size['source_px']} px -> {data.image_size} px, "
            f"batch {data.batch_size}, num_workers {data.num_workers}, model {config.model.arch}/{config.model.encoder}"
        )
        train_ds, _ = build_datasets(data, model=ModelConfig(), seed=0)
        loader = build_loader(train_ds, data, train=True, generator=torch.Generator())
        loader_ips = loader_images_per_second(loader, size["loader_epochs"])
        serial = build_loader(train_ds, data.model_copy(update={"num_workers": 0}), train=True)
        serial_ips = loader_images_per_second(serial, 1)
        _common.log(f"loader: {loader_ips:.1f} images/s ({data.num_workers} workers), {serial_ips:.1f} in-process")

        batches = [batch for batch, _ in zip(loader, range(2), strict=False)]
        model = build_model(config.model)
        setup = _step.Setup(
            encoder=config.model.encoder,
            image_size=data.image_size,
            batch_size=data.batch_size,
            steps=len(batches),
            rounds=size["step_rounds"],
            device="cpu",
        )
        step = _step.edgesearch_step_runner(model, batches, config)
        samples = _common.alternate({"step": step}, rounds=setup.rounds)["step"]
        step_ips = data.batch_size / _common.median(samples)
        _common.log(f"step: {step_ips:.2f} images/s ({_common.median(samples):.2f} s per batch of {data.batch_size})")

        # One real epoch fed by the real loader: how long does the step wait for data?
        timed = TimedLoader(loader, size["epoch_batches"])
        runner = EpochRunner.build(config, model, device=torch.device("cpu"), steps_per_epoch=len(timed))
        runner.set_train_mode(0)
        started = time.perf_counter()
        runner.train_epoch(timed, 0)
        epoch_s = time.perf_counter() - started

        # The device path over the same images.
        from edgesearch.trainer.data import normalization
        from edgesearch.trainer.device_data import DeviceBatches, resident_tensors

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        started = time.perf_counter()
        images, masks = resident_tensors(train_ds, image_size=data.image_size)
        mean, std = normalization(3)
        resident = DeviceBatches(
            images.to(device),
            masks.to(device),
            batch_size=data.batch_size,
            train=True,
            augment=True,
            mean=mean,
            std=std,
        )
        resident_s = time.perf_counter() - started
        device_ips = loader_images_per_second(_Synced(resident, device), max(2, size["loader_epochs"]))
        _common.log(
            f"device path on {device}: {device_ips:.1f} images/s (made resident in {resident_s:.2f} s); "
            f"CPU path {loader_ips:.1f} images/s with 2 processes"
        )

    value = _common.ratio(loader_ips, step_ips)
    wait_share = timed.wait / epoch_s
    _common.log(f"loader/step {value:.1f}x; waiting for data: {100 * wait_share:.1f}% of a training epoch")
    _common.emit(
        "input_pipeline",
        args,
        {
            "settings": {
                "image_size": data.image_size,
                "batch_size": data.batch_size,
                "num_workers": data.num_workers,
                "persistent_workers": data.num_workers > 0,
                "pin_memory": "on CUDA only",
                "augment": data.augment,
                "model": f"{config.model.arch}/{config.model.encoder}",
                "n_images": size["n_images"],
            },
            "loader_images_per_s": loader_ips,
            "device_path": {
                "device": str(device),
                "images_per_s": device_ips,
                "resident_seconds": resident_s,
                "over_cpu_path": _common.ratio(device_ips, loader_ips),
            },
            "loader_in_process_images_per_s": serial_ips,
            "step_images_per_s": step_ips,
            "step_seconds": samples,
            "ratio": value,
            "data_wait_share_of_epoch": wait_share,
            "target": f">= {TARGET}",
            "met": value is not None and value >= TARGET,
        },
    )


if __name__ == "__main__":
    main()
