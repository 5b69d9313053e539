"""A study's disk: what a finished trial keeps, the checkpoints ``keep_checkpoints`` lets go, what a study uses.

A finished trial used to keep ``last.pt`` (172 MB for U-Net/resnet18 with its Adam state), ``best.pt``
(57 MB) and a copy of ``best.pt`` in the artifact store: 280 MB a trial, 56 GB for a study of 200. Now:

- **A finished trial keeps ``best.pt`` only.** ``last.pt`` serves to resume, and a finished trial
  (COMPLETE or PRUNED; a confirmation job likewise) is never resumed, so the worker removes it once the
  storage knows the trial finished (:func:`remove_last`). A crash before that leaves a RUNNING trial,
  which the heartbeat fails and retries from that very ``last.pt``; after it, a finished trial with its
  ``best.pt``. A FAILed or interrupted trial keeps its ``last.pt``: its retry resumes from it. (The
  trainer does not even write a ``last.pt`` for the end of a trial: ``train(last_at_end=False)``.)
- The artifact store hard-links ``best.pt`` instead of copying it
  (:class:`~edgesearch.searcher.storage.artifacts.LinkingArtifactStore`).
- **``keep_checkpoints: K``** keeps the ``best.pt`` of the best K finished trials (:func:`rank`) and of
  every trial a command still points at (:func:`protected_trials`); the others' ``best.pt`` and its
  artifact are removed by the worker that finishes a trial (:func:`remove_checkpoints`), and the trial's
  :data:`~edgesearch.searcher.study.run_folders.CHECKPOINT_REMOVED_ATTR` user attribute says why.

Why that is safe with many workers at once:

- A trial leaves the best K only once K better trials have finished; a finished trial never changes its
  values nor becomes unfinished, so a trial that is out is out for good. A worker reading the study from
  an older or partial view (Optuna's cache of finished trials) can therefore only keep more, never remove
  a file that a newer view keeps.
- Only finished trials lose files, never one whose run folder a running or waiting trial names (a
  retry resumes in its failed trial's folder), nor one a command points at as of this pass.
- Per trial: the mark first, then the artifact, ``best.pt`` last. A reader that finds no mark finds the
  file (``predict --study`` then says so, or loads it); and while ``best.pt`` is there the work is not
  done, so the next pass finishes what a worker killed half-way left. Two workers removing the same
  files both succeed: a file already gone is no error, and the mark is the same write twice.

Disk use (``study show``) counts each file once, however many names it has (a hard link), by the blocks it
takes on disk, as ``du`` does. Importing this module is cheap: no torch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from optuna.trial import TrialState

from edgesearch.errors import UserError
from edgesearch.searcher.study.run_folders import CHECKPOINT_REMOVED_ATTR
from edgesearch.searcher.study.studies import FINISHED
from edgesearch.trainer.run_files import BEST, LAST

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from edgesearch.searcher.storage._optuna.handles import ArtifactStore
    from edgesearch.searcher.study.config import StudyConfig

__all__ = [
    "DiskUse",
    "disk_use",
    "kept_trials",
    "protected_trials",
    "rank",
    "remove_checkpoints",
    "remove_last",
    "removed_reason",
]

_log = logging.getLogger(__name__)
_UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)
"""Trials whose run folder is in use: running, or a retry waiting to resume there."""


def remove_last(run_dir: Path) -> None:
    """Remove a finished trial's ``last.pt``: only a retry resumes from it, and a finished trial has none.

    Called once the storage knows the trial finished, never before (module docstring).
    """
    (run_dir / LAST).unlink(missing_ok=True)


def rank(trial: FrozenTrial) -> tuple[int, float, int]:
    """The sort key of a finished trial, best first: COMPLETE trials by value (for two objectives the first
    metric, val IoU: the one ``best.pt`` was chosen by), then PRUNED ones by the best value they reported;
    ties by number. A trial's key never changes once it is finished."""
    if trial.state == TrialState.COMPLETE:
        values = trial.values or []
        value = float(values[0]) if values else -math.inf
        group = 0
    else:
        value = max(trial.intermediate_values.values(), default=-math.inf)
        group = 1
    return group, -value if math.isfinite(value) else math.inf, trial.number


def kept_trials(trials: Iterable[FrozenTrial], keep: int, protected: Collection[int]) -> set[int]:
    """Numbers of the finished trials whose ``best.pt`` stays: the best ``keep`` by :func:`rank`, and ``protected``."""
    finished = sorted((t for t in trials if t.state in FINISHED), key=rank)
    return {t.number for t in finished[:keep]} | set(protected)


def protected_trials(study: optuna.Study, config: StudyConfig) -> set[int]:
    """The trials a command points at, whose ``best.pt`` stays whatever ``keep_checkpoints`` says.

    One metric: the trial ``study best`` names (its default rule,
    :func:`~edgesearch.searcher.study.choice.study_choice`) and the best trial ``predict --study`` takes;
    two objectives: every point of the Pareto front (any may be ``--pick``-ed). And the source trial of
    every ``study confirm`` job: ``study best --confirmed`` points at its checkpoint.
    """
    from edgesearch.searcher.study.best import best_trial, front_trials
    from edgesearch.searcher.study.choice import study_choice
    from edgesearch.searcher.study.confirm import confirmation_job, load_companion

    protected: set[int] = set()
    if config.multi_objective:
        protected.update(t.number for t in front_trials(study))
    else:
        with contextlib.suppress(UserError):  # no complete trial yet: nothing to name
            protected.add(study_choice(study, config).chosen.number)
            protected.add(best_trial(study, config).number)
    companion = load_companion(study)
    if companion is not None:
        for job in companion.get_trials(deepcopy=False):
            source = confirmation_job(job)
            if source is not None:
                protected.add(int(source["trial"]))
    return protected


def removed_reason(trial: FrozenTrial) -> str | None:
    """Why ``keep_checkpoints`` removed the trial's ``best.pt``; None while the trial keeps it."""
    reason = trial.user_attrs.get(CHECKPOINT_REMOVED_ATTR)
    return None if reason is None else str(reason)


def remove_checkpoints(study: optuna.Study, config: StudyConfig, store: ArtifactStore | None) -> list[int]:
    """Remove the ``best.pt`` (and its artifact) of the finished trials that ``keep_checkpoints`` does not keep;
    the numbers of the trials something was removed of. Nothing without ``keep_checkpoints``.

    Called by the worker that has just told the storage a trial finished (module docstring: why it is safe
    with many workers).
    """
    keep = config.keep_checkpoints
    if keep is None:
        return []
    trials = study.get_trials(deepcopy=False)
    kept = kept_trials(trials, keep, protected_trials(study, config))
    busy = {t.user_attrs.get("run_dir") for t in trials if t.state in _UNFINISHED}
    reason = f"keep_checkpoints {keep}: only the best {keep} finished trial(s) and those in use keep their best.pt"
    removed = []
    for trial in trials:
        run_dir = trial.user_attrs.get("run_dir")
        if trial.state not in FINISHED or trial.number in kept or not isinstance(run_dir, str) or run_dir in busy:
            continue
        if _remove_checkpoint(study, trial, Path(run_dir), store, reason):
            removed.append(trial.number)
    return removed


def _remove_checkpoint(
    study: optuna.Study, trial: FrozenTrial, run_dir: Path, store: ArtifactStore | None, reason: str
) -> bool:
    """Mark, then remove the artifact, then ``best.pt`` (module docstring); False when nothing was left to remove."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    from edgesearch.searcher.storage._optuna.handles import set_finished_trial_user_attr

    best = run_dir / BEST
    artifact = _artifact_ids(trial).get(BEST)
    stored = artifact is not None and store is not None and _in_store(store, artifact)
    if not best.exists() and not stored:
        return False
    # Written whenever something is left to remove: a worker's view (Optuna's cache of finished trials)
    # may lack the mark that another worker, killed before it removed the files, wrote.
    set_finished_trial_user_attr(study, trial, CHECKPOINT_REMOVED_ATTR, reason)
    if stored and store is not None and artifact is not None:
        with contextlib.suppress(ArtifactNotFound):  # another worker removed it first
            store.remove(artifact)
    best.unlink(missing_ok=True)
    _log.info("trial %d: removed %s (%s)", trial.number, best, reason)
    return True


def _artifact_ids(trial: FrozenTrial) -> dict[str, str]:
    """{file name: artifact id} of what the trial uploaded (its ``artifacts`` user attribute)."""
    ids = trial.user_attrs.get("artifacts")
    return {str(k): str(v) for k, v in ids.items()} if isinstance(ids, dict) else {}


def _in_store(store: ArtifactStore, artifact_id: str) -> bool:
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        store.open_reader(artifact_id).close()
    except ArtifactNotFound:
        return False
    return True


# ---------------------------------------------------------------------------------------------- disk use


@dataclass(frozen=True)
class DiskUse:
    """What a study takes on disk, in bytes: its run folders, and what its artifacts add to them."""

    runs: int
    """The files under the study's run folders (its trials', its confirmation jobs')."""
    artifacts: int
    """The study's artifact files, less those that are hard links to run files (counted in ``runs``)."""
    run_folders: tuple[Path, ...]
    artifact_folder: Path
    finished: int
    """The study's finished (COMPLETE and PRUNED) trials."""
    per_trial: dict[int, int]
    """Trial number -> bytes of its run folder and its artifacts; only trials whose files are here."""

    @property
    def total(self) -> int:
        return self.runs + self.artifacts

    @property
    def per_finished(self) -> float | None:
        """The study's bytes per finished trial; None before any finished."""
        return self.total / self.finished if self.finished else None


def disk_use(study: optuna.Study, artifact_folder: Path) -> DiskUse:
    """What ``study`` (with its confirmation jobs) takes in its run folders and in ``artifact_folder``.

    The run folders are the parents of the trials' run directories (the study's namespace,
    ``<runs-dir>/<name>-<run id>``), as the trials recorded them; reads files only, never writes.
    """
    from edgesearch.searcher.storage.artifacts import artifact_file
    from edgesearch.searcher.study.confirm import load_companion

    trials = list(study.get_trials(deepcopy=False))
    companion = load_companion(study)
    jobs = list(companion.get_trials(deepcopy=False)) if companion is not None else []
    run_dirs = {t.number: d for t in trials if (d := _run_dir(t)) is not None}
    job_dirs = [d for t in jobs if (d := _run_dir(t)) is not None]
    folders = tuple(sorted({d.parent for d in [*run_dirs.values(), *job_dirs] if d.parent.is_dir()}))
    run_files = _files(folders)
    artifacts = [artifact_file(artifact_folder, a) for t in [*trials, *jobs] for a in _artifact_ids(t).values()]
    per_trial = {}
    for trial in trials:
        own = [*_files([run_dirs[trial.number]] if trial.number in run_dirs else [])]
        own += _existing([artifact_file(artifact_folder, a) for a in _artifact_ids(trial).values()])
        if own:
            per_trial[trial.number] = _blocks(own)
    runs = _blocks(run_files)
    return DiskUse(
        runs=runs,
        artifacts=_blocks([*run_files, *_existing(artifacts)]) - runs,
        run_folders=folders,
        artifact_folder=artifact_folder,
        finished=sum(1 for t in trials if t.state in FINISHED),
        per_trial=per_trial,
    )


def _run_dir(trial: FrozenTrial) -> Path | None:
    run_dir = trial.user_attrs.get("run_dir")
    return Path(run_dir) if isinstance(run_dir, str) else None


def _files(folders: Iterable[Path]) -> list[Path]:
    """Every path under ``folders`` (the folders themselves included, as ``du`` counts them); links not followed."""
    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        found.append(folder)
        for root, dirs, names in os.walk(folder):
            found.extend(Path(root, name) for name in [*dirs, *names])
    return found


def _existing(paths: Iterable[Path]) -> list[Path]:
    return [p for p in paths if p.exists()]


def _blocks(paths: Iterable[Path]) -> int:
    """Bytes that ``paths`` take on disk (their blocks, as ``du`` counts), each file once whatever its names."""
    seen: dict[tuple[int, int], int] = {}
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile (a worker runs the study)
            info = path.lstat()
            seen[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return sum(seen.values())
