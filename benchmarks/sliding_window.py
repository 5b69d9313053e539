"""Sliding window: megapixels/s of edgesearch's sliding_window_probabilities against MONAI's called directly.

One 1024 x 1344 3-channel image through a U-Net/resnet18 (random init, eval mode) on the CPU,
window 256, overlap 0.5, Gaussian blend, 4 windows per batch: ``trainer/sliding.py`` against
``monai.inferers.sliding_window_inference`` with a sigmoid predictor and the same settings, both
under ``torch.inference_mode``, in turns after one untimed call; the ratio is the median of the
per-round ratios. Also: the largest difference between their maps, what ``tta`` (4 flips) costs
in the same rounds, and what importing ``monai.inferers`` costs a fresh interpreter that has
imported torch. Targets: edgesearch's time <= 1.05x MONAI's; maps within 1e-4.

    python benchmarks/sliding_window.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

TARGET_RATIO = 1.05
TARGET_DIFF = 1e-4
SIZES = {
    "full": {"height": 1024, "width": 1344, "window": 256, "rounds": 3, "import_runs": 3},
    "tiny": {"height": 96, "width": 160, "window": 64, "rounds": 1, "import_runs": 1},
}
SETTINGS = {"encoder": "resnet18", "channels": 3, "overlap": 0.5, "blend": "gaussian", "batch_size": 4}

IMPORT_PROBE = (
    "import time, torch\nstarted = time.perf_counter()\nimport monai.inferers\nprint(time.perf_counter() - started)"
)


def import_seconds(runs: int) -> list[float]:
    """Seconds to import monai.inferers in a fresh interpreter that has torch already."""
    return [
        float(subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    ]


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    import segmentation_models_pytorch as smp
    import torch
    from monai.inferers import sliding_window_inference

    from edgesearch.trainer.sliding import SIGMA_SCALE, sliding_window_probabilities

    size = SIZES["tiny" if args.tiny else "full"]
    window, overlap, batch_size = size["window"], SETTINGS["overlap"], SETTINGS["batch_size"]
    torch.manual_seed(0)
    model = smp.Unet(SETTINGS["encoder"], encoder_weights=None, in_channels=SETTINGS["channels"], classes=1).eval()
    image = torch.randn(SETTINGS["channels"], size["height"], size["width"], generator=torch.Generator().manual_seed(1))
    megapixels = size["height"] * size["width"] / 1e6

    def ours(tta: bool = False) -> torch.Tensor:
        return sliding_window_probabilities(
            model, image, window=window, overlap=overlap, tta=tta, batch_size=batch_size
        )

    def monai() -> torch.Tensor:
        with torch.inference_mode():
            out = sliding_window_inference(
                image[None],
                roi_size=(window, window),
                sw_batch_size=batch_size,
                predictor=lambda windows: torch.sigmoid(model(windows)),
                overlap=overlap,
                mode="gaussian",
                sigma_scale=SIGMA_SCALE,
            )
        assert isinstance(out, torch.Tensor)
        return out[0, 0]

    _common.log(f"sliding window: {size}, {SETTINGS}, {torch.get_num_threads()} threads")
    difference = float((ours() - monai()).abs().max())  # also the untimed first call of each
    samples = _common.alternate(
        {
            "edgesearch": lambda: _common.timed(ours),
            "monai": lambda: _common.timed(monai),
            "edgesearch_tta": lambda: _common.timed(lambda: ours(tta=True)),
        },
        rounds=size["rounds"],
        warmup=0,
    )
    medians = {name: _common.median(values) for name, values in samples.items()}
    ratio = _common.paired_ratio(samples, "edgesearch", "monai")
    tta = _common.paired_ratio(samples, "edgesearch_tta", "edgesearch")
    imports = import_seconds(size["import_runs"])
    rates = {name: megapixels / seconds for name, seconds in medians.items()}
    _common.log(
        f"Mpx/s: edgesearch {rates['edgesearch']:.3f}, monai {rates['monai']:.3f} (time ratio {ratio:.3f}); "
        f"tta {tta:.2f}x slower; max |diff| {difference:.2e}; import monai.inferers {_common.median(imports):.1f} s"
    )
    _common.emit(
        "sliding_window",
        args,
        {
            "setup": {**size, **SETTINGS, "megapixels": megapixels, "device": "cpu"},
            "seconds": {"median": medians, "samples": samples},
            "megapixels_per_s": rates,
            "ratio": ratio,
            "ratio_definition": "median over rounds of edgesearch's seconds over MONAI's in that round",
            "tta_slowdown": tta,
            "max_abs_difference": difference,
            "monai_import_seconds": {"median": _common.median(imports), "samples": imports},
            "target": f"time <= {TARGET_RATIO}x MONAI's; max abs difference <= {TARGET_DIFF:g}",
            "met": ratio <= TARGET_RATIO and difference <= TARGET_DIFF,
        },
    )


if __name__ == "__main__":
    main()
