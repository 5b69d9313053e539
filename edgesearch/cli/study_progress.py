"""What a person watching a worker sees: a live study bar on a terminal, plain lines otherwise.

The bar counts the study's finished trials (COMPLETE + PRUNED, across all workers) against
``n_trials`` and shows complete / pruned / failed / running and the best value so far (for a
study of two objectives, how many trials its Pareto front holds), then the ETA of the trial in hand
(epochs left x its mean seconds per epoch) and of the study (:mod:`~edgesearch.searcher.study.progress`),
counting down between updates. Lines about single trials and epochs print above it, each epoch's
with its seconds and the trial's ETA. When the output is not a terminal (a log file,
a pipe to a parent process) only the lines are written, so logs stay readable.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from edgesearch.cli.console import out
from edgesearch.formatting import format_duration
from edgesearch.trainer.callbacks import Callback, describe_data
from edgesearch.trainer.records import stored_record

if TYPE_CHECKING:
    from edgesearch.searcher.study.studies import TrialCounts
    from edgesearch.trainer.records import EpochRecord

__all__ = ["EpochLines", "StudyProgress", "describe_eta", "format_counts"]


def _best(counts: TrialCounts) -> str:
    """``best 0.9100``, ``best -`` before the first complete trial, ``front 3`` for a study of two objectives."""
    if counts.front is not None:
        return f"front {counts.front}"
    return f"best {counts.best:.4f}" if counts.best is not None else "best -"


def format_counts(counts: TrialCounts, n_trials: int) -> str:
    """``4/6 finished (3 complete, 1 pruned), 0 failed, 2 running; best 0.9100`` (``front 3``: the Pareto
    front of a study of two objectives holds 3 trials)."""
    return (
        f"{counts.finished}/{n_trials} finished ({counts.complete} complete, {counts.pruned} pruned), "
        f"{counts.fail} failed, {counts.running} running; {_best(counts)}"
    )


def describe_eta(counts: TrialCounts, n_trials: int) -> str:
    """``ETA 12m 30s``, or why there is none: the study is full, no trial finished yet, no worker runs one."""
    if counts.finished >= n_trials:
        return "ETA -: the study is full"
    if counts.eta_s is not None:
        return f"ETA {format_duration(counts.eta_s)}"
    if not counts.finished:
        return "ETA -: no trial has finished yet to time the others by"
    return "ETA -: no worker is running a trial"


def _countdown(label: str, deadline: float | None) -> str:
    return f"{label} ETA {format_duration(deadline - time.monotonic())}" if deadline is not None else f"{label} ETA -"


class _EtaColumn(ProgressColumn):
    """``trial ETA 1m 20s  study ETA 2h 03m``, counted down from the deadlines the task holds."""

    def render(self, task: Task) -> Text:
        parts = [] if task.fields.get("trial_at") is None else [_countdown("trial", task.fields["trial_at"])]
        return Text(" " + "  ".join([*parts, _countdown("study", task.fields.get("study_at"))]))


class StudyProgress:
    """A context manager: ``refresh(counts)`` moves the bar, ``trial_eta(seconds)`` sets the running
    trial's ETA, ``log(line)`` prints above it."""

    def __init__(self, name: str, n_trials: int, *, console: Console = out, live: bool | None = None) -> None:
        self.name = name
        self.n_trials = n_trials
        self.console = console
        self.live = console.is_terminal if live is None else live
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> StudyProgress:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                _EtaColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._task = self._progress.add_task(
                self.name, total=self.n_trials, detail="", trial_at=None, study_at=None
            )
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def refresh(self, counts: TrialCounts) -> None:
        if self._progress is None or self._task is None:
            return
        detail = (
            f"complete {counts.complete}  pruned {counts.pruned}  "
            f"failed {counts.fail}  running {counts.running}  {_best(counts)}"
        )
        study_at = None if counts.eta_s is None else time.monotonic() + counts.eta_s
        self._progress.update(self._task, completed=counts.finished, detail=detail, study_at=study_at)

    def trial_eta(self, seconds: float | None) -> None:
        """The trial in hand needs ``seconds`` more; None: no trial in hand (or not known yet)."""
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, trial_at=None if seconds is None else time.monotonic() + seconds)

    def log(self, line: str) -> None:
        self.console.print(line, markup=False)


class EpochLines(Callback):
    """A trainer callback printing one line per epoch of the trial in hand (``label``: ``trial 3``,
    or ``confirmation 2`` for a confirmation job) and moving the bar's trial ETA.

    ``read_counts``: re-read the study's counts after each epoch, for a live bar only (a log has no
    bar to move, and a storage read per epoch of every worker would be for nothing)."""

    def __init__(
        self, progress: StudyProgress, metric: str, *, read_counts: Callable[[], TrialCounts] | None = None
    ) -> None:
        self.progress = progress
        self.metric = metric
        self.read_counts = read_counts
        self.label = "trial"
        self.epochs = 0
        self.seconds: list[float] = []

    def on_data(self, *, train: int, val: int, source: str) -> None:
        self.progress.log(f"{self.label} {describe_data(train=train, val=val, source=source)}")

    def on_train_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int) -> None:
        self.epochs = epochs
        self.seconds = []

    def on_epoch_end(self, record: EpochRecord) -> None:
        value = stored_record(record)[self.metric]
        self.seconds.append(record["seconds"])
        # The mean of this trial's epochs so far: its first epoch alone may be slower or faster.
        eta = max(self.epochs - record["epoch"], 0) * statistics.fmean(self.seconds)
        left = f", ETA {format_duration(eta)}" if record["epoch"] < self.epochs else ""
        self.progress.log(
            f"{self.label} epoch {record['epoch']}/{self.epochs}: {self.metric} {value:.4f}, "
            f"boundary IoU {record['val_boundary_iou']:.4f}, loss {record['train_loss']:.4f}, "
            f"{record['seconds']:.1f} s/epoch{left}"
        )
        self.progress.trial_eta(eta)
        if self.read_counts is not None and self.progress.live:
            self.progress.refresh(self.read_counts())
