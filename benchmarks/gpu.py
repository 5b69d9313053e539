"""GPU throughput: training images/s at 512 px, U-Net/resnet34, bf16 + channels_last against fp32.

``trainer`` is edgesearch's own step on CUDA (bf16 autocast, channels_last tensors and model);
``fp32`` is the same step without autocast, in the default memory format. ``--compile`` adds
``torch.compile`` of the trainer's model. Variants run in turns; medians compared.

``--trials`` adds what a study pays on the card, whole ``edgesearch worker`` processes on a
SQLite study of short trials (U-Net/resnet18, 256 synthetic images at 128 px, 3 epochs):

* trials per hour with K = 1, 2 and 4 worker processes on GPU 0 (``--gpus 0 --per-gpu K``);
* one trial's epoch time with ``data.loader: cpu`` (albumentations in loader processes) against
  ``device`` (the dataset resident on the GPU): the input pipeline against the GPU's step rate.

Without a CUDA device the result says so (``skipped``); ``--tiny`` then still runs everything on the
CPU at a tiny size, which proves only that the script works: 32 px images, one step, and trials of a
small encoder (tu-mobilenetv3_small_050, a sixth of resnet18's weights) on 16 images of 32 px, all runs
at once, each of its K workers a thread of this process calling ``run_worker`` (six worker processes
would spend half a minute of CPU importing torch and smp, and time nothing worth comparing).

    python benchmarks/gpu.py [--tiny] [--compile] [--trials] [--json FILE]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import _step

SIZES = {
    "full": {"encoder": "resnet34", "image_size": 512, "batch_size": 16, "steps": 10, "rounds": 5},
    "tiny": {"encoder": "resnet18", "image_size": 32, "batch_size": 2, "steps": 1, "rounds": 1},
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


TRIALS = {
    "full": {
        "encoder": "resnet18",
        "image_size": 128,
        "n_images": 256,
        "epochs": 3,
        "trials_per_worker": 2,
        "ks": (1, 2, 4),
    },
    "tiny": {
        "encoder": "tu-mobilenetv3_small_050",
        "image_size": 32,
        "n_images": 16,
        "epochs": 1,
        "trials_per_worker": 1,
        "ks": (1, 2),
    },
}


def _study_file(folder: Path, name: str, n_trials: int, size: dict[str, Any], loader: str) -> Path:
    import yaml

    study = {
        "name": name,
        "n_trials": n_trials,
        "sampler": {"kind": "random", "seed": 0},
        "pruner": {"kind": "none"},
        "trainer": {
            "model": {"arch": "unet", "encoder": size["encoder"], "encoder_weights": None},
            "data": {
                "image_size": size["image_size"],
                "batch_size": 16,
                "loader": loader,
                "synthetic": {"n_images": size["n_images"]},
            },
            "epochs": size["epochs"],
        },
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _create_study(folder: Path, name: str, size: dict[str, Any], *, k: int, loader: str) -> str:
    """Create a study of K x trials_per_worker trials here, untimed (a ``study create`` process would only
    add its start to the run); its URL."""
    import optuna

    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.studies import create_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{folder}/{name}.db"
    create_study(StudyConfig.from_yaml(_study_file(folder, name, k * size["trials_per_worker"], size, loader)), url)
    return url


def _run_in_threads(name: str, url: str, runs: Path, k: int) -> None:
    """The smoke run's K workers: threads of this process, each one ``run_worker``."""
    from edgesearch.searcher.run.worker import run_worker

    with ThreadPoolExecutor(max_workers=k) as pool:
        summaries = list(pool.map(lambda _: run_worker(name, url, runs_dir=runs, poll_seconds=0.2), range(k)))
    if any(s.failed or s.stopped_because != "study complete" for s in summaries):
        raise SystemExit(f"worker failed: {[s.stopped_because for s in summaries]}")


def _run_study(
    folder: Path, name: str, url: str, size: dict[str, Any], *, k: int, cuda: bool, in_process: bool = False
) -> dict[str, Any]:
    """Run the study at ``url`` with K worker processes, whole processes timed (``in_process``: K threads,
    for the CPU smoke run)."""
    n_trials = k * size["trials_per_worker"]
    started = time.perf_counter()
    if in_process:
        _run_in_threads(name, url, folder / "runs", k)
    else:
        cli = [sys.executable, "-m", "edgesearch"]
        where = ["--gpus", "0", "--per-gpu", str(k)] if cuda else ["--processes", str(k)]
        done = subprocess.run(
            [*cli, "worker", name, "--storage", url, "--runs-dir", str(folder / "runs"), *where],
            capture_output=True,
            text=True,
            env=os.environ | {"EDGESEARCH_ARTIFACTS": str(folder / "artifacts")},
        )
        if done.returncode != 0:
            raise SystemExit(f"worker failed ({done.returncode}): {done.stderr[-2000:]}")
    wall = time.perf_counter() - started
    import json

    epoch_s = []
    for history in (folder / "runs").glob(f"{name}*/**/history.json"):
        epoch_s += [row["seconds"] for row in json.loads(history.read_text())]
    return {
        "k": k,
        "trials": n_trials,
        "wall_s": wall,
        "trials_per_hour": 3600 * n_trials / wall,
        "median_epoch_s": _common.median(epoch_s) if epoch_s else None,
    }


def trials_per_hour(tiny: bool, cuda: bool) -> dict[str, Any]:
    """Trials/hour at each K, and one trial at each ``data.loader``.

    At full size the runs go one after the other, each timed alone on the card. ``--tiny`` times
    nothing worth comparing, so its runs go all at once, their workers threads of this process
    on a CPU: the smoke run then takes seconds.
    """
    size = TRIALS["tiny" if tiny else "full"]
    runs = [(f"k{k}", k, "auto") for k in size["ks"]] + [(f"loader-{name}", 1, name) for name in ("cpu", "device")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        urls = [_create_study(folder, name, size, k=k, loader=loader) for name, k, loader in runs]

        def run(index: int) -> dict[str, Any]:
            name, k, _ = runs[index]
            return _run_study(folder, name, urls[index], size, k=k, cuda=cuda, in_process=tiny and not cuda)

        if tiny:
            with ThreadPoolExecutor(max_workers=len(runs)) as pool:
                rows = list(pool.map(run, range(len(runs))))
        else:
            rows = [run(index) for index in range(len(runs))]
    per_k, paths = rows[: len(size["ks"])], dict(zip(("cpu", "device"), rows[len(size["ks"]) :], strict=True))
    for row in per_k:
        _common.log(
            f"K={row['k']}: {row['trials_per_hour']:.0f} trials/hour ({row['trials']} in {row['wall_s']:.1f} s)"
        )
    _common.log(
        "epoch time, data.loader cpu vs device: "
        + ", ".join(f"{loader} {row['median_epoch_s']:.2f} s" for loader, row in paths.items())
    )
    return {"setup": size | {"ks": list(size["ks"])}, "per_gpu": per_k, "loader": paths}


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the trainer's model")
    p.add_argument("--trials", action="store_true", help="also measure trials/hour with K workers per GPU")
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
    if args.trials:
        result["trials"] = trials_per_hour(args.tiny, cuda)
    if cuda:
        result["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        result["note"] = "no CUDA device: a CPU run at tiny size, proving the script runs; not a GPU number"
    _common.emit("gpu", args, result)


if __name__ == "__main__":
    main()
