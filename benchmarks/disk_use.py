"""Disk per finished trial: what a study leaves in its runs folder and its artifact store.

The quickstart study (``studies/quickstart.yaml``: U-Net/resnet18, 6 trials of 6 epochs on 96 synthetic
images at 64 px, TPE, the median pruner) on the CPU, run to the end by one worker (edgesearch's
``run_worker`` in this process, with an artifact store, as ``edgesearch worker`` runs it) in a temporary
folder. Then the bytes its files take on disk: their blocks, each file once however many names it has
(a hard link), as ``du`` counts; by kind (``best.pt``, ``last.pt``, the pictures, the rest of the run
folders, and what the artifact store adds to them), in all and per finished trial (COMPLETE + PRUNED).
The target: <= 60 MB per finished trial.

For information, what the same study keeps with ``keep_checkpoints: 2``: one removal pass over the
finished study, which ends where the passes of the workers as trials finish end (a trial out of the
best K never comes back in: ``searcher/study/disk.py``).

    python benchmarks/disk_use.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

TARGET_MB = 60.0
KEEP = 2
TINY = {"n_trials": 2, "epochs": 1, "n_images": 16}
"""``--tiny``: the quickstart study cut down to seconds (the same model and size of ``best.pt``)."""


def _blocks(paths: Iterable[Path], seen: set[tuple[int, int]]) -> int:
    """Bytes on disk of the files among ``paths`` not in ``seen`` (their (device, inode)), which they join."""
    total = 0
    for path in paths:
        info = path.lstat()
        if (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _kind(path: Path) -> str:
    if path.name in ("best.pt", "last.pt"):
        return path.name
    return "pictures" if path.suffix == ".png" else "other run files"


def _measure(runs: Path, artifacts: Path) -> dict[str, int]:
    """Bytes by kind of file: the run folders first, then what the artifact store adds (files not linked there)."""
    seen: set[tuple[int, int]] = set()
    found: dict[str, int] = {"best.pt": 0, "last.pt": 0, "pictures": 0, "other run files": 0}
    for path in _files(runs):
        found[_kind(path)] += _blocks([path], seen)
    found["artifact store (not linked)"] = _blocks(_files(artifacts), seen)
    return found


def _per_trial(found: dict[str, int], finished: int) -> float | None:
    return sum(found.values()) / finished / 1e6 if finished else None


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    import optuna
    import yaml
    from optuna.trial import TrialState

    from edgesearch.searcher.run.worker import run_worker
    from edgesearch.searcher.storage.artifacts import open_artifact_store
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.disk import remove_checkpoints
    from edgesearch.searcher.study.studies import create_study, load_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raw: dict[str, Any] = yaml.safe_load((_common.ROOT / "studies" / "quickstart.yaml").read_text(encoding="utf-8"))
    raw["trainer"]["device"] = "cpu"
    if args.tiny:
        raw["n_trials"] = TINY["n_trials"]
        raw["trainer"]["epochs"] = TINY["epochs"]
        raw["trainer"]["data"]["synthetic"]["n_images"] = TINY["n_images"]
    config = StudyConfig.from_dict(raw, source="studies/quickstart.yaml")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        url = f"sqlite:///{tmp}/study.db"
        runs, artifacts = tmp / "runs", tmp / "artifacts"
        create_study(config, url)
        started = time.perf_counter()
        store = open_artifact_store(artifacts)
        run_worker(config.name, url, runs_dir=runs, artifact_store=store)
        seconds = time.perf_counter() - started
        study, _ = load_study(config.name, url)
        states = {state.name: sum(1 for t in study.trials if t.state == state) for state in TrialState}
        finished = states["COMPLETE"] + states["PRUNED"]
        found = _measure(runs, artifacts)
        removed = remove_checkpoints(study, config.model_copy(update={"keep_checkpoints": KEEP}), store)
        kept = _measure(runs, artifacts)
    per_trial = _per_trial(found, finished)
    kept_per_trial = _per_trial(kept, finished)
    _common.log(
        f"{finished} finished trials, {sum(found.values()) / 1e6:.1f} MB: "
        + ", ".join(f"{name} {value / 1e6:.1f}" for name, value in found.items())
        + f"; {_f(per_trial)} MB per finished trial (target <= {TARGET_MB:.0f}); with keep_checkpoints {KEEP}: "
        f"{_f(kept_per_trial)} MB per finished trial ({len(removed)} best.pt removed); {seconds:.0f} s"
    )
    _common.emit(
        "disk_use",
        args,
        {
            "setup": {
                "study": "studies/quickstart.yaml",
                "n_trials": config.n_trials,
                "epochs": config.trainer.epochs,
                "n_images": raw["trainer"]["data"]["synthetic"]["n_images"],
                "device": "cpu",
                "filesystem_block_size": os.statvfs(tempfile.gettempdir()).f_bsize,
            },
            "states": states,
            "finished": finished,
            "bytes": found,
            "mb_per_finished_trial": per_trial,
            "keep_checkpoints": {
                "keep": KEEP,
                "removed": len(removed),
                "bytes": kept,
                "mb_per_finished_trial": kept_per_trial,
            },
            "study_seconds": seconds,
            "target": f"<= {TARGET_MB:.0f} MB per finished trial",
            "met": per_trial is not None and per_trial <= TARGET_MB,
        },
    )


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
