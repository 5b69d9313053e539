"""Edge correlation: on the probabilities' edge maps (``val_edge_corr``) or on the thresholded bands?

For seeds 0, 1, 2: train U-Net/resnet18 on the built-in shapes (64 px, 240 images, 3 epochs), then
on its validation split (48 images) measure the dataset-level edge correlation both ways, the
background probabilities, and per image how well each version ranks the images as their IoU does
(Spearman's rank correlation with the per-image IoU). The metric keeps the version that tracks IoU
at least as well (``trainer/metrics.py`` says which and why). No target: it informs a definition.

    python benchmarks/edge_correlation.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

SIZES = {
    "full": {"seeds": [0, 1, 2], "n_images": 240, "epochs": 3, "image_size": 64},
    "tiny": {"seeds": [0], "n_images": 24, "epochs": 1, "image_size": 32},
}


def measure(seed: int, size: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from scipy import stats  # type: ignore[import-untyped]

    from edgesearch.trainer import TrainConfig, train
    from edgesearch.trainer.config import ModelConfig
    from edgesearch.trainer.data import build_datasets, build_loader
    from edgesearch.trainer.edges import edge_map
    from edgesearch.trainer.epoch import EpochRunner
    from edgesearch.trainer.metrics import edge_correlation, image_edge_correlations
    from edgesearch.trainer.model import build_model

    config = TrainConfig.model_validate(
        {
            "model": {"encoder": "resnet18"},
            "data": {"image_size": size["image_size"], "batch_size": 8, "synthetic": {"n_images": size["n_images"]}},
            "optim": {"lr": 3.0e-3},
            "epochs": size["epochs"],
            "seed": seed,
            "device": "cpu",
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        train(config, run_dir=Path(tmp))
        model = build_model(config.model)
        model.load_state_dict(torch.load(Path(tmp) / "best.pt", weights_only=True))
    model.eval()
    _, val = build_datasets(config.data, model=ModelConfig(), seed=config.seed)
    loader = build_loader(val, config.data, train=False)
    runner = EpochRunner.build(config, model, device=torch.device("cpu"), steps_per_epoch=1)
    metrics = runner.validate(loader)
    with torch.inference_mode():
        pairs = [(torch.sigmoid(model(x)), y) for x, y in loader]
    prob, target = torch.cat([p for p, _ in pairs]), torch.cat([t for _, t in pairs])
    hard = (prob >= 0.5).float()
    hard_per_image = image_edge_correlations(hard, target, config.loss.edge_width).tolist()
    soft_per_image = runner.image_edge_corrs
    width = config.loss.edge_width
    background = prob[target == 0]
    return {
        "seed": seed,
        "val_iou": metrics["val_iou"],
        "edge_corr_probabilities": metrics["val_edge_corr"],
        "edge_corr_thresholded": edge_correlation(hard, target, width),
        "background_probability_mean": float(background.mean()),
        "background_probability_std": float(background.std()),
        "n_images": len(runner.image_ious),
        "spearman_with_iou_probabilities": float(stats.spearmanr(runner.image_ious, soft_per_image)[0]),
        "spearman_with_iou_thresholded": float(stats.spearmanr(runner.image_ious, hard_per_image)[0]),
        # The same quantity as edge_corr_probabilities, by numpy: a check of the metric itself.
        "edge_corr_probabilities_numpy": float(
            np.corrcoef(edge_map(prob, width).flatten().numpy(), edge_map(target, width).flatten().numpy())[0, 1]
        ),
    }


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    size = SIZES["tiny" if args.tiny else "full"]
    rows = []
    for seed in size["seeds"]:
        row = measure(seed, size)
        rows.append(row)
        r = {key: f"{value:.3f}" if isinstance(value, float) else value for key, value in row.items()}
        _common.log(
            f"seed {seed}: val IoU {r['val_iou']}; edge corr on probabilities {r['edge_corr_probabilities']}, "
            f"thresholded {r['edge_corr_thresholded']}; background p {r['background_probability_mean']} "
            f"+- {r['background_probability_std']}; per image (n={r['n_images']}) Spearman with IoU: "
            f"probabilities {r['spearman_with_iou_probabilities']}, thresholded {r['spearman_with_iou_thresholded']}"
        )
    _common.emit("edge_correlation", args, {"setup": size, "runs": rows})


if __name__ == "__main__":
    main()
