"""The worker loop: take trials of one study until it holds ``n_trials`` finished trials.

Optuna's RDB storage is the only coordinator. Before each trial a worker fails stale trials
(their retries are queued by the storage's RetryHeartbeatStaleTrialCallback), and after
``study.ask()`` it checks that the study's RUNNING + COMPLETE + PRUNED trials do not exceed
``n_trials``; if they do, another worker took the last slot at the same moment and this one
hands its trial back to the queue (WAITING) instead of overshooting. Every trial runs under a
heartbeat thread so that a killed worker's trial is noticed and retried.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from edgesearch.searcher.objective import TrialOutcome, run_trial
from edgesearch.searcher.study import FINISHED, load_study
from edgesearch.trainer.callbacks import Callback

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

__all__ = ["WorkerSummary", "run_worker"]

_log = logging.getLogger(__name__)
_COUNTED = (TrialState.RUNNING, *FINISHED)


@dataclass
class WorkerSummary:
    outcomes: list[TrialOutcome] = field(default_factory=list)
    stopped_because: str = ""

    def count(self, state: TrialState) -> int:
        return sum(1 for o in self.outcomes if o.state == state)


@contextmanager
def _heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    storage = study._storage  # the public Study has no accessor for its storage
    if not isinstance(storage, optuna.storages.RDBStorage):
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


def _admitted(study: optuna.Study, n_trials: int) -> bool:
    counted = study.get_trials(deepcopy=False, states=_COUNTED)
    return len(counted) <= n_trials


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
    should_stop: Callable[[], bool] = lambda: False,
    poll_seconds: float = 2.0,
) -> WorkerSummary:
    """Run trials of study ``name`` until it is full, ``max_trials`` ran here, or ``timeout`` passed.

    ``callbacks`` are trainer callbacks added to every trial (e.g. progress lines per epoch);
    ``on_trial_start``/``on_trial_end`` are called around each trial this worker runs.
    """
    study, config = load_study(name, url, worker_index=worker_index)
    deadline = None if timeout is None else time.monotonic() + timeout
    summary = WorkerSummary()
    rng = random.Random(worker_index)
    while True:
        if should_stop():
            summary.stopped_because = "stop requested"
            break
        if deadline is not None and time.monotonic() >= deadline:
            summary.stopped_because = "timeout"
            break
        if max_trials is not None and len(summary.outcomes) >= max_trials:
            summary.stopped_because = "max trials for this worker"
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        if finished >= config.n_trials:
            summary.stopped_because = "study complete"
            break
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if finished + running >= config.n_trials:
            time.sleep(poll_seconds)  # the last trials run elsewhere; stay in case one fails
            continue
        with warnings.catch_warnings():
            # We run the heartbeat ourselves (see _heartbeat); Optuna warns about ask() with one.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        if not _admitted(study, config.n_trials):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
            time.sleep(rng.uniform(0.1, 1.0))
            continue
        if on_trial_start is not None:
            on_trial_start(trial)
        with _heartbeat(study, trial):
            outcome = run_trial(trial, config, runs_dir=runs_dir, artifact_store=artifact_store, callbacks=callbacks)
        _tell(study, trial, outcome)
        summary.outcomes.append(outcome)
        if on_trial_end is not None:
            on_trial_end(outcome)
    return summary
