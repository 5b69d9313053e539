"""The worker loop: take trials of one study, and its confirmation jobs first, until it holds exactly
``n_trials`` finished trials.

Optuna's RDB storage is the only coordinator: admission (count, then ask) runs under the study's
admission lock (:func:`~edgesearch.searcher.storage.reconnecting.admitted`), so no two workers take the
same last slot; ``n_trials`` is read under that lock at each admission, so ``study set`` takes effect at
once. The story of one trial, step by step, is in ARCHITECTURE.md ("The path of one trial").
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import optuna
from optuna.trial import TrialState

from edgesearch.errors import RunFailed, UserError
from edgesearch.searcher.run.trial import TrialInterrupted, TrialOutcome, run_trial
from edgesearch.searcher.storage._optuna.handles import (
    ask,
    count_trials,
    hand_back,
    has_stale_trials,
    heartbeat,
    release_slot,
    stored_state,
    study_exists,
    tell,
)
from edgesearch.searcher.storage.reconnecting import admitted
from edgesearch.searcher.study.confirm import confirmation_job, load_companion
from edgesearch.searcher.study.studies import FINISHED, load_study, name_metrics, set_stored_n_trials, stored_n_trials
from edgesearch.trainer.callbacks import Callback

if TYPE_CHECKING:
    from edgesearch.searcher.storage._optuna.handles import ArtifactStore
    from edgesearch.searcher.study.config import StudyConfig

__all__ = ["StopOnRequest", "TrialRunner", "WorkerResult", "run_worker", "set_n_trials"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_COUNTED = (TrialState.RUNNING, *FINISHED)
_COMPANION_LOOK_S = 10.0
"""How often a worker looks for confirmation jobs (``study confirm``) while a study has none: not at
every turn of its loop, where hundreds of waiting workers would each pay a lookup per poll."""


@dataclass
class WorkerResult:
    outcomes: list[TrialOutcome] = field(default_factory=list)
    stopped_because: str = ""
    failed: bool = False
    """True when the worker stopped because trials kept failing the same way."""

    def count(self, state: TrialState) -> int:
        return sum(1 for o in self.outcomes if o.state == state)


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome) -> bool:
    """Tell the storage how the trial ended; False when another worker had already failed it."""
    state = stored_state(study, trial)
    if state.is_finished():
        # Its heartbeats went missing (a long outage, a frozen machine) and another worker failed
        # it and queued a retry; telling now would raise, and the retry carries on.
        _log.warning("trial %d was already marked %s by another worker; its retry continues", trial.number, state.name)
        return False
    if outcome.state == TrialState.COMPLETE:
        tell(study, trial, list(outcome.values) if outcome.values is not None else outcome.value)
    else:
        tell(study, trial, state=outcome.state)
    return True


def _tidy(study: optuna.Study, config: StudyConfig, outcome: TrialOutcome, store: ArtifactStore | None) -> None:
    """Once the storage knows a trial finished: its ``last.pt`` goes, and with ``keep_checkpoints`` the
    checkpoints the study keeps no more (:mod:`~edgesearch.searcher.study.disk`)."""
    from edgesearch.searcher.study.disk import remove_checkpoints, remove_last

    try:
        if outcome.run_dir is not None and outcome.state in FINISHED:
            remove_last(outcome.run_dir)
        if outcome.label == "trial" and outcome.state in FINISHED:  # a confirmation job is no trial of the study
            remove_checkpoints(study, config, store)
    except Exception:  # freeing space never stops a worker: what is left is removed after a later trial
        _log.warning("trial %d: could not remove the files it keeps no more", outcome.number, exc_info=True)


def _hand_back(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """:func:`hand_back` under the admission lock. Between the FAIL and the queued retry a worker
    counting free slots would see one and ask() a fresh trial, and the retry would then wait forever
    in a full study (the handed-back work lost)."""
    admitted(study, lambda locked: hand_back(study, trial, reason))


def _fail_stale(study: optuna.Study) -> None:
    """Fail trials whose heartbeat stopped and queue their retries; called under the admission lock
    for the same reason as :func:`_hand_back`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _take_job(companion: optuna.Study | None) -> tuple[optuna.Trial | None, int]:
    """A waiting confirmation job (or None) and how many jobs are waiting or running."""
    if companion is None:
        return None, 0

    def take(locked: bool) -> tuple[optuna.Trial | None, Counter[TrialState]]:
        _fail_stale(companion)  # a dead worker's job is retried like a trial
        counts = count_trials(companion)
        if not counts[TrialState.WAITING]:
            return None, counts
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            return companion.ask(), counts

    job, counts = admitted(companion, take)
    if job is None:
        return None, counts[TrialState.RUNNING]
    if confirmation_job(job) is None:  # without the lock, another worker took the last one: ask() made a new trial
        companion.tell(job, state=TrialState.FAIL)
        return None, counts[TrialState.WAITING] + counts[TrialState.RUNNING]
    return job, counts[TrialState.WAITING] + counts[TrialState.RUNNING]


def _taken(counts: Counter[TrialState]) -> int:
    """Slots of ``n_trials`` already used: finished trials and the ones running now."""
    return sum(counts[state] for state in _COUNTED)


def _run_admitted(
    study: optuna.Study,
    trial: optuna.Trial,
    config: StudyConfig,
    trial_runner: TrialRunner,
    runs_dir: Path,
    artifact_store: ArtifactStore | None,
    callbacks: Sequence[Callback],
) -> TrialOutcome:
    """Train an admitted trial under its heartbeat and tell the storage how it ended."""
    with heartbeat(study, trial):
        try:
            outcome = trial_runner(trial, config, runs_dir=runs_dir, artifact_store=artifact_store, callbacks=callbacks)
        except UserError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            raise
        except RunFailed as exc:  # not the trial's fault: its retry resumes once the machine is fixed
            _hand_back(study, trial, f"{exc}; retried from its last checkpoint")
            raise
        if outcome.interrupted:
            _hand_back(study, trial, f"interrupted: {outcome.reason}; retried from its last checkpoint")
            return outcome
        told = _tell(study, trial, outcome)
    if told:  # after the tell, never before: until then a crash leaves a trial whose retry resumes from last.pt
        _tidy(study, config, outcome, artifact_store)
    return outcome


def _leave_nothing_running(study: optuna.Study, trial: optuna.Trial, exc: BaseException) -> None:
    """An exception between ask and tell: the trial is FAIL (or, stopped by a second signal, handed back).

    Never left RUNNING, where it would hold a slot of ``n_trials`` until its heartbeat went stale.
    """
    try:
        if stored_state(study, trial) != TrialState.RUNNING:
            return
        if isinstance(exc, KeyboardInterrupt):
            _hand_back(study, trial, "interrupted: stopped at once; retried from its last checkpoint")
        else:
            trial.set_user_attr("fail_reason", _shorten_reason(f"{type(exc).__name__}: {exc}"))
            study.tell(trial, state=TrialState.FAIL)
    except Exception:  # the storage is gone too (deleted study, lost database)
        with contextlib.suppress(Exception):
            if not study_exists(study):
                return  # deleted with its trials: nothing is left to mark
        # A lost database: once back, the heartbeat's grace period fails the trial and retries it.
        _log.warning("could not mark trial %d failed after %s", trial.number, type(exc).__name__, exc_info=True)


def _shorten_reason(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TrialRunner(Protocol):
    """Trains one admitted trial and says how it ended; the worker tells the storage.

    :func:`~edgesearch.searcher.run.trial.run_trial` is the real one. A stand-in must behave like
    it towards the trial: report through it (pruning raised as ``TrialPruned`` and returned as a
    PRUNED outcome), end at a ``callbacks`` batch hook when the worker is asked to stop, and let a
    UserError propagate.
    """

    def __call__(
        self,
        trial: optuna.Trial,
        config: StudyConfig,
        *,
        runs_dir: Path,
        artifact_store: ArtifactStore | None,
        callbacks: Sequence[Callback],
    ) -> TrialOutcome: ...


class StopOnRequest(Callback):
    """Ends a trial at the next batch once ``stop`` is set; checkpoints already written stay whole."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def on_batch_end(self, *, epoch: int, step: int, loss: Any) -> None:
        if self.stop.is_set():
            raise TrialInterrupted(f"stopped during epoch {epoch + 1}")


def _admit(
    study: optuna.Study,
    n_trials: int,
    summary: WorkerResult,
    rng: random.Random,
    stop: threading.Event,
    poll_seconds: float,
    jobs_left: int,
) -> tuple[optuna.Trial | None, int]:
    """A new trial of the study, or None after waiting (``summary.stopped_because`` set when it is full);
    and the study's ``n_trials`` as last read (``n_trials``: as read before)."""
    # First without the lock: a worker waiting for the last trials to end (or fail) finds the study
    # full again and again, and hundreds of them polling the lock would load the database for nothing.
    counts = count_trials(study)
    trial, locked = None, False
    if _taken(counts) >= n_trials:
        n_trials = stored_n_trials(study)  # `study set` may have raised it since the last read

    def count_then_ask(has_lock: bool) -> tuple[optuna.Trial | None, Counter[TrialState], bool, int]:
        _fail_stale(study)
        wanted = stored_n_trials(study)  # under the lock that `study set` changes it under
        counts = count_trials(study)
        if _taken(counts) >= wanted:
            return None, counts, has_lock, wanted
        with warnings.catch_warnings():
            # Our own heartbeat runs (_optuna.handles.heartbeat); Optuna warns about ask() with one.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            # Counted under the lock: a retry or an enqueued trial is taken first, else a new one.
            return ask(study, none_waiting=has_lock and not counts[TrialState.WAITING]), counts, has_lock, wanted

    if _taken(counts) < n_trials or has_stale_trials(study):
        # Count-then-ask as one step, so two workers never take one slot.
        trial, counts, locked, n_trials = admitted(study, count_then_ask)
    finished = sum(counts[state] for state in FINISHED)
    if finished >= n_trials:
        if jobs_left:  # confirmation jobs run elsewhere: stay in case one fails and is retried
            stop.wait(poll_seconds)
            return None, n_trials
        summary.stopped_because = "study complete"
        return None, n_trials
    if trial is None:
        stop.wait(poll_seconds)  # the last trials run elsewhere; stay in case one fails
        return None, n_trials
    if not locked and _taken(count_trials(study)) > n_trials:  # another worker took the slot meanwhile
        release_slot(study, trial)
        stop.wait(rng.uniform(0.1, 1.0))
        return None, n_trials
    return trial, n_trials


def set_n_trials(study: optuna.Study, n_trials: int) -> int:
    """Change the study's ``n_trials`` under the admission lock; the value it replaces.

    Workers read ``n_trials`` under the same lock before each admission, so a running study follows the
    change at its next trial and still ends with exactly ``n_trials`` finished. A UserError when the
    study already holds more finished and running trials than ``n_trials``.
    """

    def check(counts: Counter[TrialState]) -> None:
        if n_trials < _taken(counts):
            finished = sum(counts[state] for state in FINISHED)
            raise UserError(
                f"--n-trials {n_trials}: study {study.study_name!r} already holds {finished} finished and "
                f"{counts[TrialState.RUNNING]} running trial(s), which all count towards n_trials; "
                f"allowed: at least {_taken(counts)}"
            )

    def change(locked: bool) -> int:
        check(count_trials(study))  # again: a worker may have taken a trial meanwhile
        return set_stored_n_trials(study, n_trials)

    check(count_trials(study))  # refused before the lock is taken (and its file made)
    return admitted(study, change)


def run_worker(
    name: str,
    url: str,
    *,
    max_trials: int | None = None,
    timeout: float | None = None,
    runs_dir: Path = Path("runs"),
    artifact_store: ArtifactStore | None = None,
    callbacks: Sequence[Callback] = (),
    on_trial_start: Callable[[optuna.Trial], None] | None = None,
    on_trial_end: Callable[[TrialOutcome], None] | None = None,
    stop: threading.Event | None = None,
    max_consecutive_failures: int = 3,
    poll_seconds: float = 2.0,
    trial_runner: TrialRunner = run_trial,
) -> WorkerResult:
    """Run trials of study ``name`` until it is full, ``max_trials`` ran here, or ``timeout`` passed.

    ``callbacks`` are trainer callbacks added to every trial (e.g. progress lines per epoch);
    ``on_trial_start``/``on_trial_end`` are called around each trial this worker runs. Setting
    ``stop`` (e.g. from a SIGTERM handler) ends the running trial at its next batch, hands it
    back for a retry that resumes from its last checkpoint, and returns. A trial that crashes
    FAILs and the worker goes on, unless ``max_consecutive_failures`` trials in a row crash the
    same way: then the cause is not the trial, and the worker stops rather than burn the study.
    A UserError inside a trial (its data vanished) FAILs it and propagates at once; a RunFailed
    (a full disk) hands the trial back for a retry and propagates at once.

    ``trial_runner`` is what trains a trial (:func:`~edgesearch.searcher.run.trial.run_trial`);
    tests and benchmarks swap in a cheap one to exercise the coordination alone.
    """
    from edgesearch.trainer.data_cache import check_budget

    check_budget()
    study, config = load_study(name, url)
    name_metrics(study, config)  # a study created before its objectives were named
    n_trials = config.n_trials
    stop = stop if stop is not None else threading.Event()
    deadline = None if timeout is None else time.monotonic() + timeout
    summary = WorkerResult()
    rng = random.Random()  # only spreads retries of a lost race; nothing to reproduce
    crashes: list[str] = []
    trial_callbacks = [*callbacks, StopOnRequest(stop)]
    idle = 0
    companion: optuna.Study | None = None
    look_for_companion = 0.0
    try:
        while True:
            if stop.is_set():
                summary.stopped_because = "stop requested"
                break
            if deadline is not None and time.monotonic() >= deadline:
                summary.stopped_because = "timeout"
                break
            if max_trials is not None and len(summary.outcomes) >= max_trials:
                summary.stopped_because = "max trials for this worker"
                break
            if len(crashes) >= max_consecutive_failures and len(set(crashes[-max_consecutive_failures:])) == 1:
                last = summary.outcomes[-1].reason
                summary.stopped_because = f"{len(crashes)} trials in a row failed with the same error, last: {last}"
                summary.failed = True
                break
            if companion is None and time.monotonic() >= look_for_companion:
                # Kept once found; while there is none, looked for again every _COMPANION_LOOK_S.
                companion = load_companion(study)
                look_for_companion = time.monotonic() + _COMPANION_LOOK_S
            trial, jobs_left = _take_job(companion)
            if trial is None:
                # Waiting for the last trials, look less often the longer nothing changes (up to 4x):
                # hundreds of waiting workers would otherwise poll the database for nothing.
                wait = poll_seconds * min(2**idle, 4)
                trial, n_trials = _admit(study, n_trials, summary, rng, stop, wait, jobs_left)
                if trial is None:
                    if summary.stopped_because:
                        break
                    idle += 1
                    continue
            idle = 0
            try:
                if on_trial_start is not None:
                    on_trial_start(trial)
                outcome = _run_admitted(
                    trial.study, trial, config, trial_runner, runs_dir, artifact_store, trial_callbacks
                )
            except BaseException as exc:
                _leave_nothing_running(trial.study, trial, exc)
                raise
            summary.outcomes.append(outcome)
            crashes = [*crashes, outcome.error_kind] if outcome.error_kind else []
            if on_trial_end is not None:
                on_trial_end(outcome)
    except KeyError:
        # Optuna's storage says "no such record" for every call once the study is gone.
        if study_exists(study):
            raise
        raise UserError(f"study {name!r} was deleted from the storage while this worker ran; stopping") from None
    return summary
