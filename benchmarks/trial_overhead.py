"""Trial overhead: what a worker spends on each trial outside its epochs.

One worker (edgesearch's ``run_worker``, in this process, with an artifact store, as ``edgesearch
worker`` runs it) takes the trials of a quickstart-sized study one after the other: U-Net/resnet18,
96 synthetic images at 64 px, 2 epochs each. For every trial: its wall time from the worker's
``on_trial_start`` to ``on_trial_end`` minus the time of its epochs (training and validation, the
``seconds`` of each epoch record). That difference is the set-up (config, data, model, loaders),
the checkpoints, the curves, the edge overlay and the artifact upload. The first trial also pays
the imports of the process; the target is for the trials after it: <= 0.5 s per trial.

Where it goes, per trial, from the trainer's callbacks: ``setup`` (trial start to the trainer's
``on_train_start``: sampling, the run folder, data, model, loaders), ``between_epochs`` (the
epochs' wall time not in their ``seconds``: checkpoint snapshots, ``history.json``, reporting to
the storage), ``end`` (last epoch to ``on_train_end``: the pictures while the last checkpoint is
written, and the wait for it) and ``after`` (``on_train_end`` to the trial's end: checkpoint
digest, artifact upload, telling the storage).

    python benchmarks/trial_overhead.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

TARGET_S = 0.5
SIZES = {"full": {"n_trials": 5, "epochs": 2, "n_images": 96}, "tiny": {"n_trials": 2, "epochs": 1, "n_images": 16}}


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    import optuna

    from edgesearch.searcher.run.worker import run_worker
    from edgesearch.searcher.storage.artifacts import open_artifact_store
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.studies import create_study
    from edgesearch.trainer.callbacks import Callback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    size = SIZES["tiny" if args.tiny else "full"]
    raw = {
        "name": "overhead",
        "n_trials": size["n_trials"],
        "sampler": {"kind": "random", "seed": 0},
        "pruner": {"kind": "none"},
        "trainer": {
            "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
            "data": {"image_size": 64, "batch_size": 8, "synthetic": {"n_images": size["n_images"]}},
            "epochs": size["epochs"],
            "device": "cpu",
        },
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
    }
    epoch_seconds: dict[int, float] = {}
    marks: dict[int, dict[str, float]] = {}
    started: dict[int, float] = {}
    walls: dict[int, float] = {}
    current = {"number": -1}

    class Epochs(Callback):
        def on_train_start(self, **_: Any) -> None:
            marks.setdefault(current["number"], {})["train_start"] = time.perf_counter()

        def on_epoch_end(self, record: Any) -> None:
            epoch_seconds[current["number"]] = epoch_seconds.get(current["number"], 0.0) + float(record["seconds"])
            marks[current["number"]]["last_epoch_end"] = time.perf_counter()

        def on_train_end(self, history: Any) -> None:
            marks[current["number"]]["train_end"] = time.perf_counter()

    def on_start(trial: optuna.Trial) -> None:
        current["number"] = trial.number
        started[trial.number] = time.perf_counter()

    def on_end(outcome: Any) -> None:
        walls[outcome.number] = time.perf_counter() - started[outcome.number]
        marks[outcome.number]["trial_end"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        url = f"sqlite:///{tmp}/study.db"
        create_study(StudyConfig.from_dict(raw, source="benchmark"), url)
        run_worker(
            "overhead",
            url,
            runs_dir=tmp / "runs",
            artifact_store=open_artifact_store(tmp / "artifacts"),
            callbacks=[Epochs()],
            on_trial_start=on_start,
            on_trial_end=on_end,
        )
    overhead = {n: walls[n] - epoch_seconds.get(n, 0.0) for n in sorted(walls)}
    parts = {
        n: {
            "setup": m["train_start"] - started[n],
            "between_epochs": m["last_epoch_end"] - m["train_start"] - epoch_seconds[n],
            "end": m["train_end"] - m["last_epoch_end"],
            "after": m["trial_end"] - m["train_end"],
        }
        for n, m in sorted(marks.items())
        if {"train_start", "last_epoch_end", "train_end", "trial_end"} <= m.keys()
    }
    later = [value for n, value in overhead.items() if n > min(overhead)]
    value = _common.median(later) if later else None
    _common.log(
        "overhead per trial (s): "
        + ", ".join(f"#{n} {v:.2f}" for n, v in overhead.items())
        + (f"; median after the first {value:.2f}" if value is not None else "")
    )
    later_parts = [p for n, p in parts.items() if n > min(overhead)]
    where = {key: _common.median([p[key] for p in later_parts]) for key in later_parts[0]} if later_parts else {}
    _common.log("median after the first, by part (s): " + ", ".join(f"{k} {v:.2f}" for k, v in where.items()))
    _common.emit(
        "trial_overhead",
        args,
        {
            "setup": size,
            "wall_seconds": walls,
            "epoch_seconds": epoch_seconds,
            "overhead_seconds": overhead,
            "parts_seconds": parts,
            "median_parts_after_first": where,
            "median_after_first": value,
            "target": f"<= {TARGET_S} s per trial after the first",
            "met": value is not None and value <= TARGET_S,
        },
    )


if __name__ == "__main__":
    main()
