"""The cost of sharing one study between many workers: storage time per trial, and throughput.

1. ``overhead``: what one worker's storage path costs a trial: admission (stale-trial check,
   lock, trial count) and ``ask``, sampling the quickstart study's space, 30 epochs of
   ``report`` + ``should_prune`` through the objective's PruningCallback, the user attributes the
   objective sets, and ``tell``. Measured through ``run_worker`` itself, with a stand-in trial
   runner that trains nothing, on SQLite (a file) and PostgreSQL. Target: under 1 % of a
   1-minute trial.
2. ``throughput``: 1, 4, 16 and 32 worker processes (SQLite: 1, 4, 16), each running
   ``run_worker`` on one study whose trials only sleep, forked once everything is imported and
   released together. Trials per minute, and from the storage afterwards: exactly ``n_trials``
   finished, none left behind, none run twice, every process exited 0. Target on PostgreSQL:
   16 workers finish >= 12x the trials per minute of one. The machine's CPU use is reported with
   it: once every core is busy, the CPU each trial's storage calls cost is what limits.

PostgreSQL is ``--postgres URL``, else ``$EDGESEARCH_BENCH_POSTGRES_URL``, else
``$EDGESEARCH_TEST_POSTGRES_URL``, else a throwaway server started (and stopped) with
``.ci/start-postgres.sh``. Each run works in a database of its own, dropped at the end. Without a
server the PostgreSQL parts say ``{"skipped": reason}``.

Usage: ``python benchmarks/coordination.py [--tiny] [--json FILE] [--postgres URL] [--no-sqlite-throughput]``
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
import threading
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

    from edgesearch.searcher.config import StudyConfig
    from edgesearch.searcher.objective import TrialOutcome
    from edgesearch.searcher.optuna_internals import ArtifactStore
    from edgesearch.trainer.callbacks import Callback

QUICKSTART = _common.ROOT / "studies" / "quickstart.yaml"
START_POSTGRES = _common.ROOT / ".ci" / "start-postgres.sh"
POSTGRES_ENV = ("EDGESEARCH_BENCH_POSTGRES_URL", "EDGESEARCH_TEST_POSTGRES_URL")
TARGET_OVERHEAD_FRACTION = 0.01
TARGET_SPEEDUP_16 = 12.0


@dataclass(frozen=True)
class Sizes:
    overhead_trials: int
    overhead_epochs: int
    counts: tuple[int, ...]
    sqlite_counts: tuple[int, ...]
    trials_per_worker: int
    epochs: int
    epoch_seconds: float
    round_timeout_s: float

    @property
    def trial_seconds(self) -> float:
        return self.epochs * self.epoch_seconds


FULL = Sizes(
    overhead_trials=30,
    overhead_epochs=30,
    counts=(1, 4, 16, 32),
    # SQLite serves one machine only and has no target here; its 32 would add ~40 s to `make bench`.
    sqlite_counts=(1, 4, 16),
    trials_per_worker=8,
    epochs=5,
    epoch_seconds=0.2,
    round_timeout_s=240.0,
)
TINY = Sizes(
    overhead_trials=3,
    overhead_epochs=10,
    counts=(1, 2),
    sqlite_counts=(1, 2),
    trials_per_worker=3,
    epochs=2,
    epoch_seconds=0.05,
    round_timeout_s=30.0,
)

# What one worker process holds open on PostgreSQL at most at once: the trial loop's connection,
# the admission lock's session and the heartbeat thread's (load_study closes the one it reads the
# config through). A count whose processes would need more than the server has left is reported
# as impossible rather than started.
CONNECTIONS_PER_WORKER = 3


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

        from edgesearch.searcher.objective import PruningCallback, TrialInterrupted, TrialOutcome
        from edgesearch.searcher.space import sample

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
    from edgesearch.searcher.config import StudyConfig

    raw = {**StudyConfig.from_yaml(QUICKSTART).to_dict(), "name": name, "n_trials": n_trials, **(overrides or {})}
    return StudyConfig.from_dict(raw, source=f"{QUICKSTART} as {name}")


# ---------------------------------------------------------------------------------------------
# 1. Storage overhead per trial, through one in-process worker.


def overhead(url: str, *, label: str, sizes: Sizes, folder: Path) -> dict[str, Any]:
    """Median wall time per trial of the worker loop around a runner that only touches the storage."""
    from edgesearch.searcher.study import create_study
    from edgesearch.searcher.worker import run_worker

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
# 2. Throughput of worker processes, each running the worker loop, released together.


def _worker_process(index: int, job: dict[str, Any], start: Any, results: Any) -> None:
    """One worker process: wait for the start signal, run ``run_worker``, put what happened on ``results``.

    It is forked from the benchmark, which has imported everything already: what is timed is the
    worker's own life from the start signal on (loading the study included), never Python's start-up.
    """
    from edgesearch.searcher.worker import run_worker

    result: dict[str, Any] = {"index": index, "ok": False}
    try:
        start.wait(timeout=120)
        cpu = time.process_time()
        try:
            summary = run_worker(
                job["name"],
                job["url"],
                worker_index=index,
                runs_dir=Path(job["runs_dir"]),
                poll_seconds=job["poll_seconds"],
                trial_runner=StandInTrial(epochs=job["epochs"], epoch_seconds=job["epoch_seconds"]),
            )
            result.update(
                ok=not summary.failed,
                trials=len(summary.outcomes),
                stopped_because=summary.stopped_because,
            )
        finally:
            result["cpu_seconds"] = time.process_time() - cpu
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
        start.wait(timeout=120)
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


def throughput_round(
    url: str, *, backend: str, count: int, sizes: Sizes, folder: Path, admin: PgAdmin | None
) -> dict[str, Any]:
    """One count: a fresh study of ``trials_per_worker * count`` trials, run by ``count`` processes."""
    import optuna
    from optuna.trial import TrialState

    from edgesearch.searcher.storage import open_storage
    from edgesearch.searcher.study import FINISHED, create_study

    n_trials = sizes.trials_per_worker * count
    config = _study_config(
        f"throughput-{backend}-{count}",
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
        "epoch_seconds": sizes.epoch_seconds,
        # Once the last trials are taken elsewhere, a worker looks again this often, then stops.
        "poll_seconds": 0.5,
    }
    peak = [0]
    last_look = [0.0]

    def watch() -> None:  # one cheap query a second, from outside the workers
        if admin is not None and time.monotonic() - last_look[0] >= 1.0:
            last_look[0] = time.monotonic()
            peak[0] = max(peak[0], admin.connections())

    go, results, codes, busy = run_processes(count, job, timeout=sizes.round_timeout_s, watch=watch)
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
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    span = (max(ends) - go_wall).total_seconds() if ends else None
    per_minute = len(finished) / span * 60.0 if span else 0.0
    ideal = count * 60.0 / sizes.trial_seconds
    cpu = sum(r.get("cpu_seconds", 0.0) for r in results)
    out: dict[str, Any] = {
        "workers": count,
        "n_trials": n_trials,
        "finished": len(finished),
        "states": dict(states),
        "lost": max(0, n_trials - len(finished)) + len(left),
        "duplicated": duplicated + max(0, len(finished) - n_trials),
        "trials_told_by_workers": sum(r.get("trials", 0) for r in results),
        "exit_codes": dict(Counter(str(code) for code in codes)),
        "all_exited_0": all(code == 0 for code in codes),
        "seconds_go_to_last_trial_end": span,
        "seconds_go_to_first_trial_start": (min(starts) - go_wall).total_seconds() if starts else None,
        "trials_per_minute": per_minute,
        "ideal_trials_per_minute": ideal,
        "efficiency": per_minute / ideal,
        "worker_cpu_ms_per_trial": 1e3 * cpu / len(finished) if finished else None,
        # All CPU time spent on the machine per finished trial (workers, database server, anything
        # else running), and the trials per minute that caps when every core is busy.
        "machine_cpu_busy": busy,
        "machine_cpu_ms_per_trial": 1e3 * busy * _cores() * span / len(finished)
        if busy and span and finished
        else None,
        "cpu_bound": busy is not None and busy >= 0.9,
    }
    if admin is not None:
        out["peak_connections_seen"] = peak[0]
    errors = [
        {"index": r["index"], "error": r.get("error") or r.get("stopped_because")} for r in results if not r["ok"]
    ]
    if errors or len(results) < count:
        out["process_errors"] = errors or [f"{count - len(results)} processes died without a result"]
    _common.log(
        f"throughput {backend} x{count}: {per_minute:.1f} trials/min ({per_minute / ideal:.0%} of ideal), "
        f"{len(finished)}/{n_trials} finished, lost {out['lost']}, duplicated {out['duplicated']}, "
        f"exit codes {out['exit_codes']}, {span or 0:.1f} s, CPU busy {busy if busy is None else f'{busy:.0%}'}"
    )
    return out


def throughput(url: str | None, *, backend: str, sizes: Sizes, folder: Path, admin: PgAdmin | None) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for count in sizes.counts if backend == "postgresql" else sizes.sqlite_counts:
        if admin is not None:
            free = admin.free_connections()
            needed = count * CONNECTIONS_PER_WORKER
            if needed > free:
                counts[str(count)] = {
                    "skipped": f"needs up to {needed} connections ({CONNECTIONS_PER_WORKER} per worker), "
                    f"the server has {free} left (max_connections {admin.setting('max_connections')})"
                }
                _common.log(f"throughput {backend} x{count}: skipped, {counts[str(count)]['skipped']}")
                continue
        round_url = url or f"sqlite:///{folder}/throughput-{count}.db"
        try:
            counts[str(count)] = throughput_round(
                round_url, backend=backend, count=count, sizes=sizes, folder=folder, admin=admin
            )
        except (TimeoutError, threading.BrokenBarrierError) as exc:
            counts[str(count)] = {"error": f"{type(exc).__name__}: {exc}"}
            _common.log(f"throughput {backend} x{count}: {counts[str(count)]['error']}")
    per_minute = {k: v["trials_per_minute"] for k, v in counts.items() if v.get("trials_per_minute")}
    base = per_minute.get("1")
    speedup = per_minute["16"] / base if base and "16" in per_minute else None
    has_target = backend == "postgresql"
    return {
        "counts": counts,
        "trials_per_minute": per_minute,
        "speedup_vs_1": {k: v / base for k, v in per_minute.items()} if base else {},
        "speedup_16_vs_1": speedup,
        "target": f"16 workers >= {TARGET_SPEEDUP_16:g}x of 1" if has_target else "none (reported for comparison)",
        "met": (speedup >= TARGET_SPEEDUP_16) if has_target and speedup is not None else None,
        "lost": sum(v.get("lost", 0) for v in counts.values()),
        "duplicated": sum(v.get("duplicated", 0) for v in counts.values()),
        "all_exited_0": all(v.get("all_exited_0", False) for v in counts.values() if "skipped" not in v),
    }


def _dispose(study: optuna.Study) -> None:
    """Close the study's pooled connections now, so that no forked worker inherits one."""
    from edgesearch.searcher.optuna_internals import rdb_storage

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

    def close(self) -> None:
        self.connection.close()


@contextlib.contextmanager
def postgres_server(explicit: str | None) -> Iterator[tuple[str | None, str]]:
    """(server URL or None, where it came from or why there is none); a server started here is stopped after."""
    for candidate, source in [(explicit, "--postgres"), *((os.environ.get(n), f"${n}") for n in POSTGRES_ENV)]:
        if candidate and candidate.strip():
            yield candidate.strip(), source
            return
    try:
        started = subprocess.run([str(START_POSTGRES)], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        yield None, f"no PostgreSQL URL given and {START_POSTGRES.name} could not run: {exc}"
        return
    if started.returncode != 0:
        reason = (started.stderr.strip().splitlines() or ["no output"])[-1]
        yield None, f"no PostgreSQL URL given and {START_POSTGRES.name} failed: {reason}"
        return
    exports = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in started.stdout.splitlines()
        if line.startswith("export ")
    )
    try:
        yield exports["EDGESEARCH_TEST_POSTGRES_URL"], f"a throwaway server started with {START_POSTGRES.name}"
    finally:
        subprocess.run([str(START_POSTGRES), "stop"], env={**os.environ, **exports}, capture_output=True, check=False)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--postgres", metavar="URL", default=None, help="PostgreSQL server to use (a database is created)")
    p.add_argument("--no-sqlite-throughput", action="store_true", help="measure throughput on PostgreSQL only")
    args = p.parse_args()

    import optuna

    from edgesearch.searcher.storage import redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as the worker command does
    sizes = TINY if args.tiny else FULL
    began = time.monotonic()
    result: dict[str, Any] = {
        "sizes": {
            "overhead_trials": sizes.overhead_trials,
            "overhead_epochs_per_trial": sizes.overhead_epochs,
            "worker_counts": {"postgresql": list(sizes.counts), "sqlite": list(sizes.sqlite_counts)},
            "n_trials": f"{sizes.trials_per_worker} x workers",
            "trial": f"{sizes.epochs} epochs of {sizes.epoch_seconds} s sleep, reported through PruningCallback",
        },
        "study": {
            "space": "studies/quickstart.yaml's",
            "overhead": "studies/quickstart.yaml as written (TPE sampler, median pruner), heartbeat on (30 s)",
            "throughput_sampler": "random, seed 0 + worker index",
            "throughput_pruner": "median (n_startup_trials 2, n_warmup_steps 0): every should_prune reads the "
            "study as in a real search, but every trial reports the same curve, never below the median, so no "
            "trial is cut short and trials per minute compare across worker counts and with the ideal",
        },
        "processes": "for each count, that many processes forked from the benchmark after its imports, each "
        "running run_worker, released together by a barrier; timed from the release to the last trial's end",
    }
    with tempfile.TemporaryDirectory(prefix="edgesearch-bench-") as tmp, postgres_server(args.postgres) as found:
        folder = Path(tmp)
        server, source = found
        admin: PgAdmin | None = None
        pg_url: str | None = None
        pg_skip = source
        if server is not None:
            try:
                admin = PgAdmin(server)
                pg_url = admin.create_database()
                result["postgresql"] = {
                    "server": redact(server),
                    "source": source,
                    "max_connections": admin.setting("max_connections"),
                }
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [""])[0]  # libpq adds hint lines
                pg_skip = f"PostgreSQL at {redact(server)} ({source}) unusable: {type(exc).__name__}: {reason}"
                if admin is not None:
                    admin.close()
                admin = None
        if pg_url is None:
            _common.log(f"PostgreSQL parts skipped: {pg_skip}")
        try:
            overheads: dict[str, Any] = {}
            overheads["sqlite"] = overhead(
                f"sqlite:///{folder}/overhead.db", label="sqlite", sizes=sizes, folder=folder
            )
            if pg_url is None:
                overheads["postgresql"] = {"skipped": pg_skip}
            else:
                overheads["postgresql"] = overhead(pg_url, label="postgresql", sizes=sizes, folder=folder)
            result["overhead"] = overheads
            throughputs: dict[str, Any] = {}
            if pg_url is None:
                throughputs["postgresql"] = {"skipped": pg_skip}
            else:
                throughputs["postgresql"] = throughput(
                    pg_url, backend="postgresql", sizes=sizes, folder=folder, admin=admin
                )
            if args.no_sqlite_throughput:
                throughputs["sqlite"] = {"skipped": "--no-sqlite-throughput"}
            else:
                throughputs["sqlite"] = throughput(None, backend="sqlite", sizes=sizes, folder=folder, admin=None)
            result["throughput"] = throughputs
        finally:
            if admin is not None:
                admin.drop_database()
                admin.close()
    pg = result["throughput"]["postgresql"]
    if pg.get("speedup_16_vs_1") is not None:
        at16 = pg["counts"]["16"]
        result["speedup_16_vs_1"] = {
            "value": pg["speedup_16_vs_1"],
            "target": f">= {TARGET_SPEEDUP_16:g}",
            "met": pg["met"],
            # When every core is busy, trials per minute are capped by the CPU each trial costs
            # (its storage calls in the worker and in the server), not by workers waiting on each other.
            "cpu_bound_at_16": at16["cpu_bound"],
            "cpu_ceiling_trials_per_minute": 60e3 * _cores() / at16["machine_cpu_ms_per_trial"]
            if at16["machine_cpu_ms_per_trial"]
            else None,
        }
    else:
        result["speedup_16_vs_1"] = {"skipped": pg.get("skipped") or "needs worker counts 1 and 16 (full size)"}
    measured = [v for v in result["throughput"].values() if "skipped" not in v]
    result["lost"] = sum(v["lost"] for v in measured)
    result["duplicated"] = sum(v["duplicated"] for v in measured)
    result["seconds"] = time.monotonic() - began
    _common.emit("coordination", args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
