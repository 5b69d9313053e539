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

Training is seeded, so a pruned trial's curve is the first epochs of the same trial's curve under
``none``. That makes other pruner settings cheap to measure: they are *replayed* on the ``none``
run's curves (the real pruner, asked epoch by epoch, no training). The replay of ``median`` and
``hyperband`` is checked against their real runs (``replay_matches``) before the replayed rows
(:data:`REPLAYED`) are reported.

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
# Stage-aware pruners judge a trial only after its own window (searcher/study/pruning.py), so no
# n_warmup_steps is needed to skip stage 1; hyperband's first rung is the first epoch after it.
PRUNERS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "median": {"kind": "median", "n_startup_trials": 3, "n_warmup_steps": 0},
    "hyperband": {"kind": "hyperband", "min_resource": 1, "reduction_factor": 3},
}
REPLAYED: dict[str, dict[str, Any]] = {
    "successive_halving": {"kind": "successive_halving", "min_resource": 1, "reduction_factor": 2},
    "median, 1 start-up trial": {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
}
"""Settings replayed on the recorded curves, for comparison (not part of the target)."""
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

    from edgesearch.searcher.run.worker import run_worker
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.studies import create_study

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
        # Each trial's resolved config and curve, in trial order: what a replay needs.
        "curves": [
            {"config": t.user_attrs["config"], "values": {str(k): v for k, v in t.intermediate_values.items()}}
            for t in sorted(finished, key=lambda t: t.number)
        ],
    }


def replay(
    curves: list[dict[str, Any]], name: str, study: str, pruner: dict[str, Any], size: dict[str, int]
) -> dict[str, Any]:
    """Epochs and best val IoU ``pruner`` spends on the recorded ``none`` curves, asked as the worker asks it.

    ``name`` is the study name the real run would have: hyperband assigns trials to brackets by it.
    """
    import optuna
    from optuna.trial import TrialState

    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.studies import make_pruner

    config = StudyConfig.from_dict(study_dict(name, study, pruner, size), source="replay")
    replayed = optuna.create_study(study_name=name, direction="maximize", pruner=make_pruner(config))
    epochs, best, pruned = 0, 0.0, 0
    for curve in curves:
        trial = replayed.ask()
        trial.set_user_attr("config", curve["config"])
        values = sorted((int(k), v) for k, v in curve["values"].items())
        for step, value in values:
            trial.report(value, step)
            epochs += 1
            best = max(best, value)
            if trial.should_prune():
                replayed.tell(trial, state=TrialState.PRUNED)
                pruned += 1
                break
        else:
            replayed.tell(trial, max(v for _, v in values))
    return {"pruner": pruner, "epochs": epochs, "pruned": pruned, "best_val_iou": best}


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each pruner against ``none`` of the same study: epoch share, best-IoU gap, target met."""
    base = runs["none"]
    verdicts: dict[str, Any] = {}
    for label, r in runs.items():
        if label == "none":
            continue
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
            curves = runs["none"]["curves"]
            # The replay is trusted only if it gives the real runs' numbers back.
            matches = {
                label: replay(curves, f"pruning-{study}-{label}", study, PRUNERS[label], size)
                for label in ("median", "hyperband")
            }
            replay_matches = all(
                (m["epochs"], m["best_val_iou"]) == (runs[label]["epochs"], runs[label]["best_val_iou"])
                for label, m in matches.items()
            )
            replayed = {
                label: replay(curves, f"pruning-{study}-replay", study, pruner, size)
                for label, pruner in REPLAYED.items()
            }
            replayed_verdicts = compare({"none": runs["none"], **replayed})
            for label, v in {**verdicts, **{f"{k} (replayed)": v for k, v in replayed_verdicts.items()}}.items():
                _common.log(
                    f"{study} / {label}: {v['epoch_share']:.0%} of the epochs, "
                    f"best IoU {v['best_iou_gap']:+.4f} below none"
                )
            _common.log(f"{study}: replay gives the real runs' numbers back: {replay_matches}")
            studies[study] = {
                "runs": runs,
                "against_none": verdicts,
                "replay_matches": replay_matches,
                "replayed": {label: {**r, **replayed_verdicts[label]} for label, r in replayed.items()},
            }
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
