"""Where trial pictures and weights go so that the dashboard and the report can show them.

Optuna's artifact store keeps the files; the study storage keeps only their metadata (file
name, id, mime type) as trial system attributes, which is what optuna-dashboard reads to show
them on the trial page. The default store is a folder; on many machines it must be a folder
they all share (NFS) or the dashboard shows metadata without files. An upload hard-links the
trial's file into the folder where the file system allows (:class:`LinkingArtifactStore`), so a
trial's ``best.pt`` takes its space once.

Folder precedence: ``--artifacts`` > ``EDGESEARCH_ARTIFACTS`` > ``./artifacts``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from edgesearch.errors import UserError
from edgesearch.trainer.run_files import TRIAL_ARTIFACTS

if TYPE_CHECKING:
    import optuna

    from edgesearch.searcher.storage._optuna.handles import ArtifactStore

__all__ = [
    "DEFAULT_ARTIFACTS",
    "ENV_VAR",
    "LinkingArtifactStore",
    "artifact_file",
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


class LinkingArtifactStore:
    """Optuna's folder artifact store, whose uploads hard-link the file they read wherever they can.

    Why: the store held a second copy of each trial's ``best.pt`` (57 MB for U-Net/resnet18). A hard
    link is the same file under a second name: it takes no space, and the store's name keeps its bytes
    whatever becomes of the run folder's name. Every file edgesearch writes is replaced by a rename,
    never changed in place (:func:`~edgesearch.files.atomic_write`), so a retry's new ``best.pt`` in the
    same folder never changes what the store holds; and removing one name frees nothing while the other
    stands. A symbolic link would break as soon as the run folder moved or its file went. Across file
    systems, or where links are refused, the file is copied as Optuna's store does.
    """

    def __init__(self, folder: Path) -> None:
        from optuna.artifacts import FileSystemArtifactStore

        self.folder = folder
        self._files = FileSystemArtifactStore(str(folder))

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._files.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if not self._link(artifact_id, content_body):
            self._files.write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._files.remove(artifact_id)

    def _link(self, artifact_id: str, body: BinaryIO) -> bool:
        """Hard-link the file that ``body`` reads as the artifact; False (nothing written) when it cannot be."""
        source = getattr(body, "name", None)
        if not isinstance(source, str) or Path(artifact_id).name != artifact_id:
            return False  # not a file by name (a stream), or an id that is not a plain name (Optuna refuses it)
        target = self.folder / artifact_id
        try:
            os.link(source, target)
        except OSError:  # another file system (EXDEV), links refused (EPERM, EOPNOTSUPP), too many (EMLINK)
            return False
        try:
            # The upload opened the file before this: had its name been replaced since, the link
            # would be to the new file, not to the bytes being uploaded.
            same = os.path.samestat(target.stat(), os.fstat(body.fileno()))
        except OSError:
            same = False
        if not same:
            target.unlink()
        return same


def artifact_file(folder: Path, artifact_id: str) -> Path:
    """Where the folder store keeps an artifact: the file named by its id."""
    return folder / artifact_id


def open_artifact_store(folder: Path) -> ArtifactStore:
    """A folder artifact store (:class:`LinkingArtifactStore`), the folder created when missing and proven writable.

    A file in its place, a folder that cannot be created, or one this process cannot write into is
    a UserError at once: found at a worker's start, not as a missing picture after every trial.
    """
    import tempfile

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
    return LinkingArtifactStore(folder)


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
