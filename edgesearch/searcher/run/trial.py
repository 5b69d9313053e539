"""One trial: sample a TrainConfig, train it with a pruning callback, record what happened.

The pruning callback is the only Optuna code near the training loop: it reports the study
metric after every epoch and raises ``TrialPruned`` when the pruner says so. A study of two
objectives is never pruned (Optuna cannot): the callback then only stores the history, and the
trial's values are both metrics at the epoch its ``best.pt`` holds. A confirmation job
(:mod:`~edgesearch.searcher.study.confirm`) trains its stored config instead of a sampled one, in its own
``confirm-NNNNN`` folder, and is never pruned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from edgesearch.errors import RunFailed, UserError
from edgesearch.searcher.storage._optuna.handles import is_retry, study_exists
from edgesearch.searcher.study.progress import EPOCHS_DONE_ATTR
from edgesearch.trainer import run_files
from edgesearch.trainer.callbacks import Callback, StopForGood
from edgesearch.trainer.records import EpochRecord, stored_record

if TYPE_CHECKING:
    from edgesearch.searcher.storage._optuna.handles import ArtifactStore
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.trainer.loop import TrainResult

__all__ = ["PruningCallback", "TrialInterrupted", "TrialOutcome", "run_trial"]

_log = logging.getLogger(__name__)


class PruningCallback(Callback):
    """Reports ``metric`` each epoch, keeps the history, and prunes when the pruner says so.

    ``prune=False`` (a study of two objectives, whose trials Optuna can neither report nor prune)
    only keeps the history, and stores the count of epochs done each epoch instead, for whoever
    watches the study (a single-objective trial's reported values say as much).

    The history is stored once, by :meth:`store_history` when the trial ends, not per epoch: a
    JSON that grows each epoch, rewritten each epoch, was the largest storage cost of a trial, and
    nothing needs it earlier (a retry resumes its curve from ``last.pt``).
    """

    def __init__(
        self, trial: optuna.Trial, *, metric: str, history: list[dict[str, Any]] | None = None, prune: bool = True
    ) -> None:
        self.trial = trial
        self.metric = metric
        self.history = list(history or [])
        self.prune = prune

    def on_epoch_end(self, record: EpochRecord) -> None:
        epoch = record["epoch"]
        kept = stored_record(record)
        value = float(kept[self.metric])
        self.history.append(kept)
        if not self.prune:
            self.trial.set_user_attr(EPOCHS_DONE_ATTR, int(epoch))
            return
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise _Pruned(f"pruned after epoch {epoch}: {self.metric} {value:.4f}")

    def store_history(self) -> None:
        """Store the epochs' records as the trial's ``history`` user attribute (once, at its end)."""
        if self.history:
            self.trial.set_user_attr("history", self.history)


class _Pruned(optuna.TrialPruned, StopForGood):
    """Optuna's ``TrialPruned``, which also tells the trainer that nothing resumes the run (no ``last.pt`` for it)."""


class TrialInterrupted(Exception):
    """Raised from a trainer callback to end a trial because its worker is asked to stop."""


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: TrialState
    value: float | None
    """A COMPLETE trial's value; None otherwise, and for a study of two objectives (see ``values``)."""
    epochs: int
    reason: str = ""
    interrupted: bool = False
    """The worker was stopped mid-trial; the trial is to be handed back for a retry."""
    error_kind: str = ""
    """For a crashed trial: the exception's type name, to spot the same crash repeating."""
    values: tuple[float, ...] | None = None
    """A COMPLETE trial's values in a study of two objectives, in the order of its ``metric`` list."""
    label: str = "trial"
    """``trial``, or ``confirmation`` for a confirmation job (numbered in its companion study)."""
    run_dir: Path | None = None
    """The trial's run folder (None from a runner that writes none): once the trial is told finished, the
    worker removes its ``last.pt`` there (:func:`~edgesearch.searcher.study.disk.remove_last`)."""


def _resume_point(trial: optuna.Trial) -> Path | None:
    """A retried trial continues from the failed trial's last.pt when that file is here."""
    if not is_retry(trial):
        return None
    previous = trial.user_attrs.get("run_dir")
    if not previous:
        return None
    last = Path(previous) / run_files.LAST
    return last if last.is_file() else None


def _resume_state(trial: optuna.Trial, last: Path) -> dict[str, Any] | None:
    """What ``last`` holds to resume from, or None (with one warning line) when it cannot be read.

    A checkpoint is written whole or not at all, but a disk fault, a copy cut short or a hand edit
    can still leave one that does not load: the retry then starts from scratch in a folder of its
    own, rather than crashing the worker and losing the retries it has left.
    """
    from edgesearch.trainer.checkpoint_files import RESUME_KEYS, load_checkpoint

    try:
        state = load_checkpoint(last)
    except Exception as exc:  # truncated, corrupt, or no checkpoint at all: torch says so many ways
        lines = str(exc).strip().splitlines()  # torch's own text runs to several lines
        problem = f"cannot be read ({type(exc).__name__}{': ' + lines[0] if lines else ''})"
    else:
        if isinstance(state, dict) and state.keys() >= RESUME_KEYS:
            return state
        problem = "is not an edgesearch last.pt"
    _log.warning("trial %d: %s %s; its retry starts from scratch", trial.number, last, problem)
    return None


def run_trial(
    trial: optuna.Trial,
    config: StudyConfig,
    *,
    runs_dir: Path,
    artifact_store: ArtifactStore | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrialOutcome:
    """Train the trial's config and return how it ended; the caller tells the storage.

    A UserError (e.g. the data folder vanished) or a RunFailed (a full disk) propagates: every
    later trial would fail the same way, so the worker should stop rather than burn the study. With an artifact
    store, the trial's curves, edge overlay and best weights are uploaded however it ended.
    """
    from edgesearch.searcher.study.confirm import confirmation_job
    from edgesearch.searcher.study.run_folders import RUN_ID_ATTR, claim_run_dir, file_digest, trial_run_dir
    from edgesearch.searcher.study.space import sample
    from edgesearch.trainer import NonFiniteLossError, train
    from edgesearch.trainer.config import validate_train_config

    job = confirmation_job(trial)
    if job is None:
        train_config = sample(trial, config.space, config.base_config)
        owner, kind, kind_label = config.name, "trial", "trial"
    else:  # a re-training queued by `study confirm`: the source trial's config with a fresh seed
        train_config = validate_train_config(job["config"], source=f"confirmation of trial {job['trial']}")
        owner, kind, kind_label = trial.study.study_name, "confirm", "confirmation"
    resume_from = _resume_point(trial)
    state = None if resume_from is None else _resume_state(trial, resume_from)
    if state is None:
        resume_from = None
    run_id = trial.study.user_attrs.get(RUN_ID_ATTR)
    if resume_from is not None:
        run_dir = Path(trial.user_attrs["run_dir"])
    else:
        run_dir = trial_run_dir(runs_dir, config.name, run_id, trial.number, kind=kind)
    claim_run_dir(run_dir, study=owner, run_id=run_id, trial=trial.number, resuming=resume_from is not None)
    history: list[dict[str, Any]] = []
    if state is not None:
        resumed = int(state["epoch"])
        # last.pt holds the curve up to its epoch. It is written on a cadence, so the failed trial
        # may have trained epochs after it: those are trained again, and reported once.
        history = [stored_record(row) for row in state["history"] if int(row["epoch"]) <= resumed]
        trial.set_user_attr("resumed_from_epoch", resumed)
    elif trial.user_attrs.get("history"):
        trial.set_user_attr("history", [])  # a retry starting over: the failed trial's curve is not its own
    trial.set_user_attr("config", train_config.model_dump(mode="json"))
    trial.set_user_attr("run_dir", str(run_dir.resolve()))

    # Re-trainings are never pruned: they exist to run to the end.
    prune = job is None and not config.multi_objective
    pruning = PruningCallback(trial, metric=config.objectives[0], history=history, prune=prune)
    try:
        # Observers first: a pruned epoch is still reported to them. No last.pt for the end of a run
        # that trained all its epochs: a finished trial is never resumed.
        result = train(
            train_config,
            callbacks=[*callbacks, pruning],
            run_dir=run_dir,
            resume_from=resume_from,
            last_at_end=False,
        )
    except optuna.TrialPruned as exc:
        outcome = TrialOutcome(trial.number, TrialState.PRUNED, None, len(pruning.history), str(exc))
    except TrialInterrupted as exc:
        # Nothing to publish: the retry continues in the same run directory.
        pruning.store_history()
        return TrialOutcome(
            trial.number,
            TrialState.FAIL,
            None,
            len(pruning.history),
            str(exc),
            interrupted=True,
            label=kind_label,
            run_dir=run_dir,
        )
    except NonFiniteLossError as exc:
        # Not retried (its parameters diverge), but counted like a crash: when every trial diverges
        # the cause is the data or the setup, and the worker's stop rule ends the waste.
        trial.set_user_attr("fail_reason", f"non-finite loss: {exc}")
        outcome = TrialOutcome(
            trial.number,
            TrialState.FAIL,
            None,
            len(pruning.history),
            f"non-finite loss: {exc}",
            error_kind="NonFiniteLossError",
        )
    except (UserError, RunFailed):
        raise
    except Exception as exc:  # one trial's crash must not take the worker down
        if isinstance(exc, KeyError) and not study_exists(trial.study):
            raise  # the study was deleted under the worker, which stops with one line
        _log.exception("trial %d failed", trial.number)
        reason = f"{type(exc).__name__}: {exc}"
        trial.set_user_attr("fail_reason", reason)
        outcome = TrialOutcome(
            trial.number, TrialState.FAIL, None, len(pruning.history), reason, error_kind=type(exc).__name__
        )
    else:
        if result.best_checkpoint is not None:
            trial.set_user_attr("best_checkpoint", str(result.best_checkpoint.resolve()))
            # predict --study checks it: the file at that path must still be this trial's.
            trial.set_user_attr("best_checkpoint_sha256", file_digest(result.best_checkpoint))
        if config.multi_objective:
            row = stored_record(_checkpoint_epoch(result))
            values = tuple(float(row[metric]) for metric in config.objectives)
            outcome = TrialOutcome(trial.number, TrialState.COMPLETE, None, len(result.history), values=values)
        else:
            value = max(float(stored_record(row)[config.objectives[0]]) for row in result.history)
            outcome = TrialOutcome(trial.number, TrialState.COMPLETE, value, len(result.history))
    pruning.store_history()
    if artifact_store is not None:
        _publish(trial, run_dir, artifact_store)
    return replace(outcome, label=kind_label, run_dir=run_dir)


def _checkpoint_epoch(result: TrainResult) -> EpochRecord:
    """The epoch whose weights ``best.pt`` holds (the trainer's best by val_iou): a study of two
    objectives reads both values there, so a point picked from its front is a model that exists."""
    for record in result.history:
        if record["epoch"] == result.best_epoch:
            return record
    # No epoch improved on -inf (a NaN val_iou every epoch): the values are NaN, which Optuna fails.
    return result.history[-1]


def _publish(trial: optuna.Trial, run_dir: Path, store: ArtifactStore) -> None:
    """Upload the trial's files (curves, the edge overlay the trainer drew, best weights) to the artifact store."""
    from edgesearch.searcher.storage.artifacts import upload_trial_files

    ids = upload_trial_files(trial, store, run_dir)
    if ids:
        trial.set_user_attr("artifacts", ids)
