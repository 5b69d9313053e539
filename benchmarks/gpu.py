"""GPU throughput: training images/s at 512 px, U-Net/resnet34, bf16 + channels_last against fp32.

``trainer`` is edgesearch's own step on CUDA (bf16 autocast, channels_last tensors and model);
``fp32`` is the same step without autocast, in the default memory format. ``--compile`` adds
``torch.compile`` of the trainer's model. Variants run in turns; medians compared. Without a
CUDA device the result says so (``skipped``); ``--tiny`` then still runs both variants on the
CPU at a tiny size, which proves only that the script works.

    python benchmarks/gpu.py [--tiny] [--compile] [--json FILE]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import _step

SIZES = {
    "full": {"encoder": "resnet34", "image_size": 512, "batch_size": 16, "steps": 10, "rounds": 5},
    "tiny": {"encoder": "resnet18", "image_size": 64, "batch_size": 2, "steps": 1, "rounds": 1},
}


def fp32_runner(model: Any, data: list[Any], config: Any) -> Callable[[], float]:
    """The trainer's loss and optimizer, without autocast or channels_last."""
    import torch

    from edgesearch.trainer.losses import total_loss

    model = model.to(memory_format=torch.contiguous_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0e-3)
    contiguous = [(x.contiguous(), y) for x, y in data]

    def run() -> float:
        _sync()
        started = time.perf_counter()
        for images, masks in contiguous:
            loss = total_loss(model(images), masks, config.loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync()
        return (time.perf_counter() - started) / len(contiguous)

    return run


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the trainer's model")
    args = p.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        _common.log("gpu: no CUDA device here; nothing measured")
        _common.emit("gpu", args, {"skipped": "no CUDA device on this machine"})
        return
    device = "cuda" if cuda else "cpu"
    size = _step.SIZES["tiny"] | SIZES["tiny"] if args.tiny else SIZES["full"]
    setup = _step.Setup(**size, device=device)
    torch.manual_seed(0)
    if cuda:
        torch.backends.cudnn.benchmark = True
    data = _step.batches(setup)
    config = _step.train_config(setup, edge_lambda=0.15, round_ratio=0.2, edge_width=2)
    fp32_model, trainer_model, compiled_model = _step.models(setup, 3)
    if cuda:
        data = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in data]
    variants = {
        "fp32": fp32_runner(fp32_model, data, config),
        "trainer": _step.edgesearch_step_runner(trainer_model, data, config),
    }
    if args.compile:
        variants["trainer_compiled"] = _step.edgesearch_step_runner(torch.compile(compiled_model), data, config)
    _common.log(f"gpu: {setup}; variants {list(variants)}")
    samples = _common.alternate(variants, rounds=setup.rounds, warmup=2 if args.compile else 1)
    medians = {name: _common.median(v) for name, v in samples.items()}
    ips = {name: setup.batch_size / s for name, s in medians.items()}
    speedup = {name: _common.ratio(value, ips["fp32"]) for name, value in ips.items() if name != "fp32"}
    _common.log(", ".join(f"{k} {v:.1f} images/s" for k, v in ips.items()))
    result: dict[str, Any] = {
        "setup": setup.__dict__,
        "card": torch.cuda.get_device_name(0) if cuda else None,
        "images_per_s": ips,
        "speedup_vs_fp32": speedup,
        "seconds_per_step": {"median": medians, "samples": samples},
    }
    if cuda:
        result["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        result["note"] = "no CUDA device: a CPU run at tiny size, proving the script runs; not a GPU number"
    _common.emit("gpu", args, result)


if __name__ == "__main__":
    main()
