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
import functools
import itertools
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

from devtools import postgres
from devtools.forked import run_forked
from devtools.pooler import running_pooler
from devtools.postgres import PgAdmin, PostgresUnavailable, throwaway_postgres
from devtools.proc_cpu import process_cpu, process_tree_cpu
from devtools.stand_in import StandInTrial, WorkerJob, WorkerTotals, stand_in_worker

if TYPE_CHECKING:
    import optuna

    from edgesearch.searcher.study.config import StudyConfig

QUICKSTART = _common.ROOT / "studies" / "quickstart.yaml"
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


@dataclass(frozen=True)
class Cluster:
    """What a scale round runs against: the pooler's URL, the database behind it with an admin connection to
    its server, and the processes to meter."""

    pooled_url: str
    database: str
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
    job = WorkerJob(
        name=config.name,
        url=url,
        runs_dir=folder / "runs",
        epochs=sizes.epochs,
        epoch_seconds=epoch_seconds,
        poll_seconds=0.5,
        start_delay=ramp,
    )
    peak = [0]
    last_look = [0.0]

    def watch() -> None:  # one cheap query every half second, from outside the workers
        if time.monotonic() - last_look[0] >= 0.5:
            last_look[0] = time.monotonic()
            peak[0] = max(peak[0], cluster.admin.connections(cluster.database))

    def server() -> float:  # PostgreSQL's timer-driven helpers grow with the round's length, not its trials
        return process_tree_cpu(cluster.postmaster, leave_out=postgres.HOUSEKEEPING)

    server_cpu, pooler_cpu = server(), process_tree_cpu(cluster.pooler)
    watching = process_cpu(cluster.admin.backend_pid)
    forked = run_forked(count, functools.partial(stand_in_worker, job), timeout=sizes.round_timeout_s, watch=watch)
    watching = process_cpu(cluster.admin.backend_pid) - watching  # the connection count read every 0.5 s
    server_cpu = server() - server_cpu - watching
    pooler_cpu = process_tree_cpu(cluster.pooler) - pooler_cpu
    go, codes, busy = forked.go, forked.exit_codes, forked.machine_busy
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
    totals = WorkerTotals.of(forked.results)
    worker_cpu, startup_cpu, tail_cpu = totals.cpu_seconds, totals.startup_cpu_seconds, totals.tail_cpu_seconds
    trials_cpu = worker_cpu - startup_cpu - tail_cpu
    workers = max(totals.workers, 1)
    out: dict[str, Any] = {
        "workers": count,
        "n_trials": n_trials,
        "finished": len(finished),
        "states": dict(states),
        "lost": max(0, n_trials - len(finished)) + len(left),
        "duplicated": duplicated + max(0, len(finished) - n_trials),
        "connection_errors": totals.connection_warnings,
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
        "round_trips_per_trial": totals.round_trips / n,
        "connects_per_trial": totals.connects / n,
        "peak_server_connections": peak[0],
        "machine_cpu_busy": busy,
    }
    if totals.errors or totals.workers < count:
        out["process_errors"] = totals.errors or [f"{count - totals.workers} processes died without a result"]
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
    with contextlib.ExitStack() as stack:
        try:
            started = stack.enter_context(
                throwaway_postgres(first_port=_common.throwaway_port(), max_connections=SCALE_MAX_CONNECTIONS)
            )
        except PostgresUnavailable as exc:
            return {"skipped": str(exc)}
        database = stack.enter_context(postgres.fresh_database(started.url, prefix="es_bench_"))
        admin = stack.enter_context(PgAdmin(started.url))
        pooler = stack.enter_context(running_pooler(database, folder, "--pool-size", str(sizes.pool_size)))
        cluster = Cluster(pooler.url, database, admin, started.postmaster_pid(), pooler.proc.pid)
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
    with (
        tempfile.TemporaryDirectory(prefix="edgesearch-bench-") as tmp,
        _common.postgres_server(args.postgres) as (server, source),
    ):
        folder = Path(tmp)
        overheads: dict[str, Any] = {
            "sqlite": overhead(f"sqlite:///{folder}/overhead.db", label="sqlite", sizes=sizes, folder=folder)
        }
        if server is None:
            overheads["postgresql"] = {"skipped": source}
        else:
            with postgres.fresh_database(server, prefix="es_bench_") as url:
                overheads["postgresql"] = overhead(url, label="postgresql", sizes=sizes, folder=folder)
            overheads["postgresql"].update(server=redact(server), source=source)
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
