"""The worker loop: take trials of one study until it holds ``n_trials`` finished trials.

Optuna's RDB storage is the only coordinator. Before each trial a worker fails stale trials
(their retries are queued by the storage's RetryHeartbeatStaleTrialCallback), then, holding a
lock of the database (a PostgreSQL advisory lock, or a file lock beside a SQLite file), counts
the study's RUNNING + COMPLETE + PRUNED trials in one statement and calls ``study.ask()`` only
when that is below ``n_trials``: two workers never take the same last slot, so a study never
overshoots and no stray trial is left behind. The lock is held for one count and one ask, so
the time it serializes workers does not grow with the study. Every trial runs under a heartbeat
thread so that a killed worker's trial is noticed and retried; SIGTERM/Ctrl-C hand the running
trial back for a retry at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.trial import TrialState

from edgesearch.errors import UserError
from edgesearch.searcher.objective import TrialInterrupted, TrialOutcome, run_trial
from edgesearch.searcher.reconnect import ReconnectingRDBStorage
from edgesearch.searcher.study import FINISHED, load_study
from edgesearch.trainer.callbacks import Callback

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

    from edgesearch.searcher.config import StudyConfig

__all__ = ["StopOnRequest", "TrialRunner", "WorkerSummary", "run_worker"]

_log = logging.getLogger(__name__)
_COUNTED = (TrialState.RUNNING, *FINISHED)


@dataclass
class WorkerSummary:
    outcomes: list[TrialOutcome] = field(default_factory=list)
    stopped_because: str = ""
    failed: bool = False
    """True when the worker stopped because trials kept failing the same way."""

    def count(self, state: TrialState) -> int:
        return sum(1 for o in self.outcomes if o.state == state)


def _rdb(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The study's RDB storage: the public Study has no accessor, and Optuna wraps it in a cache."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


@contextmanager
def _heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    storage = _rdb(study)
    if storage is None:
        yield
        return
    interval = storage.get_heartbeat_interval()
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception:  # a dropped connection: try again on the next beat
                _log.warning("heartbeat of trial %d failed; retrying", trial.number, exc_info=True)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome) -> None:
    state = study._storage.get_trial(trial._trial_id).state
    if state.is_finished():
        # Its heartbeats went missing (a long outage, a frozen machine) and another worker failed
        # it and queued a retry; telling now would raise, and the retry carries on.
        _log.warning("trial %d was already marked %s by another worker; its retry continues", trial.number, state.name)
        return
    try:
        if outcome.state == TrialState.COMPLETE:
            study.tell(trial, outcome.value)
        else:
            study.tell(trial, state=outcome.state)
    except RuntimeError as exc:
        # GridSampler calls study.stop() once the grid is covered, which Optuna only allows
        # inside optimize(); the trial's state is already stored, and n_trials stops us.
        if "stop" not in str(exc):
            raise


@contextmanager
def _admission(study: optuna.Study) -> Iterator[bool]:
    """Hold the study's admission lock; yields whether the storage has one."""
    storage = _rdb(study)
    if isinstance(storage, ReconnectingRDBStorage):
        with storage.exclusive(f"edgesearch-admission:{study.study_name}") as locked:
            yield locked
    else:
        yield False


def _counts(study: optuna.Study) -> Counter[TrialState]:
    """The study's trials by state, read from the database itself.

    Not through the study's in-process trial cache: that cache may never see a trial whose
    row was committed after a newer one (it only re-reads ids above the last finished trial),
    and one missed trial is enough for two workers to take the same last slot.
    """
    storage = _rdb(study)
    if isinstance(storage, ReconnectingRDBStorage):
        return storage.count_trials(study._study_id)
    if storage is None:
        return Counter(t.state for t in study.get_trials(deepcopy=False))
    return Counter(t.state for t in storage.get_all_trials(study._study_id, deepcopy=False))


def _taken(counts: Counter[TrialState]) -> int:
    """Slots of ``n_trials`` already used: finished trials and the ones running now."""
    return sum(counts[state] for state in _COUNTED)


def _hand_back(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """FAIL the interrupted trial and queue its retry at once, as the heartbeat would do later.

    The retry carries the trial's ``run_dir``, so it resumes from the last checkpoint written.
    """
    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=TrialState.FAIL)
    frozen = study._storage.get_trial(trial._trial_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, frozen)


class TrialRunner(Protocol):
    """Trains one admitted trial and says how it ended; the worker tells the storage.

    :func:`~edgesearch.searcher.objective.run_trial` is the real one. A stand-in must behave like
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


def run_worker(
    name: str,
    url: str,
    *,
    worker_index: int = 0,
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
) -> WorkerSummary:
    """Run trials of study ``name`` until it is full, ``max_trials`` ran here, or ``timeout`` passed.

    ``callbacks`` are trainer callbacks added to every trial (e.g. progress lines per epoch);
    ``on_trial_start``/``on_trial_end`` are called around each trial this worker runs. Setting
    ``stop`` (e.g. from a SIGTERM handler) ends the running trial at its next batch, hands it
    back for a retry that resumes from its last checkpoint, and returns. A trial that crashes
    FAILs and the worker goes on, unless ``max_consecutive_failures`` trials in a row crash the
    same way: then the cause is not the trial, and the worker stops rather than burn the study.
    A UserError inside a trial (its data vanished) FAILs it and propagates at once.

    ``trial_runner`` is what trains a trial (:func:`~edgesearch.searcher.objective.run_trial`);
    tests and benchmarks swap in a cheap one to exercise the coordination alone.
    """
    study, config = load_study(name, url, worker_index=worker_index)
    stop = stop if stop is not None else threading.Event()
    deadline = None if timeout is None else time.monotonic() + timeout
    summary = WorkerSummary()
    rng = random.Random(worker_index)
    crashes: list[str] = []
    trial_callbacks = [*callbacks, StopOnRequest(stop)]
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        with _admission(study) as locked:  # count-then-ask as one step, so two workers never take one slot
            counts = _counts(study)
            finished = sum(counts[state] for state in FINISHED)
            trial = None
            if _taken(counts) < config.n_trials:
                with warnings.catch_warnings():
                    # We run the heartbeat ourselves (see _heartbeat); Optuna warns about ask() with one.
                    warnings.filterwarnings("ignore", message="Heartbeat of storage")
                    trial = study.ask()
        if finished >= config.n_trials:
            summary.stopped_because = "study complete"
            break
        if trial is None:
            stop.wait(poll_seconds)  # the last trials run elsewhere; stay in case one fails
            continue
        if not locked and _taken(_counts(study)) > config.n_trials:  # another worker took the slot meanwhile
            study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
            stop.wait(rng.uniform(0.1, 1.0))
            continue
        if on_trial_start is not None:
            on_trial_start(trial)
        with _heartbeat(study, trial):
            try:
                outcome = trial_runner(
                    trial, config, runs_dir=runs_dir, artifact_store=artifact_store, callbacks=trial_callbacks
                )
            except UserError as exc:
                trial.set_user_attr("fail_reason", str(exc))
                study.tell(trial, state=TrialState.FAIL)
                raise
            if outcome.interrupted:
                _hand_back(study, trial, f"interrupted: {outcome.reason}; retried from its last checkpoint")
            else:
                _tell(study, trial, outcome)
        summary.outcomes.append(outcome)
        crashes = [*crashes, outcome.error_kind] if outcome.error_kind else []
        if on_trial_end is not None:
            on_trial_end(outcome)
    return summary
