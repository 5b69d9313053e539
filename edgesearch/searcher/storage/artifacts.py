"""Where trial pictures and weights go so that the dashboard and the report can show them.

Optuna's artifact store keeps the files; the study storage keeps only their metadata (file
name, id, mime type) as trial system attributes, which is what optuna-dashboard reads to show
them on the trial page. The default store is a folder; on many machines it must be a folder
they all share (NFS) or the dashboard shows metadata without files.

Folder precedence: ``--artifacts`` > ``EDGESEARCH_ARTIFACTS`` > ``./artifacts``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgesearch.errors import UserError
from edgesearch.trainer.run_files import TRIAL_ARTIFACTS

if TYPE_CHECKING:
    import optuna

    from edgesearch.searcher.storage._optuna.handles import ArtifactStore

__all__ = [
    "DEFAULT_ARTIFACTS",
    "ENV_VAR",
    "check_artifact_dir",
    "open_artifact_store",
    "resolve_artifact_dir",
    "upload_trial_files",
]

_log = logging.getLogger(__name__)

ENV_VAR = "EDGESEARCH_ARTIFACTS"
DEFAULT_ARTIFACTS = Path("artifacts")


def resolve_artifact_dir(cli_value: Path | str | None = None) -> Path:
    for value in (cli_value, os.environ.get(ENV_VAR)):
        if value is not None and str(value).strip():
            return Path(str(value).strip())
    return DEFAULT_ARTIFACTS


def check_artifact_dir(folder: Path) -> None:
    """Raise a UserError when ``folder`` cannot be the artifact folder (a file is in its place); creates nothing."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"artifacts: {folder} is a file; expected a folder for the trial artifacts")


def open_artifact_store(folder: Path) -> ArtifactStore:
    """A folder artifact store, the folder created when missing and proven writable.

    A file in its place, a folder that cannot be created, or one this process cannot write into is
    a UserError at once: found at a worker's start, not as a missing picture after every trial.
    """
    import tempfile

    from optuna.artifacts import FileSystemArtifactStore

    check_artifact_dir(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"artifacts: cannot create folder {folder}: {exc.strerror}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".edgesearch-write-check-"):
            pass
    except OSError as exc:
        raise UserError(
            f"artifacts: cannot write into folder {folder}: {exc.strerror}; choose another with --artifacts"
        ) from None
    return FileSystemArtifactStore(str(folder))


def upload_trial_files(trial: optuna.Trial, store: ArtifactStore, run_dir: Path) -> dict[str, str]:
    """Upload the trial's TRIAL_ARTIFACTS that exist; returns {file name: artifact id}.

    Failing to upload a picture must not fail a trained trial, so errors are logged, not raised.
    """
    from optuna.artifacts import upload_artifact

    ids: dict[str, str] = {}
    for name in TRIAL_ARTIFACTS:
        path = run_dir / name
        if not path.is_file():
            continue
        mimetype = "image/png" if name.endswith(".png") else "application/octet-stream"
        try:
            ids[name] = upload_artifact(
                artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype=mimetype
            )
        except Exception:
            _log.warning("could not upload %s of trial %d", path, trial.number, exc_info=True)
    return ids
