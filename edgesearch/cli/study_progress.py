"""What a person watching a worker sees: a live study bar on a terminal, plain lines otherwise.

The bar counts the study's finished trials (COMPLETE + PRUNED, across all workers) against
``n_trials`` and shows complete / pruned / failed / running and the best value so far (for a
study of two objectives, how many trials its Pareto front holds). Lines about single trials and
epochs print above it. When the output is not a terminal (a log file,
a pipe to a parent process) only the lines are written, so logs stay readable.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from edgesearch.cli.console import out
from edgesearch.trainer.callbacks import Callback
from edgesearch.trainer.records import summary

if TYPE_CHECKING:
    from edgesearch.searcher.study import TrialCounts
    from edgesearch.trainer.records import EpochRecord

__all__ = ["EpochLines", "StudyProgress", "format_counts"]


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


class StudyProgress:
    """A context manager: ``refresh(counts)`` moves the bar, ``log(line)`` prints above it."""

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
                TimeElapsedColumn(),
                console=self.console,
            )
            self._task = self._progress.add_task(self.name, total=self.n_trials, detail="")
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
        self._progress.update(self._task, completed=counts.finished, detail=detail)

    def log(self, line: str) -> None:
        self.console.print(line, markup=False)


class EpochLines(Callback):
    """A trainer callback printing one line per epoch of the trial in hand (``label``: ``trial 3``,
    or ``confirmation 2`` for a confirmation job)."""

    def __init__(self, progress: StudyProgress, metric: str) -> None:
        self.progress = progress
        self.metric = metric
        self.label = "trial"
        self.epochs = 0

    def on_train_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, record: EpochRecord) -> None:
        value = summary(record)[self.metric]
        self.progress.log(
            f"{self.label} epoch {record['epoch']}/{self.epochs}: {self.metric} {value:.4f}, "
            f"boundary IoU {record['val_boundary_iou']:.4f}, loss {record['train_loss']:.4f}"
        )
