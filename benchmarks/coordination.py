"""The cost of sharing one study between many workers, in what does not depend on this machine's cores.

1. ``overhead``: what one worker's storage path costs a trial: admission (stale-trial check,
   lock, trial count) and ``ask``, sampling the quickstart study's space, 30 epochs of
   ``report`` + ``should_prune`` through the objective's PruningCallback, the user attributes the
   objective sets (the history once, at the end), and ``tell``. Measured through ``run_worker``
   itself, with a stand-in trial runner that trains nothing, on SQLite (a file) and PostgreSQL.
   Target: under 0.5 % of a 1-minute trial of 30 epochs.
2. ``scale``: 1, 16, 64 and 128 worker processes on one PostgreSQL server with
   ``max_connections = 50``, all through one PgBouncer started with ``edgesearch pooler``
   (transaction pooling, 16 server connections). Each process runs ``run_worker`` on a study whose
   15-s trials only sleep; they are forked once everything is imported and start 0.3 s apart, as
   a scheduler starts an array (so that this machine's two cores are not what is measured). Per
   finished trial: the CPU the workers spent on their trials (their start-up and their wait for
   the last trials elsewhere are reported per worker, paid once), the CPU the database server's
   processes spent (all of it), the pooler's, and the round trips the workers sent (statements and
   transaction commands, counted by SQLAlchemy's events); the most server connections seen; trials
   per minute; and from the storage afterwards: exactly ``n_trials`` finished, none left behind,
   none run twice, no connection error logged, every process exited 0. Then 128 workers released
   at one instant on 1-s trials, in lockstep: the admission lock's worst case. Targets: worker +
   database CPU <= 100 ms per trial and flat from 16 to 128 workers; <= 20 PostgreSQL connections
   at 128 workers.

The ``overhead`` part uses ``--postgres URL``, else ``$EDGESEARCH_BENCH_POSTGRES_URL``, else
``$EDGESEARCH_TEST_POSTGRES_URL``, else a throwaway server started (and stopped) with
``.ci/start-postgres.sh``. The ``scale`` part always starts its own throwaway server (with
``max_connections = 50``, and on this machine, so that its processes' CPU can be read) and needs
``pgbouncer`` on PATH. Each run works in a database of its own, dropped at the end.

Usage: ``python benchmarks/coordination.py [--tiny] [--json FILE] [--postgres URL]``
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import itertools
import multiprocessing
import os
import queue
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

if TYPE_CHECKING:
    import optuna
    import psycopg

    from edgesearch.searcher.run.trial import TrialOutcome
    from edgesearch.searcher.storage._optuna.handles import ArtifactStore
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.trainer.callbacks import Callback

QUICKSTART = _common.ROOT / "studies" / "quickstart.yaml"
START_POSTGRES = _common.ROOT / ".ci" / "start-postgres.sh"
POSTGRES_ENV = ("EDGESEARCH_BENCH_POSTGRES_URL", "EDGESEARCH_TEST_POSTGRES_URL")
TARGET_OVERHEAD_FRACTION = 0.005
TARGET_CPU_MS_PER_TRIAL = 100.0
TARGET_FLAT = 1.25
"""Flat: worker + database CPU per trial at the most workers at most this many times that at 16."""
TARGET_SERVER_CONNECTIONS = 20
SCALE_MAX_CONNECTIONS = 50


@dataclass(frozen=True)
class Sizes:
    overhead_trials: int
    overhead_epochs: int
    counts: tuple[int, ...]
    trials_per_worker: int
    min_trials: int
    epochs: int
    epoch_seconds: float
    pool_size: int
    round_timeout_s: float
    ramp_seconds_per_worker: float
    """Worker ``i`` starts ``i`` times this after the first, as a scheduler starts an array's tasks
    over some seconds: so that 128 start-ups at one instant do not oversubscribe this machine's
    two cores and inflate the CPU time of everything running meanwhile (0: all at once)."""
    burst_workers: int
    """Then, this many workers released at one instant on 0.2-s epochs, in lockstep: the admission
    lock's worst case (0: no such round)."""


FULL = Sizes(
    overhead_trials=30,
    overhead_epochs=30,
    counts=(1, 16, 64, 128),
    trials_per_worker=3,
    min_trials=3,
    epochs=5,
    # 15-s trials: 128 workers then need about one of this machine's two cores for coordination, so
    # the CPU figures are the work itself rather than the waiting of an oversubscribed machine.
    epoch_seconds=3.0,
    pool_size=16,
    round_timeout_s=600.0,
    ramp_seconds_per_worker=0.3,
    burst_workers=128,
)
TINY = Sizes(
    overhead_trials=3,
    overhead_epochs=10,
    counts=(1, 16),
    trials_per_worker=1,
    min_trials=4,
    epochs=2,
    epoch_seconds=0.05,
    pool_size=4,
    round_timeout_s=120.0,
    ramp_seconds_per_worker=0.0,
    burst_workers=0,
)


# ---------------------------------------------------------------------------------------------
# The stand-in trial: everything run_trial does towards the storage, with a sleep for training.


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
        pruning = PruningCallback(trial, metric=config.metric)
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
            value = max(row[config.metric] for row in pruning.history)
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


def _record(epoch: int) -> dict[str, Any]:
    """One epoch's record as the trainer hands it to callbacks (the fields PruningCallback keeps)."""
    return {
        "epoch": epoch,
        "stage": 2,
        "train_loss": 1.0 / epoch,
        "val_iou": 0.5 + 0.01 * epoch,
        "val_boundary_iou": 0.3 + 0.01 * epoch,
        "val_edge_corr": 0.2,
    }


def _study_config(name: str, *, n_trials: int, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """The quickstart study (its trainer and space) under another name and size."""
    from edgesearch.searcher.study.config import StudyConfig

    raw = {**StudyConfig.from_yaml(QUICKSTART).to_dict(), "name": name, "n_trials": n_trials, **(overrides or {})}
    return StudyConfig.from_dict(raw, source=f"{QUICKSTART} as {name}")


# ---------------------------------------------------------------------------------------------
# 1. Storage overhead per trial, through one in-process worker.


def overhead(url: str, *, label: str, sizes: Sizes, folder: Path) -> dict[str, Any]:
    """Median wall time per trial of the worker loop around a runner that only touches the storage."""
    from edgesearch.searcher.run.worker import run_worker
    from edgesearch.searcher.study.studies import create_study

    # The first trial also pays for loading the study and the first connections: one extra trial
    # is run and the times between consecutive trial ends are the per-trial samples.
    config = _study_config(f"overhead-{label}", n_trials=sizes.overhead_trials + 1)
    create_study(config, url)
    phases: list[dict[str, float]] = []
    ends: list[float] = []
    runner = StandInTrial(epochs=sizes.overhead_epochs, epoch_seconds=0.0, phases=phases)
    summary = run_worker(
        config.name,
        url,
        runs_dir=folder / "runs",
        trial_runner=runner,
        on_trial_end=lambda outcome: ends.append(time.perf_counter()),
    )
    per_trial = [b - a for a, b in itertools.pairwise(ends)]
    later = phases[1:]
    loop = [total - phase["runner"] for total, phase in zip(per_trial, later, strict=True)]
    median_s = _common.median(per_trial)
    fraction = median_s / 60.0
    states = Counter(outcome.state.name for outcome in summary.outcomes)
    _common.log(
        f"overhead {label}: {median_s * 1e3:.1f} ms per trial (median of {len(per_trial)}), states {dict(states)}"
    )
    return {
        "trials": len(per_trial),
        "epochs_per_trial": sizes.overhead_epochs,
        "median_seconds": median_s,
        "median_ms_per_trial": median_s * 1e3,
        "min_ms_per_trial": min(per_trial) * 1e3,
        "max_ms_per_trial": max(per_trial) * 1e3,
        "median_ms_by_phase": {
            "admission_ask_tell_heartbeat": _common.median(loop) * 1e3,
            "sample": _common.median([p["sample"] for p in later]) * 1e3,
            "epochs_report_prune_history": _common.median([p["epochs"] for p in later]) * 1e3,
            "user_attrs": _common.median([p["user_attrs"] for p in later]) * 1e3,
        },
        "trial_states": dict(states),
        "overhead_fraction_of_1min_trial": fraction,
        "target": f"< {TARGET_OVERHEAD_FRACTION}",
        "met": fraction < TARGET_OVERHEAD_FRACTION,
    }


# ---------------------------------------------------------------------------------------------
# 2. Scale: worker processes through the pooler; what each trial costs the workers and the server.


def _count_traffic() -> dict[str, int]:
    """Counters of what this process sends to databases, kept up to date by SQLAlchemy's events.

    ``round_trips``: statements (SAVEPOINTs too), and the BEGINs, COMMITs and ROLLBACKs of connections
    not in autocommit (each one exchange with the server);
    ``connects``: new connections; ``connection_warnings``: storage calls that failed for want of a
    connection and were retried (the reconnecting storage logs each), and failed heartbeats.
    """
    import logging

    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    counts = {"round_trips": 0, "connects": 0, "connection_warnings": 0}

    def trip(*args: Any, **kwargs: Any) -> None:
        counts["round_trips"] += 1

    def transaction_trip(conn: Any, *args: Any, **kwargs: Any) -> None:
        # On a connection in autocommit a BEGIN, COMMIT or ROLLBACK of SQLAlchemy's sends nothing.
        if not getattr(conn.connection.dbapi_connection, "autocommit", False):
            counts["round_trips"] += 1

    def connect(*args: Any, **kwargs: Any) -> None:
        counts["connects"] += 1

    event.listen(Engine, "before_cursor_execute", trip)
    for name in ("begin", "commit", "rollback"):
        event.listen(Engine, name, transaction_trip)
    event.listen(Pool, "connect", connect)

    class Warnings(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            counts["connection_warnings"] += 1

    handler = Warnings(level=logging.WARNING)
    for logger in ("edgesearch.searcher.storage.reconnecting", "edgesearch.searcher.storage._optuna.handles"):
        logging.getLogger(logger).addHandler(handler)
    return counts


def _worker_process(index: int, job: dict[str, Any], start: Any, results: Any) -> None:
    """One worker process: wait for the start signal, run ``run_worker``, put what happened on ``results``.

    It is forked from the benchmark, which has imported everything already: what is timed is the
    worker's own life from the start signal on (loading the study included), never Python's start-up.
    """
    from edgesearch.searcher.run.worker import run_worker

    result: dict[str, Any] = {"index": index, "ok": False}
    try:
        traffic = _count_traffic()
        start.wait(timeout=300)
        time.sleep(job["start_delay"] * index)
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
                job["name"],
                job["url"],
                runs_dir=Path(job["runs_dir"]),
                poll_seconds=job["poll_seconds"],
                trial_runner=StandInTrial(epochs=job["epochs"], epoch_seconds=job["epoch_seconds"]),
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
    except BaseException as exc:  # reported to the benchmark, which decides
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    results.put(result)
    if not result["ok"]:
        sys.exit(1)


def _cores() -> int:
    """The CPUs that /proc/stat's first line adds up: all of the machine's."""
    return os.cpu_count() or 1


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat; None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


POSTGRES_HOUSEKEEPING = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
)
"""PostgreSQL's own long-lived helpers: they wake on timers whether or not anyone asks anything, so
their CPU grows with a round's length rather than with its trials (autovacuum *workers*, started
because trials were written, are counted)."""


def _is_housekeeping(pid: int) -> bool:
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return any(title.startswith(f"postgres: {name}") for name in POSTGRES_HOUSEKEEPING)


def process_tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its children: its own, its living children's, and its reaped children's.

    A PostgreSQL server is a postmaster with one child process per connection: a child that exits
    is reaped by the postmaster and its CPU joins the postmaster's ``cutime``, so differences of
    this sum over an interval are the CPU the server spent in it, whichever connections came and went.
    The server's timer-driven helpers (:data:`POSTGRES_HOUSEKEEPING`) are left out.
    """
    tick = os.sysconf("SC_CLK_TCK")
    own = _stat(root)
    if own is None:
        return 0.0
    total = sum(int(own[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(root):
            fields = _stat(int(entry.name))
            if fields is not None and fields[1] == str(root) and not _is_housekeeping(int(entry.name)):
                total += int(fields[11]) + int(fields[12])
    return total / tick


def run_processes(
    count: int, job: dict[str, Any], *, timeout: float, watch: Callable[[], None]
) -> tuple[float, list[dict[str, Any]], list[int | None], float | None]:
    """Fork ``count`` worker processes, release them together, wait for them all.

    Returns the go time (wall clock, comparable with the storage's trial timestamps), each
    process's result, each exit code, and the machine's busy CPU fraction while they ran.
    Forked processes inherit the benchmark's imports; the benchmark holds no open database
    connection when it forks (its storages are disposed), so none is shared with a child.
    """
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(count + 1)
    results: Any = ctx.Queue()
    procs = [ctx.Process(target=_worker_process, args=(i, job, start, results)) for i in range(count)]
    gc.collect()  # nothing of ours left for a child's collector to finalize
    for proc in procs:
        proc.start()
    collected: list[dict[str, Any]] = []
    done = False
    try:
        start.wait(timeout=300)
        go = time.time()
        ticks = _cpu_ticks()
        deadline = time.monotonic() + timeout
        while len(collected) < count:
            try:
                collected.append(results.get(timeout=0.5))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{count - len(collected)} of {count} workers still running after {timeout:.0f} s"
                    ) from None
                if not any(proc.is_alive() for proc in procs):
                    break  # died without a word: their exit codes say so
            watch()
        after = _cpu_ticks()
        done = True
    finally:
        for proc in procs:
            if not done:  # a round that went wrong is not waited for
                proc.kill()
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    busy = None
    if ticks is not None and after is not None and after[1] > ticks[1]:
        busy = (after[0] - ticks[0]) / (after[1] - ticks[1])
    return go, sorted(collected, key=lambda r: r["index"]), [proc.exitcode for proc in procs], busy


@dataclass(frozen=True)
class Cluster:
    """What a scale round runs against: the pooler's URL, a direct admin, and the processes to meter."""

    pooled_url: str
    admin: PgAdmin
    postmaster: int
    pooler: int


def scale_round(
    count: int, *, cluster: Cluster, sizes: Sizes, folder: Path, epoch_seconds: float, ramp: float, name: str
) -> dict[str, Any]:
    """One count: a fresh study of ``max(trials_per_worker * count, min_trials)`` trials, ``count``
    processes started ``ramp`` seconds apart."""
    import optuna
    from optuna.trial import TrialState

    from edgesearch.searcher.storage.opening import open_storage
    from edgesearch.searcher.study.studies import FINISHED, create_study

    n_trials = max(sizes.trials_per_worker * count, sizes.min_trials)
    url = cluster.pooled_url
    config = _study_config(
        name,
        n_trials=n_trials,
        overrides={
            "sampler": {"kind": "random", "seed": 0},
            "pruner": {"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
            "enqueue": [],
        },
    )
    study, _ = create_study(config, url)
    _dispose(study)
    job = {
        "name": config.name,
        "url": url,
        "runs_dir": str(folder / "runs"),
        "epochs": sizes.epochs,
        "epoch_seconds": epoch_seconds,
        # Once the last trials are taken elsewhere, a worker looks again this often, then stops.
        "poll_seconds": 0.5,
        "start_delay": ramp,
    }
    peak = [0]
    last_look = [0.0]

    def watch() -> None:  # one cheap query every half second, from outside the workers
        if time.monotonic() - last_look[0] >= 0.5:
            last_look[0] = time.monotonic()
            peak[0] = max(peak[0], cluster.admin.connections())

    server_cpu, pooler_cpu = process_tree_cpu(cluster.postmaster), process_tree_cpu(cluster.pooler)
    watching = cluster.admin.backend_cpu()
    go, results, codes, busy = run_processes(count, job, timeout=sizes.round_timeout_s, watch=watch)
    watching = cluster.admin.backend_cpu() - watching  # the connection count read every 0.5 s
    server_cpu = process_tree_cpu(cluster.postmaster) - server_cpu - watching
    pooler_cpu = process_tree_cpu(cluster.pooler) - pooler_cpu
    go_wall = datetime.datetime.fromtimestamp(go)  # naive local time, as Optuna stamps trials

    study = optuna.load_study(study_name=config.name, storage=open_storage(url, create=False))
    trials = study.get_trials(deepcopy=False)
    _dispose(study)
    states = Counter(t.state.name for t in trials)
    finished = [t for t in trials if t.state in FINISHED]
    left = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    numbers = [t.number for t in trials]
    run_dirs = [t.user_attrs.get("run_dir") for t in finished]
    duplicated = (len(numbers) - len(set(numbers))) + (len(run_dirs) - len(set(run_dirs)))
    ends = [t.datetime_complete for t in finished if t.datetime_complete is not None]
    span = (max(ends) - go_wall).total_seconds() if ends else None
    per_minute = len(finished) / span * 60.0 if span else 0.0
    n = len(finished) or 1
    worker_cpu = sum(r.get("cpu_seconds", 0.0) for r in results)
    startup_cpu = sum(r.get("startup_cpu_seconds", 0.0) for r in results)
    tail_cpu = sum(r.get("tail_cpu_seconds", 0.0) for r in results)
    trials_cpu = worker_cpu - startup_cpu - tail_cpu
    workers = max(len(results), 1)
    out: dict[str, Any] = {
        "workers": count,
        "n_trials": n_trials,
        "finished": len(finished),
        "states": dict(states),
        "lost": max(0, n_trials - len(finished)) + len(left),
        "duplicated": duplicated + max(0, len(finished) - n_trials),
        "connection_errors": sum(r.get("connection_warnings", 0) for r in results),
        "exit_codes": dict(Counter(str(code) for code in codes)),
        "all_exited_0": all(code == 0 for code in codes),
        "seconds_go_to_last_trial_end": span,
        "trials_per_minute": per_minute,
        "ideal_trials_per_minute": count * 60.0 / (sizes.epochs * epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "start_ramp_seconds": ramp * (count - 1),
        # From each worker's first trial's start to its last trial's end, over the trials:
        "worker_cpu_ms_per_trial": 1e3 * trials_cpu / n,
        # Paid once per worker:
        "worker_startup_cpu_ms_per_worker": 1e3 * startup_cpu / workers,
        "worker_tail_cpu_ms_per_worker": 1e3 * tail_cpu / workers,
        # A worker's whole life over its trials (with 3 trials each, start-up and tail weigh 1/3):
        "worker_lifetime_cpu_ms_per_trial": 1e3 * worker_cpu / n,
        # All of it, start-ups and tails included (not split: the server serves them all at once):
        "server_cpu_ms_per_trial": 1e3 * server_cpu / n,
        "pooler_cpu_ms_per_trial": 1e3 * pooler_cpu / n,
        "coordination_cpu_ms_per_trial": 1e3 * trials_cpu / n + 1e3 * server_cpu / n,
        "coordination_lifetime_cpu_ms_per_trial": 1e3 * (worker_cpu + server_cpu) / n,
        "round_trips_per_trial": sum(r.get("round_trips", 0) for r in results) / n,
        "connects_per_trial": sum(r.get("connects", 0) for r in results) / n,
        "peak_server_connections": peak[0],
        "machine_cpu_busy": busy,
    }
    errors = [
        {"index": r["index"], "error": r.get("error") or r.get("stopped_because")} for r in results if not r["ok"]
    ]
    if errors or len(results) < count:
        out["process_errors"] = errors or [f"{count - len(results)} processes died without a result"]
    _common.log(
        f"scale x{count}: {len(finished)}/{n_trials} finished in {span or 0:.1f} s ({per_minute:.0f}/min), "
        f"CPU per trial: workers {out['worker_cpu_ms_per_trial']:.0f} ms "
        f"(per worker once: start-up {out['worker_startup_cpu_ms_per_worker']:.0f} ms, "
        f"tail {out['worker_tail_cpu_ms_per_worker']:.0f} ms; lifetime per trial "
        f"{out['worker_lifetime_cpu_ms_per_trial']:.0f} ms), "
        f"server {out['server_cpu_ms_per_trial']:.0f} ms, pooler {out['pooler_cpu_ms_per_trial']:.0f} ms; "
        f"{out['round_trips_per_trial']:.0f} round trips per trial; "
        f"peak {peak[0]} server connections; machine {100 * (busy or 0):.0f}% busy; "
        f"lost {out['lost']}, duplicated {out['duplicated']}, "
        f"connection errors {out['connection_errors']}, exit codes {out['exit_codes']}"
    )
    return out


def scale(sizes: Sizes, folder: Path) -> dict[str, Any]:
    """Every count of ``sizes`` through one pooler, on one throwaway server with few connections."""
    with throwaway_postgres(max_connections=SCALE_MAX_CONNECTIONS) as (server, postmaster):
        if server is None:
            return {"skipped": postmaster}
        admin = PgAdmin(server)
        try:
            database = admin.create_database()
            with pooler(database, pool_size=sizes.pool_size, folder=folder) as (pooled_url, pooler_pid):
                cluster = Cluster(pooled_url, admin, int(postmaster), pooler_pid)
                counts = {
                    str(c): scale_round(
                        c,
                        cluster=cluster,
                        sizes=sizes,
                        folder=folder,
                        epoch_seconds=sizes.epoch_seconds,
                        ramp=sizes.ramp_seconds_per_worker,
                        name=f"scale-{c}",
                    )
                    for c in sizes.counts
                }
                burst = None
                if sizes.burst_workers:
                    burst = scale_round(
                        sizes.burst_workers,
                        cluster=cluster,
                        sizes=sizes,
                        folder=folder,
                        epoch_seconds=0.2,
                        ramp=0.0,
                        name=f"scale-{sizes.burst_workers}-at-once",
                    )
            max_connections = admin.setting("max_connections")
        finally:
            admin.drop_database()
            admin.close()
    cpu = {k: v["coordination_cpu_ms_per_trial"] for k, v in counts.items()}
    top = str(max(sizes.counts))
    flat = cpu[top] / cpu["16"] if cpu.get("16") else None
    connections = counts[top]["peak_server_connections"]
    clean = all(
        v["lost"] == 0 and v["duplicated"] == 0 and v["connection_errors"] == 0 and v["all_exited_0"]
        for v in [*counts.values(), *([burst] if burst else [])]
    )
    return {
        "max_connections": max_connections,
        "pool_size": sizes.pool_size,
        "counts": counts,
        "burst": burst,
        "coordination_cpu_ms_per_trial": cpu,
        "flat_top_vs_16": flat,
        "targets": {
            "cpu": (
                f"worker (its trials, start-up and tail apart) + server (all of it) <= "
                f"{TARGET_CPU_MS_PER_TRIAL:g} ms per trial at every count"
            ),
            "flat": f"at {top} workers <= {TARGET_FLAT:g}x of 16",
            "connections": f"<= {TARGET_SERVER_CONNECTIONS} server connections at {top} workers",
            "clean": "0 lost, 0 duplicated, 0 connection errors, every worker exit 0",
        },
        "met": {
            "cpu": all(v <= TARGET_CPU_MS_PER_TRIAL for v in cpu.values()),
            "flat": flat is not None and flat <= TARGET_FLAT,
            "connections": connections <= TARGET_SERVER_CONNECTIONS,
            "clean": clean,
        },
    }


def _dispose(study: optuna.Study) -> None:
    """Close the study's pooled connections now, so that no forked worker inherits one."""
    from edgesearch.searcher.storage._optuna.handles import rdb_storage

    storage = rdb_storage(study)
    if storage is not None:
        storage.engine.dispose()


# ---------------------------------------------------------------------------------------------
# PostgreSQL: find or start a server, and a database of our own on it.


class PgAdmin:
    """An autocommit connection to the server's maintenance database, for what workers never do."""

    def __init__(self, url: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        server = make_url(url)
        params: dict[str, Any] = {"host": server.host, "port": server.port, "user": server.username}
        params.update(password=server.password, dbname="postgres", connect_timeout=10)
        self.server = server
        self.connection: psycopg.Connection[Any] = psycopg.connect(
            autocommit=True, **{k: v for k, v in params.items() if v is not None}
        )
        self.database = f"es_bench_{uuid.uuid4().hex[:12]}"

    def create_database(self) -> str:
        from psycopg import sql

        self.connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        return self.server.set(database=self.database).render_as_string(hide_password=False)

    def drop_database(self) -> None:
        from psycopg import sql

        self.connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database))
        )

    def setting(self, name: str) -> int:
        row = self.connection.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()
        return int(row[0]) if row else 0

    def connections(self) -> int:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        row = self.connection.execute(query, (self.database,)).fetchone()
        return int(row[0]) if row else 0

    def free_connections(self) -> int:
        query = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        (used,) = self.connection.execute(query).fetchone() or (0,)
        return self.setting("max_connections") - self.setting("superuser_reserved_connections") - used

    def backend_cpu(self) -> float:
        """CPU seconds of this connection's own server process: the benchmark's looks, not the workers'."""
        fields = _stat(self.connection.info.backend_pid)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0

    def close(self) -> None:
        self.connection.close()


@contextlib.contextmanager
def postgres_server(explicit: str | None) -> Iterator[tuple[str | None, str]]:
    """(server URL or None, where it came from or why there is none); a server started here is stopped after."""
    for candidate, source in [(explicit, "--postgres"), *((os.environ.get(n), f"${n}") for n in POSTGRES_ENV)]:
        if candidate and candidate.strip():
            yield candidate.strip(), source
            return
    with throwaway_postgres() as (server, detail):
        yield server, f"a throwaway server started with {START_POSTGRES.name}" if server else detail


@contextlib.contextmanager
def throwaway_postgres(max_connections: int | None = None) -> Iterator[tuple[str | None, str]]:
    """(server URL, its postmaster's pid) of a server started with ``.ci/start-postgres.sh``, stopped after;
    (None, why) when it cannot start."""
    env = dict(os.environ)
    if max_connections is not None:
        env["EDGESEARCH_PG_MAX_CONNECTIONS"] = str(max_connections)
    env["EDGESEARCH_PG_PORT"] = env.get("EDGESEARCH_BENCH_PG_PORT", "56100")
    try:
        started = subprocess.run(
            [str(START_POSTGRES)], capture_output=True, text=True, timeout=120, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        yield None, f"{START_POSTGRES.name} could not run: {exc}"
        return
    if started.returncode != 0:
        reason = (started.stderr.strip().splitlines() or ["no output"])[-1]
        yield None, f"{START_POSTGRES.name} failed: {reason}"
        return
    exports = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in started.stdout.splitlines()
        if line.startswith("export ")
    )
    try:
        postmaster = (Path(exports["EDGESEARCH_TEST_PG_DATA"]) / "postmaster.pid").read_text().split()[0]
        yield exports["EDGESEARCH_TEST_POSTGRES_URL"], postmaster
    finally:
        subprocess.run([str(START_POSTGRES), "stop"], env={**env, **exports}, capture_output=True, check=False)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def pooler(url: str, *, pool_size: int, folder: Path) -> Iterator[tuple[str, int]]:
    """(URL for the workers, pid) of ``edgesearch pooler`` started in front of ``url``; stopped after."""
    import signal

    import psycopg
    from sqlalchemy.engine import make_url

    port = _free_port()
    log = (folder / "pooler.log").open("w")
    command = [
        str(Path(sys.executable).with_name("edgesearch")),
        "pooler",
        "--storage",
        url,
        "--port",
        str(port),
        "--pool-size",
        str(pool_size),
    ]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    pooled = make_url(url).set(host="127.0.0.1", port=port)
    plain = pooled.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(plain, connect_timeout=5).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError(
                        f"edgesearch pooler did not start: {(folder / 'pooler.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield pooled.render_as_string(hide_password=False), proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# ---------------------------------------------------------------------------------------------


def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--postgres", metavar="URL", default=None, help="PostgreSQL server for the overhead part")
    args = p.parse_args()

    import optuna

    from edgesearch.searcher.storage.urls import redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as the worker command does
    sizes = TINY if args.tiny else FULL
    began = time.monotonic()
    result: dict[str, Any] = {
        "sizes": {
            "overhead_trials": sizes.overhead_trials,
            "overhead_epochs_per_trial": sizes.overhead_epochs,
            "worker_counts": list(sizes.counts),
            "n_trials": f"max({sizes.trials_per_worker} x workers, {sizes.min_trials})",
            "trial": f"{sizes.epochs} epochs of {sizes.epoch_seconds} s sleep, reported through PruningCallback",
            "pooler": f"edgesearch pooler (PgBouncer, transaction pooling), {sizes.pool_size} server connections",
            "start_ramp": f"worker i starts {sizes.ramp_seconds_per_worker} s x i after the release",
            "at_once": f"{sizes.burst_workers} workers released at one instant, epochs of 0.2 s"
            if sizes.burst_workers
            else "none",
        },
        "study": {
            "space": "studies/quickstart.yaml's",
            "overhead": "studies/quickstart.yaml as written (TPE sampler, median pruner), heartbeat on (30 s)",
            "scale_sampler": "random, seed 0 (a stream per trial number)",
            "scale_pruner": "median (n_startup_trials 2, n_warmup_steps 0): every should_prune reads the "
            "study as in a real search, but every trial reports the same curve, never below the median, so no "
            "trial is cut short and the counts compare",
        },
        "processes": "for each count, that many processes forked from the benchmark after its imports, each "
        "running run_worker, released by a barrier (then each after its ramp delay); timed from the release to "
        "the last trial's end; worker CPU per trial from its first trial's start to its last trial's end, its "
        "start-up (loading the study, taking the first trial) and tail (waiting for the last trials elsewhere) "
        "per worker apart; server CPU all of it, over the trials",
    }
    with tempfile.TemporaryDirectory(prefix="edgesearch-bench-") as tmp, postgres_server(args.postgres) as found:
        folder = Path(tmp)
        server, source = found
        overheads: dict[str, Any] = {
            "sqlite": overhead(f"sqlite:///{folder}/overhead.db", label="sqlite", sizes=sizes, folder=folder)
        }
        if server is None:
            overheads["postgresql"] = {"skipped": source}
        else:
            admin = PgAdmin(server)
            try:
                url = admin.create_database()
                overheads["postgresql"] = overhead(url, label="postgresql", sizes=sizes, folder=folder)
                overheads["postgresql"].update(server=redact(server), source=source)
            finally:
                admin.drop_database()
                admin.close()
        result["overhead"] = overheads
    with tempfile.TemporaryDirectory(prefix="edgesearch-bench-") as tmp:
        result["scale"] = scale(sizes, Path(tmp))
        if "skipped" in result["scale"]:
            _common.log(f"scale skipped: {result['scale']['skipped']}")
    scaled = [*result["scale"].get("counts", {}).values(), *filter(None, [result["scale"].get("burst")])]
    result["lost"] = sum(v["lost"] for v in scaled)
    result["duplicated"] = sum(v["duplicated"] for v in scaled)
    result["connection_errors"] = sum(v["connection_errors"] for v in scaled)
    result["seconds"] = time.monotonic() - began
    _common.emit("coordination", args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
