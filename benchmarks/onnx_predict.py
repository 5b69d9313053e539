"""ONNX prediction: seconds per whole image of ``predict --onnx`` (onnxruntime) against PyTorch, same model.

One 1024 x 1344 8-bit RGB image through a U-Net/resnet18 (random weights and BatchNorm statistics, saved as
a run's ``best.pt`` with its ``config.json``: window 256, overlap 0.5, Gaussian blend, 4 windows per batch)
on the CPU: ``OnnxModel.probability_maps`` of the file ``export_onnx`` wrote (onnxruntime, the NumPy
sliding window) against ``inference.probability_maps`` of the checkpoint (PyTorch, MONAI's sliding window),
the image as read in, the map at its size out; onnxruntime gets as many threads as torch has. In turns
after one untimed call each; the ratio is the median of the per-round ratios. Also: the largest
difference between the two maps, what the export took, and the wall time of a whole ``edgesearch predict``
process each way on the same image (imports and model loading included). Target: onnxruntime's time <=
PyTorch's; maps within 1e-4.

    python benchmarks/onnx_predict.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

TARGET_RATIO = 1.0
TARGET_DIFF = 1e-4
SIZES = {
    "full": {"height": 1024, "width": 1344, "window": 256, "rounds": 3, "process_rounds": 2},
    "tiny": {"height": 96, "width": 160, "window": 64, "rounds": 1, "process_rounds": 1},
}
SETTINGS = {"arch": "unet", "encoder": "resnet18", "channels": 3, "overlap": 0.5, "blend": "gaussian", "batch_size": 4}


def write_run(folder: Path, window: int) -> Path:
    """``best.pt`` of a random U-Net/resnet18 (BatchNorm statistics drawn too) beside its ``config.json``."""
    import torch

    from edgesearch.trainer import TrainConfig
    from edgesearch.trainer.model import build_model

    config = TrainConfig.model_validate(
        {
            "model": {"arch": SETTINGS["arch"], "encoder": SETTINGS["encoder"], "encoder_weights": None},
            "data": {"patch_size": window, "overlap": SETTINGS["overlap"], "batch_size": SETTINGS["batch_size"]},
        }
    )
    torch.manual_seed(0)
    model = build_model(config.model)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "best.pt")
    (folder / "config.json").write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
    return folder / "best.pt"


def process_seconds(args: list[str], cwd: Path) -> float:
    """Wall seconds of one ``edgesearch predict ARGS IMAGE --out DIR`` process (the checkout's code, a new DIR);
    a failure stops the benchmark (no bogus timing)."""
    out = tempfile.mkdtemp(dir=cwd, prefix="masks-")
    command = [sys.executable, "-m", "edgesearch", "predict", *args, "image.png", "--out", out]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_common.ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:])} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    import numpy as np
    import torch
    from PIL import Image

    from edgesearch.trainer.inference import probability_maps
    from edgesearch.trainer.onnx_export import export_onnx
    from edgesearch.trainer.onnx_model import load_onnx_model
    from edgesearch.trainer.predict import checkpoint_config, load_model

    size = SIZES["tiny" if args.tiny else "full"]
    threads = torch.get_num_threads()
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (size["height"], size["width"], SETTINGS["channels"]), dtype=np.uint8)
    megapixels = size["height"] * size["width"] / 1e6
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        checkpoint = write_run(root / "run", size["window"])
        config = checkpoint_config(checkpoint)
        export_seconds = _common.timed(lambda: export_onnx(config, checkpoint, root / "model.onnx"))
        model = load_model(config, checkpoint, device=torch.device("cpu"))
        exported = load_onnx_model(root / "model.onnx", threads=threads)
        _common.log(f"onnx predict: {size}, {SETTINGS}, {threads} threads; export took {export_seconds:.1f} s")

        def onnxruntime() -> np.ndarray:
            return exported.probability_maps([image])[0]

        def pytorch() -> np.ndarray:
            return probability_maps(model, [image], config=config)[0]

        difference = float(np.abs(onnxruntime() - pytorch()).max())  # also the untimed first call of each
        samples = _common.alternate(
            {"onnxruntime": lambda: _common.timed(onnxruntime), "pytorch": lambda: _common.timed(pytorch)},
            rounds=size["rounds"],
            warmup=0,
        )
        Image.fromarray(image).save(root / "image.png")
        processes = _common.alternate(
            {
                "onnxruntime": lambda: process_seconds(["--onnx", "model.onnx"], root),
                "pytorch": lambda: process_seconds(["--checkpoint", str(checkpoint)], root),
            },
            rounds=size["process_rounds"],
            warmup=0,
        )
    medians = {name: _common.median(values) for name, values in samples.items()}
    ratio = _common.paired_ratio(samples, "onnxruntime", "pytorch")
    process_medians = {name: _common.median(values) for name, values in processes.items()}
    rates = {name: megapixels / seconds for name, seconds in medians.items()}
    _common.log(
        f"s/image: onnxruntime {medians['onnxruntime']:.2f}, pytorch {medians['pytorch']:.2f} (ratio {ratio:.3f}); "
        f"max |diff| {difference:.2e}; whole process: onnxruntime {process_medians['onnxruntime']:.1f} s, "
        f"pytorch {process_medians['pytorch']:.1f} s"
    )
    _common.emit(
        "onnx_predict",
        args,
        {
            "setup": {**size, **SETTINGS, "megapixels": megapixels, "device": "cpu", "threads": threads},
            "seconds": {"median": medians, "samples": samples},
            "megapixels_per_s": rates,
            "ratio": ratio,
            "ratio_definition": "median over rounds of onnxruntime's seconds over PyTorch's in that round",
            "max_abs_difference": difference,
            "export_seconds": export_seconds,
            "process_seconds": {"median": process_medians, "samples": processes},
            "target": f"time <= {TARGET_RATIO}x PyTorch's; max abs difference <= {TARGET_DIFF:g}",
            "met": ratio <= TARGET_RATIO and difference <= TARGET_DIFF,
        },
    )


if __name__ == "__main__":
    main()
