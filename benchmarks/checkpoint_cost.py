"""Checkpoint cost: the share of a run that training spends waiting on checkpoints, at 64 px.

One run of the quickstart's size (U-Net/resnet18, 96 synthetic images at 64 px, batch 8) trains with
the default ``checkpoint_interval`` (60 s) and with 0 (a write after every epoch, still in the
background), alternating; ``TrainResult.checkpoint_wait_s`` is what the epochs waited (host copies,
a write still in flight), against the epochs' time; the last write at the run's end
(``checkpoint_final_s``) is reported apart, once per run. For scale, the cost the
loop paid before: one synchronous ``save_checkpoint`` of ``last.pt`` + ``best.pt`` per epoch, timed
on the same state. Target: the default's share <= 2%.

    python benchmarks/checkpoint_cost.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

TARGET = 0.02
SIZES = {"full": {"epochs": 6, "rounds": 3, "n_images": 96}, "tiny": {"epochs": 1, "rounds": 1, "n_images": 16}}


def _config(size: dict[str, int], interval: float) -> Any:
    from edgesearch.trainer import TrainConfig

    return TrainConfig.model_validate(
        {
            "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
            "data": {"image_size": 64, "batch_size": 8, "num_workers": 0, "synthetic": {"n_images": size["n_images"]}},
            "epochs": size["epochs"],
            "device": "cpu",
            "checkpoint_interval": interval,
        }
    )


def _share(size: dict[str, int], interval: float) -> dict[str, float]:
    from edgesearch.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        result = train(_config(size, interval), run_dir=Path(tmp) / "run")
    epochs = sum(row["seconds"] for row in result.history)
    return {
        "share": result.checkpoint_wait_s / epochs,
        "waited_s": result.checkpoint_wait_s,
        "final_write_s": result.checkpoint_final_s,
        "epochs_s": epochs,
    }


def _synchronous_write_s(size: dict[str, int]) -> float:
    """One epoch's worth of the old way: last.pt and best.pt written in the loop, timed."""
    import torch

    from edgesearch.trainer.checkpoint_files import save_checkpoint
    from edgesearch.trainer.model import build_model

    model = build_model(_config(size, 0).model)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    optimizer.step()  # Adam's moments exist: last.pt at its real size
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        save_checkpoint(model.state_dict(), Path(tmp) / "best.pt")
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, Path(tmp) / "last.pt")
        return time.perf_counter() - started


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    size = SIZES["tiny" if args.tiny else "full"]
    runs: dict[str, list[dict[str, float]]] = {"default (60 s)": [], "every epoch": []}
    for _ in range(size["rounds"]):
        runs["default (60 s)"].append(_share(size, 60.0))
        runs["every epoch"].append(_share(size, 0.0))
    shares = {name: _common.median([r["share"] for r in items]) for name, items in runs.items()}
    epoch_s = _common.median([r["epochs_s"] / size["epochs"] for r in runs["every epoch"]])
    sync = _synchronous_write_s(size)
    _common.log(
        f"checkpoint wait: default {100 * shares['default (60 s)']:.2f}%, "
        f"every epoch {100 * shares['every epoch']:.2f}% of epoch time; "
        f"a synchronous last.pt + best.pt write: {sync:.2f} s against a {epoch_s:.2f} s epoch"
    )
    _common.emit(
        "checkpoint_cost",
        args,
        {
            "setup": size,
            "runs": runs,
            "share": shares,
            "epoch_seconds": epoch_s,
            "synchronous_write_seconds": sync,
            "synchronous_share": sync / epoch_s if epoch_s else None,
            "target": f"<= {TARGET:.0%}",
            "met": shares["default (60 s)"] <= TARGET,
        },
    )


if __name__ == "__main__":
    main()
