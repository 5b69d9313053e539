"""Worker processes that train nothing: the real worker loop around a stand-in for the trial runner.

:class:`StandInTrial` does everything ``run_trial`` does towards the storage (sampling, user attributes,
a report and a pruning decision per epoch, the history, the outcome) and sleeps where training would be.
:func:`stand_in_worker` is one worker process of many (:func:`devtools.forked.run_forked`) that runs
``run_worker`` with it and reports its CPU time, split into start-up, trials and tail, and its database
round trips. For measuring what coordinating a study costs, apart from what training costs.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.sql_traffic import count_traffic

if TYPE_CHECKING:
    import optuna

    from edgesearch.searcher.run.trial import TrialOutcome
    from edgesearch.searcher.storage._optuna.handles import ArtifactStore
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.trainer.callbacks import Callback
    from edgesearch.trainer.records import EpochRecord


class StandInTrial:
    """A ``TrialRunner`` that trains nothing and reports through the trial as ``run_trial`` does.

    It samples the study's space into a TrainConfig, sets the ``config`` and ``run_dir`` user
    attributes, then per epoch sleeps ``epoch_seconds``, gives the worker's callbacks their batch
    hook (so a stop request ends the trial) and passes a record to the objective's own
    PruningCallback (``report``, ``history``, ``should_prune``). A pruned trial returns PRUNED.
    Every trial reports the same curve, so the median pruner reads the study at every epoch but
    never prunes: all trials are equally long, and throughputs compare across worker counts.
    With ``phases`` it appends each trial's seconds in sampling, epochs and attributes there.
    """

    def __init__(self, *, epochs: int, epoch_seconds: float, phases: list[dict[str, float]] | None = None) -> None:
        self.epochs = epochs
        self.epoch_seconds = epoch_seconds
        self.phases = phases

    def __call__(
        self,
        trial: optuna.Trial,
        config: StudyConfig,
        *,
        runs_dir: Path,
        artifact_store: ArtifactStore | None,
        callbacks: Sequence[Callback],
    ) -> TrialOutcome:
        import optuna
        import torch
        from optuna.trial import TrialState

        from edgesearch.searcher.run.trial import PruningCallback, TrialInterrupted, TrialOutcome
        from edgesearch.searcher.study.space import sample

        started = time.perf_counter()
        train_config = sample(trial, config.space, config.base_config)
        sampled = time.perf_counter()
        run_dir = runs_dir / config.name / f"trial-{trial.number:05d}"
        trial.set_user_attr("config", train_config.model_dump(mode="json"))
        trial.set_user_attr("run_dir", str(run_dir))
        attrs = time.perf_counter() - sampled
        metric = config.objectives[0]  # the stand-in study has one
        pruning = PruningCallback(trial, metric=metric)
        loss = torch.zeros(())  # what the trainer hands the batch hook; nothing here reads it
        epochs_started = time.perf_counter()
        try:
            for epoch in range(1, self.epochs + 1):
                if self.epoch_seconds:
                    time.sleep(self.epoch_seconds)
                for callback in callbacks:
                    callback.on_batch_end(epoch=epoch - 1, step=epoch, loss=loss)
                record = _record(epoch)
                for callback in [*callbacks, pruning]:
                    callback.on_epoch_end(record)
        except optuna.TrialPruned as exc:
            outcome = TrialOutcome(trial.number, TrialState.PRUNED, None, len(pruning.history), str(exc))
        except TrialInterrupted as exc:
            # Handed back by the worker; nothing more to record, as in run_trial.
            return TrialOutcome(trial.number, TrialState.FAIL, None, len(pruning.history), str(exc), interrupted=True)
        else:
            value = max(float(row[metric]) for row in pruning.history)
            outcome = TrialOutcome(trial.number, TrialState.COMPLETE, value, len(pruning.history))
        epochs_done = time.perf_counter()
        pruning.store_history()
        if outcome.state == TrialState.COMPLETE:
            trial.set_user_attr("best_checkpoint", str(run_dir / "best.pt"))
        finished = time.perf_counter()
        if self.phases is not None:
            slept = len(pruning.history) * self.epoch_seconds
            self.phases.append(
                {
                    "sample": sampled - started,
                    "epochs": epochs_done - epochs_started - slept,
                    "user_attrs": attrs + finished - epochs_done,
                    "runner": finished - started - slept,
                }
            )
        return outcome


def _record(epoch: int) -> EpochRecord:
    """One epoch's record as the trainer hands it to callbacks; PruningCallback keeps its summary fields."""
    from edgesearch.trainer.records import EpochRecord

    return EpochRecord(
        epoch=epoch,
        stage=2,
        train_loss=1.0 / epoch,
        val_loss=1.0 / epoch,
        val_iou=0.5 + 0.01 * epoch,
        val_boundary_iou=0.3 + 0.01 * epoch,
        val_edge_corr=0.2,
        lrs={"head": 1e-3, "backbone": 1e-4},
        lr_cut=False,
        seconds=0.0,
    )


@dataclass(frozen=True)
class WorkerJob:
    """What each stand-in worker process runs: which study, where, and its trials' length."""

    name: str
    url: str
    runs_dir: Path
    epochs: int
    epoch_seconds: float
    poll_seconds: float
    """Once the last trials are taken elsewhere, a worker looks again this often, then stops."""
    start_delay: float
    """Worker ``i`` starts ``i`` times this after the release, as a scheduler starts an array's tasks."""


def stand_in_worker(job: WorkerJob, index: int, start: Any, results: Any) -> None:
    """One worker process: wait on the ``start`` barrier, run ``run_worker``, put what happened on ``results``.

    It is forked from a parent that has imported everything already: what is timed is the worker's own
    life from the release on (loading the study included), never Python's start-up. The result: ``index``,
    ``ok``, ``trials``, ``cpu_seconds`` (``startup_cpu_seconds`` and ``tail_cpu_seconds`` of it paid once,
    not per trial), the :func:`~devtools.sql_traffic.count_traffic` counters, or ``error`` and
    ``traceback``. Exits 1 unless ``ok``. Bind ``job`` (``functools.partial``) to make a
    :data:`devtools.forked.Target`.
    """
    from edgesearch.searcher.run.worker import run_worker

    result: dict[str, Any] = {"index": index, "ok": False}
    try:
        traffic = count_traffic()
        start.wait(timeout=300)
        time.sleep(job.start_delay * index)
        cpu = time.process_time()
        try:
            first: list[float] = []
            last: list[float] = []

            def started(trial: Any) -> None:
                if not first:
                    first.append(time.process_time())

            def ended(outcome: Any) -> None:
                last[:] = [time.process_time()]

            summary = run_worker(
                job.name,
                job.url,
                runs_dir=job.runs_dir,
                poll_seconds=job.poll_seconds,
                trial_runner=StandInTrial(epochs=job.epochs, epoch_seconds=job.epoch_seconds),
                on_trial_start=started,
                on_trial_end=ended,
            )
            # Paid once per worker, not per trial: its start-up (loading the study and taking its
            # first trial, behind everyone released at the same instant), and its wait at the end
            # for the trials still running elsewhere (in case one fails and is retried).
            now = time.process_time()
            result["startup_cpu_seconds"] = (first[0] if first else now) - cpu
            result["tail_cpu_seconds"] = now - (last[0] if last else now)
            result.update(
                ok=not summary.failed,
                trials=len(summary.outcomes),
                stopped_because=summary.stopped_because,
            )
        finally:
            result["cpu_seconds"] = time.process_time() - cpu
            result.update(traffic)
    except BaseException as exc:  # reported to the parent, which decides
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    results.put(result)
    if not result["ok"]:
        sys.exit(1)


@dataclass(frozen=True)
class WorkerTotals:
    """The sums over :func:`stand_in_worker` results: CPU seconds, database traffic, and what went wrong."""

    workers: int
    """How many results there are (a process that died without a word left none)."""
    cpu_seconds: float
    startup_cpu_seconds: float
    tail_cpu_seconds: float
    round_trips: int
    connects: int
    connection_warnings: int
    errors: list[dict[str, Any]]
    """``index`` and ``error`` (or why it stopped) of each worker that did not end ``ok``."""

    @classmethod
    def of(cls, results: Sequence[dict[str, Any]]) -> WorkerTotals:
        ordered = sorted(results, key=lambda r: int(r["index"]))
        return cls(
            workers=len(ordered),
            cpu_seconds=sum(r.get("cpu_seconds", 0.0) for r in ordered),
            startup_cpu_seconds=sum(r.get("startup_cpu_seconds", 0.0) for r in ordered),
            tail_cpu_seconds=sum(r.get("tail_cpu_seconds", 0.0) for r in ordered),
            round_trips=sum(r.get("round_trips", 0) for r in ordered),
            connects=sum(r.get("connects", 0) for r in ordered),
            connection_warnings=sum(r.get("connection_warnings", 0) for r in ordered),
            errors=[
                {"index": r["index"], "error": r.get("error") or r.get("stopped_because")}
                for r in ordered
                if not r["ok"]
            ],
        )
