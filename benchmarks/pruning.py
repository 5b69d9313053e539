"""Pruning pay-off: epochs spent and best val IoU of two fixed studies under each pruner.

Each study (same seeded random sampler, so the same trial parameters in the same order; the same
seeded training, so the same curves) runs three times through edgesearch's real worker on a fresh
SQLite storage: with ``pruner: none``, ``median`` and ``hyperband``. The two studies differ in seed
(data, sampler and training) and in the schedule: ``fixed`` trains every trial with one frozen epoch
and one warmup epoch (window 3); ``schedule`` searches ``freeze_epochs`` 0-3 and ``warmup_epochs``
0-2, so each trial has its own unstable window (0-6 epochs), which is what stage-aware pruning is for.
Target, on each study: a pruner reaches the best val IoU of ``none`` within 0.01 with <= 50% of its
epochs.

The random sampler is chosen on purpose: a model-based sampler (TPE) learns from pruned
trials, so each run would try different points and the comparison would measure sampling
luck as much as pruning.

    python benchmarks/pruning.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

IOU_TOLERANCE = 0.01
EPOCH_SHARE = 0.5
SIZES = {
    "full": {"n_trials": 24, "epochs": 12, "image_size": 32, "n_images": 64},
    "tiny": {"n_trials": 2, "epochs": 2, "image_size": 32, "n_images": 16},
}
# A small encoder: the benchmark is about how many epochs each pruner spends, so epochs should be cheap.
ENCODER = "tu-mobilenetv3_small_100"
# Stage-aware pruners judge a trial only after its own window (searcher/stage_pruning.py), so no
# n_warmup_steps is needed to skip stage 1; hyperband's first rung is the first epoch after it.
PRUNERS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "median": {"kind": "median", "n_startup_trials": 3, "n_warmup_steps": 0},
    "hyperband": {"kind": "hyperband", "min_resource": 1, "reduction_factor": 3},
}
SPACE: dict[str, Any] = {
    "loss.edge_lambda": {"low": 0.0, "high": 0.5},
    "loss.kind": {"choices": ["bce", "focal"]},
    "loss.round_ratio": {"low": 0.0, "high": 0.5},
    # Wide on purpose: some learning rates are hopeless, which is what pruning is for.
    "optim.lr": {"low": 1.0e-5, "high": 3.0e-2, "log": True},
}
STUDIES: dict[str, dict[str, Any]] = {
    "fixed": {"seed": 0, "optim": {"warmup_epochs": 1, "freeze_epochs": 1}, "space": SPACE},
    "schedule": {
        "seed": 1,
        "optim": {},
        "space": {
            **SPACE,
            "optim.freeze_epochs": {"low": 0, "high": 3},
            "optim.warmup_epochs": {"low": 0, "high": 2},
        },
    },
}


def study_dict(name: str, study: str, pruner: dict[str, Any], size: dict[str, int]) -> dict[str, Any]:
    spec = STUDIES[study]
    return {
        "name": name,
        "n_trials": size["n_trials"],
        "sampler": {"kind": "random", "seed": spec["seed"]},
        "pruner": pruner,
        "trainer": {
            "model": {"arch": "unet", "encoder": ENCODER, "encoder_weights": None},
            "data": {
                "image_size": size["image_size"],
                "batch_size": 8,
                "num_workers": 0,
                "synthetic": {"n_images": size["n_images"], "seed": spec["seed"]},
            },
            "loss": {"kind": "bce", "edge_lambda": 0.15, "edge_width": 2},
            "optim": {"name": "adam", "lr": 3.0e-3, **spec["optim"]},
            "epochs": size["epochs"],
            "device": "cpu",
            "seed": spec["seed"],
        },
        "space": spec["space"],
    }


def run_study(root: Path, study: str, label: str, size: dict[str, int]) -> dict[str, Any]:
    from optuna.trial import TrialState

    from edgesearch.searcher.config import StudyConfig
    from edgesearch.searcher.study import create_study
    from edgesearch.searcher.worker import run_worker

    config = StudyConfig.from_dict(study_dict(f"pruning-{study}-{label}", study, PRUNERS[label], size), source=label)
    url = f"sqlite:///{root / f'{study}-{label}.db'}"
    create_study(config, url)
    started = time.perf_counter()
    run_worker(config.name, url, runs_dir=root / "runs", poll_seconds=0.1)
    seconds = time.perf_counter() - started

    import optuna

    study = optuna.load_study(study_name=config.name, storage=url)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    # The best val IoU any trial reached at any epoch it trained, pruned trials included.
    best = max((v for t in finished for v in t.intermediate_values.values()), default=None)
    return {
        "pruner": PRUNERS[label],
        "trials": len(finished),
        "complete": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "epochs": sum(len(t.intermediate_values) for t in finished),
        "best_val_iou": best,
        "best_trial": max(complete, key=lambda t: t.value or 0.0).number if complete else None,
        "epochs_per_trial": [len(t.intermediate_values) for t in sorted(finished, key=lambda t: t.number)],
        "seconds": seconds,
    }


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each pruner against ``none`` of the same study: epoch share, best-IoU gap, target met."""
    base = runs["none"]
    verdicts: dict[str, Any] = {}
    for label in ("median", "hyperband"):
        r = runs[label]
        share = _common.ratio(r["epochs"], base["epochs"])
        gap = (
            None
            if r["best_val_iou"] is None or base["best_val_iou"] is None
            else base["best_val_iou"] - r["best_val_iou"]
        )
        verdicts[label] = {
            "epoch_share": share,
            "best_iou_gap": gap,
            "met": share is not None and gap is not None and share <= EPOCH_SHARE and gap <= IOU_TOLERANCE,
        }
    return verdicts


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    size = SIZES["tiny" if args.tiny else "full"]
    studies: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for study in STUDIES:
            runs: dict[str, dict[str, Any]] = {}
            for label in PRUNERS:
                _common.log(
                    f"pruning: study {study}, {label} ({size['n_trials']} trials x {size['epochs']} epochs max) ..."
                )
                runs[label] = run_study(Path(tmp), study, label, size)
                r = runs[label]
                if r["failed"]:
                    # A crashed trial would make the comparison meaningless: stop rather than print a number.
                    raise SystemExit(f"pruning: {r['failed']} trial(s) failed with pruner {label}; see the log above")
                _common.log(
                    f"  {r['epochs']} epochs, {r['pruned']} pruned, "
                    f"best val IoU {r['best_val_iou']}, {r['seconds']:.0f} s"
                )
            verdicts = compare(runs)
            for label, v in verdicts.items():
                _common.log(
                    f"{study} / {label}: {v['epoch_share']:.0%} of the epochs, "
                    f"best IoU {v['best_iou_gap']:+.4f} below none"
                )
            studies[study] = {"runs": runs, "against_none": verdicts}
    _common.emit(
        "pruning",
        args,
        {
            "size": size,
            "studies": studies,
            "target": (
                f"best val IoU within {IOU_TOLERANCE} of none with <= {EPOCH_SHARE:.0%} of its epochs, on each study"
            ),
            "met": all(v["met"] for s in studies.values() for v in s["against_none"].values()),
        },
    )


if __name__ == "__main__":
    main()
