"""The search replayed on recorded curves, through edgesearch's own sampling, pruning and worker code.

A trial of a replayed study is answered from the table: its parameters are sampled as a real trial's are
(:func:`edgesearch.searcher.study.space.sample`, the trial's ``config`` stored as ``run_trial`` stores it), the
nearest recorded configuration is looked up, and one of its seeds' curves is played epoch by epoch through the
real :class:`~edgesearch.searcher.run.trial.PruningCallback` (so the real pruner decides, on the real storage).
Which seed's curve a trial gets is a function of the replay's seed and the trial number, so a trial is answered
the same way however it is run.

- :class:`ReplayRunner` is a :class:`~edgesearch.searcher.run.worker.TrialRunner`: the real worker loop
  (``run_worker``, a real SQLite study) runs replayed trials one after the other.
- :func:`simulate` runs the same trials on ``workers`` asynchronous simulated workers in simulated time (each
  epoch lasts its recorded seconds) on an in-memory storage: a free worker asks for a trial at once, the others
  keep running, the sampler sees them as running (and the pruner sees only complete trials), as with real
  workers. At one worker it must give ``run_worker``'s trials back exactly (:func:`same_trials`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from .table import Curve, Table

__all__ = ["Finished", "ReplayRunner", "ReplayedTrial", "Simulation", "simulate"]


@dataclass
class ReplayedTrial:
    """One trial being answered from the table, an epoch at a time."""

    trial: optuna.Trial
    config_id: str
    curve: Curve
    prune: bool
    epoch: int = 0
    callback: Any = None

    @classmethod
    def start(cls, trial: optuna.Trial, config: Any, table: Table, seed: int, *, prune: bool = True) -> ReplayedTrial:
        """Sample the trial's parameters as ``run_trial`` does and pick its curve."""
        from edgesearch.searcher.run.trial import PruningCallback
        from edgesearch.searcher.study.space import sample

        train_config = sample(trial, config.space, config.base_config)
        trial.set_user_attr("config", train_config.model_dump(mode="json"))
        config_id = table.nearest(trial.params)
        runs = table.curves[config_id]
        pick = int(np.random.default_rng([seed, trial.number]).integers(len(runs)))
        replayed = cls(trial, config_id, runs[pick], prune)
        replayed.callback = PruningCallback(trial, metric="val_iou", prune=prune)
        trial.set_user_attr("replayed", {"config": config_id, "seed": runs[pick].seed})
        return replayed

    @property
    def epochs(self) -> int:
        return len(self.curve.val_iou)

    def next_seconds(self) -> float:
        return self.curve.seconds[self.epoch]

    def step(self) -> TrialState | None:
        """Play the next epoch: PRUNED, COMPLETE after the last epoch, else None."""
        from edgesearch.trainer.records import EpochRecord

        k = self.epoch
        self.epoch += 1
        nan = math.nan
        record: EpochRecord = {
            "epoch": self.epoch,
            "stage": 0,
            "train_loss": nan,
            "val_loss": nan,
            "val_iou": self.curve.val_iou[k],
            "val_boundary_iou": self.curve.val_boundary_iou[k],
            "val_edge_corr": nan,
            "lrs": {},
            "lr_cut": False,
            "seconds": self.curve.seconds[k],
        }
        try:
            self.callback.on_epoch_end(record)
        except optuna.TrialPruned:
            return TrialState.PRUNED
        return TrialState.COMPLETE if self.epoch == self.epochs else None

    @property
    def value(self) -> float:
        """A complete trial's value, as ``run_trial`` tells it: the best val IoU of its epochs."""
        return max(self.curve.val_iou[: self.epoch])


class ReplayRunner:
    """A TrialRunner answering each trial from ``table`` (curve seeds drawn with ``seed``)."""

    def __init__(self, table: Table, seed: int) -> None:
        self.table = table
        self.seed = seed

    def __call__(
        self, trial: optuna.Trial, config: Any, *, runs_dir: Path, artifact_store: Any, callbacks: Sequence[Any]
    ) -> Any:
        from edgesearch.searcher.run.trial import TrialOutcome

        replayed = ReplayedTrial.start(trial, config, self.table, self.seed, prune=not config.multi_objective)
        while (state := replayed.step()) is None:
            pass
        replayed.callback.store_history()
        value = replayed.value if state == TrialState.COMPLETE else None
        return TrialOutcome(trial.number, state, value, replayed.epoch)


@dataclass(frozen=True)
class Finished:
    """A trial of a simulation as it ended, at simulated second ``end`` (of the whole study's clock)."""

    number: int
    config_id: str
    seed: int
    state: TrialState
    value: float | None
    epochs: int
    start: float
    end: float
    params: dict[str, Any]


@dataclass
class Simulation:
    """What a simulated study did: its trials in the order they ended, and its clock at the end."""

    workers: int
    finished: list[Finished] = field(default_factory=list)
    clock: float = 0.0


def simulate(
    table: Table,
    config: Any,
    study: optuna.Study,
    *,
    workers: int,
    seed: int,
    budget_seconds: float | None = None,
    n_trials: int | None = None,
    on_finish: Callable[[Finished, Simulation], bool] | None = None,
) -> Simulation:
    """Run ``study`` (its sampler and pruner as built for ``config``) on ``workers`` simulated workers.

    A worker takes a new trial as soon as its last one ends, until ``n_trials`` trials have been taken or the
    simulated clock passes ``budget_seconds``; trials running then are left unfinished (their epochs still count
    as spent: the clock is the study's). ``on_finish`` sees each ended trial and may stop the study early by
    returning True. Events at the same simulated second are handled in worker order, so a run is reproducible.
    """
    out = Simulation(workers)
    events: list[tuple[float, int, int]] = []  # (clock, worker, sequence)
    running: dict[int, tuple[ReplayedTrial, float]] = {}
    taken = 0

    def begin(worker: int, clock: float) -> None:
        nonlocal taken
        if (n_trials is not None and taken >= n_trials) or (budget_seconds is not None and clock >= budget_seconds):
            return
        trial = study.ask()
        taken += 1
        replayed = ReplayedTrial.start(trial, config, table, seed, prune=not config.multi_objective)
        running[worker] = (replayed, clock)
        heapq.heappush(events, (clock + replayed.next_seconds(), worker, taken))

    for worker in range(workers):
        begin(worker, 0.0)
    while events:
        clock, worker, _ = heapq.heappop(events)
        if budget_seconds is not None and clock > budget_seconds:
            out.clock = budget_seconds
            break
        out.clock = clock
        replayed, started = running[worker]
        state = replayed.step()
        if state is None:
            heapq.heappush(events, (clock + replayed.next_seconds(), worker, taken))
            continue
        replayed.callback.store_history()
        value = replayed.value if state == TrialState.COMPLETE else None
        if value is None:
            study.tell(replayed.trial, state=state)
        else:
            study.tell(replayed.trial, value)
        del running[worker]
        done = Finished(
            replayed.trial.number,
            replayed.config_id,
            replayed.curve.seed,
            state,
            value,
            replayed.epoch,
            started,
            clock,
            dict(replayed.trial.params),
        )
        out.finished.append(done)
        if on_finish is not None and on_finish(done, out):
            break
        begin(worker, clock)
    return out
