"""The run folders of a study's trials: one namespace per study, and each folder claimed by its trial.

Two studies of the same name (in two storages, or deleted and created again) must never share a
folder: a second study would overwrite the first one's ``best.pt``, and ``predict --study`` of the
first would silently use the other's weights. So each study gets a run id at creation, its trials
run in ``<runs-dir>/<name>-<run id>/trial-NNNNN``, and a trial writes ``trial.json`` (study, run
id, trial number) into its folder before training. A trial only trains in a folder that is new,
empty, or (for a retry that resumes) claimed by the same study; anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from edgesearch.errors import UserError
from edgesearch.files import atomic_write_text
from edgesearch.trainer.run_files import TRIAL

__all__ = [
    "CHECKPOINT_REMOVED_ATTR",
    "RUN_ID_ATTR",
    "claim_run_dir",
    "file_digest",
    "new_run_id",
    "study_namespace",
    "trial_run_dir",
]

RUN_ID_ATTR = "edgesearch_run_id"
"""The study user attribute holding its run id (8 hex digits)."""
CHECKPOINT_REMOVED_ATTR = "checkpoint_removed"
"""A finished trial's user attribute, set once ``keep_checkpoints`` removed its ``best.pt``: why
(:mod:`~edgesearch.searcher.study.disk`); absent while the trial keeps it."""


def new_run_id() -> str:
    return secrets.token_hex(4)


def study_namespace(name: str, run_id: str | None) -> str:
    """The folder of a study's runs: ``<name>-<run id>`` (a study made before run ids: ``<name>``)."""
    return f"{name}-{run_id}" if run_id else name


def trial_run_dir(runs_dir: Path, name: str, run_id: str | None, number: int, *, kind: str = "trial") -> Path:
    """``<runs-dir>/<name>-<run id>/trial-NNNNN``; ``kind="confirm"`` for a confirmation job's
    ``confirm-NNNNN`` (numbered in its own companion study)."""
    return runs_dir / study_namespace(name, run_id) / f"{kind}-{number:05d}"


def _identity(study: str, run_id: str | None, trial: int) -> dict[str, Any]:
    return {"study": study, "run_id": run_id, "trial": trial}


def _read_identity(run_dir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((run_dir / TRIAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def claim_run_dir(run_dir: Path, *, study: str, run_id: str | None, trial: int, resuming: bool) -> None:
    """Make ``run_dir`` this trial's, or raise a UserError naming whose it is.

    A new trial takes a folder that is missing or empty. A retry that resumes (``resuming``) takes
    its failed trial's folder, which must be claimed by the same study (name and run id); the
    ``trial.json`` then keeps naming the trial that first claimed it.
    """
    owner = _read_identity(run_dir)
    if resuming:
        if owner is None or owner.get("study") != study or owner.get("run_id") != run_id:
            raise UserError(
                f"{run_dir}: will not resume from it: it belongs to {_describe(owner)}, "
                f"not to study {study} (run id {run_id})"
            )
        return
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise UserError(
            f"{run_dir}: holds files of {_describe(owner)}; trial {trial} of study {study} will not overwrite "
            "them (move them away, or use another --runs-dir)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / TRIAL, json.dumps(_identity(study, run_id, trial)))


def _describe(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return "no edgesearch trial (no readable trial.json)"
    return f"study {owner.get('study')} (run id {owner.get('run_id')}) trial {owner.get('trial')}"


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
