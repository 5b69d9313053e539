"""``edgesearch worker``: run trials of a stored study here, in one or many local processes.

One process runs trials itself and shows a live study bar; ``--processes N`` or ``--gpus``
starts one child ``edgesearch worker`` per slot (:class:`~edgesearch.searcher.run.processes.LocalWorkers`)
and relays their lines, prefixed ``[w<i>]``, above one bar read from the storage.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgesearch.cli.console import EXIT_RUN_FAILED, err, fail, out, user_errors
from edgesearch.cli.options import ArtifactsOption, RunsOption, StorageOption, format_value, quiet_optuna

if TYPE_CHECKING:
    import optuna

    from edgesearch.searcher.run.trial import TrialOutcome
    from edgesearch.searcher.study.studies import TrialCounts

__all__ = ["app", "run_here", "run_local"]

app = typer.Typer()

WORKER_LABEL = f"{socket.gethostname()}:{os.getpid()}"
"""How this worker names itself: a worker's identity is its machine and process, not a number."""


class _StudyCounts:
    """Trial counts of one study for the progress view, read through one storage connection pool.

    The storage already waits out database outages; should a read still fail, the view shows the
    last counts instead of stopping the worker it only watches.
    """

    def __init__(self, name: str, url: str) -> None:
        from edgesearch.searcher.study.studies import TrialCounts, load_study

        self.study, config = load_study(name, url)
        self.n_trials = config.n_trials
        self.last: TrialCounts = TrialCounts()

    def read(self) -> TrialCounts:
        from edgesearch.searcher.study.studies import trial_counts

        try:
            self.last = trial_counts(self.study, n_trials=self.n_trials)
        except Exception as exc:
            err.print(f"warning: could not read the study's trial counts ({type(exc).__name__}); showing the last ones")
        return self.last


def _announce(signal_name: str) -> None:
    err.print(f"{signal_name}: handing the running trial back and stopping (again to force)")


def run_here(
    name: str,
    url: str,
    *,
    n_trials: int | None,
    timeout: float | None,
    runs_dir: Path,
    artifacts: Path | None,
) -> None:
    """Run trials in this process with a live study view; returns when the worker stops.

    Exits 1 when the worker stopped because trials kept crashing the same way.
    """
    from edgesearch.cli.study_progress import EpochLines, StudyProgress, format_counts
    from edgesearch.searcher.run.processes import stop_on_signals
    from edgesearch.searcher.run.worker import run_worker
    from edgesearch.searcher.storage.artifacts import open_artifact_store, resolve_artifact_dir
    from edgesearch.searcher.study.confirm import confirmation_job
    from edgesearch.searcher.study.studies import stored_config

    store = open_artifact_store(resolve_artifact_dir(artifacts))
    counts = _StudyCounts(name, url)
    config = stored_config(counts.study)
    with StudyProgress(name, counts.n_trials) as progress, stop_on_signals(_announce) as stop:
        epochs = EpochLines(progress, config.objectives[0], read_counts=counts.read)

        def started(trial: optuna.Trial) -> None:
            if progress.live:  # the trial is RUNNING in the storage now: the bar counts it
                progress.refresh(counts.read())
            job = confirmation_job(trial)
            if job is not None:
                epochs.label = f"confirmation {trial.number}"
                progress.log(f"confirmation {trial.number} started: trial {job['trial']}'s config, seed {job['seed']}")
                return
            epochs.label = f"trial {trial.number}"
            params = ", ".join(f"{key}={format_value(value)}" for key, value in trial.params.items())
            progress.log(f"trial {trial.number} started{': ' + params if params else ''}")

        def ended(outcome: TrialOutcome) -> None:
            value = f" value {outcome.value:.4f}" if outcome.value is not None else ""
            if outcome.values is not None:
                value = " " + ", ".join(f"{m} {v:.4f}" for m, v in zip(config.objectives, outcome.values, strict=False))
            reason = f" ({outcome.reason})" if outcome.reason else ""
            state = "handed back for retry" if outcome.interrupted else outcome.state.name
            progress.trial_eta(None)
            progress.log(f"{outcome.label} {outcome.number}: {state}{value} after {outcome.epochs} epochs{reason}")
            progress.refresh(counts.read())

        progress.refresh(counts.read())
        summary = run_worker(
            name,
            url,
            max_trials=n_trials,
            timeout=timeout,
            runs_dir=runs_dir,
            artifact_store=store,
            callbacks=[epochs],
            on_trial_start=started,
            on_trial_end=ended,
            stop=stop,
        )
    out.print(f"worker {WORKER_LABEL} stopped: {summary.stopped_because}; ran {len(summary.outcomes)} trials")
    out.print(f"study {name}: {format_counts(counts.read(), counts.n_trials)}")
    if summary.failed:
        fail(f"worker {WORKER_LABEL}: {summary.stopped_because}", EXIT_RUN_FAILED)


def run_local(name: str, url: str, *, slots: list[str | None], args: list[str]) -> int:
    """Start one child worker per slot (a GPU id or None), show the study until all exit.

    Returns the highest child exit code (1 for a child killed by a signal). SIGTERM or Ctrl-C
    is passed on to the children, which hand their trials back and exit; the parent waits.
    """
    from edgesearch.cli.study_progress import StudyProgress, format_counts
    from edgesearch.searcher.run.processes import LocalWorkers, slot_label, stop_on_signals

    counts = _StudyCounts(name, url)
    with StudyProgress(name, counts.n_trials) as progress:
        workers = LocalWorkers(
            name,
            url,
            slots=slots,
            args=args,
            on_line=lambda index, line: progress.log(f"[{slot_label(index, slots[index])}] {line}"),
        )
        workers.start()
        with stop_on_signals() as stop:
            try:
                while workers.running():
                    if stop.is_set():
                        workers.stop()  # each child hands its trial back on SIGTERM and exits 0
                    progress.refresh(counts.read())
                    stop.wait(1.0)
            except KeyboardInterrupt:  # a second signal: stop now
                workers.kill()
        code = workers.finish()
        progress.refresh(counts.read())
    out.print(f"study {name}: {format_counts(counts.last, counts.n_trials)}")
    return code


@app.command("worker")
def worker_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOption = None,
    n_trials: Annotated[int | None, typer.Option(min=1, help="Stop after this many trials here.")] = None,
    timeout: Annotated[float | None, typer.Option(min=1, help="Stop starting trials after this many seconds.")] = None,
    processes: Annotated[int, typer.Option(min=1, help="Worker processes on this machine (CPU boxes).")] = 1,
    gpus: Annotated[str | None, typer.Option(help="Comma-separated GPU ids: one worker process per GPU.")] = None,
    per_gpu: Annotated[
        int, typer.Option("--per-gpu", min=1, max=64, help="With --gpus: worker processes per GPU (small models).")
    ] = 1,
    runs_dir: RunsOption = Path("runs"),
    artifacts: ArtifactsOption = None,
) -> None:
    """Run trials of study NAME until the study holds its n_trials finished trials."""
    with user_errors():
        from edgesearch.errors import ConfigError
        from edgesearch.files import check_folder_path
        from edgesearch.searcher.run.processes import check_gpus, gpu_slots, worker_args
        from edgesearch.searcher.storage.artifacts import open_artifact_store, resolve_artifact_dir
        from edgesearch.searcher.storage.urls import resolve_storage_url
        from edgesearch.searcher.study.studies import load_study
        from edgesearch.trainer.data_cache import check_budget
        from edgesearch.trainer.device import check_required_gpu

        check_folder_path(runs_dir, label="--runs-dir")  # before a trial is taken that could not be run
        gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
        if per_gpu > 1 and not gpu_list:
            raise ConfigError("--per-gpu goes with --gpus (e.g. --gpus 0,1 --per-gpu 2); on CPU use --processes")
        if gpu_list:
            check_gpus(gpu_list)  # before anything is opened or created
        check_required_gpu()  # a child given a GPU: fail here, before taking a trial
        check_budget()
        quiet_optuna()
        url = resolve_storage_url(storage)
        load_study(name, url)  # a missing study or database fails here, before any process starts
        open_artifact_store(resolve_artifact_dir(artifacts))
        if gpu_list or processes > 1:
            slots: list[str | None] = gpu_slots(gpu_list, per_gpu) if gpu_list else [None] * processes
            args = worker_args(runs_dir=runs_dir, artifacts=artifacts, n_trials=n_trials, timeout=timeout)
            raise typer.Exit(run_local(name, url, slots=slots, args=args))
        run_here(
            name,
            url,
            n_trials=n_trials,
            timeout=timeout,
            runs_dir=runs_dir,
            artifacts=artifacts,
        )
