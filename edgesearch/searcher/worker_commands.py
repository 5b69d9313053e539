"""``edgesearch worker``: run trials of a stored study here, in one or many local processes.

One process runs trials itself and shows a live study bar; ``--processes N`` or ``--gpus``
starts one child ``edgesearch worker`` per slot (``CUDA_VISIBLE_DEVICES`` set per GPU) and
the parent relays their lines, prefixed ``[w<i>]``, above one bar read from the storage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgesearch.console import EXIT_RUN_FAILED, err, fail, out, user_errors

if TYPE_CHECKING:
    import optuna

    from edgesearch.searcher.objective import TrialOutcome
    from edgesearch.searcher.progress import StudyProgress

__all__ = ["ArtifactsOption", "RunsOption", "StorageOption", "quiet_optuna", "run_here", "run_local", "worker_app"]

worker_app = typer.Typer()

StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage", help="SQLAlchemy URL; default $EDGESEARCH_STORAGE, the study file's, sqlite:///edgesearch.db"
    ),
]
RunsOption = Annotated[Path, typer.Option("--runs-dir", help="Where trial run directories go (<dir>/<study>/...).")]
ArtifactsOption = Annotated[
    Path | None,
    typer.Option(
        "--artifacts", help="Folder for trial pictures and weights; default $EDGESEARCH_ARTIFACTS, ./artifacts"
    ),
]


def quiet_optuna() -> None:
    """Optuna's own INFO lines ("A new study created ...", "Trial 3 finished ...") repeat ours."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


class _StudyCounts:
    """Trial counts of one study for the progress view, read through one storage connection pool.

    The storage already waits out database outages; should a read still fail, the view shows the
    last counts instead of stopping the worker it only watches.
    """

    def __init__(self, name: str, url: str) -> None:
        from edgesearch.searcher.study import load_study

        self.study, config = load_study(name, url)
        self.n_trials = config.n_trials
        self.last: dict[str, Any] = {}

    def read(self) -> dict[str, Any]:
        from edgesearch.searcher.study import trial_counts

        try:
            self.last = trial_counts(self.study)
        except Exception as exc:
            err.print(f"warning: could not read the study's trial counts ({type(exc).__name__}); showing the last ones")
        return self.last


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM or SIGINT (Ctrl-C) set the yielded event: the worker hands its trial back and exits 0.

    A second signal stops at once (KeyboardInterrupt), for someone who cannot wait. The previous
    handlers come back afterwards. Outside the main thread (where Python allows no handlers),
    the event is simply never set by a signal.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print(f"{signal.Signals(signum).name}: handing the running trial back and stopping (again to force)")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_here(
    name: str,
    url: str,
    *,
    worker_index: int,
    n_trials: int | None,
    timeout: float | None,
    runs_dir: Path,
    artifacts: Path | None,
) -> None:
    """Run trials in this process with a live study view; returns when the worker stops.

    Exits 1 when the worker stopped because trials kept crashing the same way.
    """
    from edgesearch.searcher.artifacts import open_artifact_store, resolve_artifact_dir
    from edgesearch.searcher.progress import EpochLines, StudyProgress, format_counts
    from edgesearch.searcher.study import stored_config
    from edgesearch.searcher.worker import run_worker

    store = open_artifact_store(resolve_artifact_dir(artifacts))
    counts = _StudyCounts(name, url)
    config = stored_config(counts.study)
    with StudyProgress(name, counts.n_trials) as progress, stop_on_signals() as stop:
        epochs = EpochLines(progress, config.metric)

        def started(trial: optuna.Trial) -> None:
            epochs.number = trial.number
            params = ", ".join(f"{key}={_fmt(value)}" for key, value in trial.params.items())
            progress.log(f"trial {trial.number} started{': ' + params if params else ''}")

        def ended(outcome: TrialOutcome) -> None:
            value = f" value {outcome.value:.4f}" if outcome.value is not None else ""
            reason = f" ({outcome.reason})" if outcome.reason else ""
            state = "handed back for retry" if outcome.interrupted else outcome.state.name
            progress.log(f"trial {outcome.number}: {state}{value} after {outcome.epochs} epochs{reason}")
            progress.refresh(counts.read())

        progress.refresh(counts.read())
        summary = run_worker(
            name,
            url,
            worker_index=worker_index,
            max_trials=n_trials,
            timeout=timeout,
            runs_dir=runs_dir,
            artifact_store=store,
            callbacks=[epochs],
            on_trial_start=started,
            on_trial_end=ended,
            stop=stop,
        )
    out.print(f"worker {worker_index} stopped: {summary.stopped_because}; ran {len(summary.outcomes)} trials")
    out.print(f"study {name}: {format_counts(counts.read(), counts.n_trials)}")
    if summary.failed:
        raise fail(f"worker {worker_index}: {summary.stopped_because}", EXIT_RUN_FAILED)


def _relay(child: subprocess.Popen[str], index: int, progress: StudyProgress) -> None:
    if child.stdout is None:  # only when started without stdout=PIPE: nothing to relay
        return
    for line in child.stdout:
        progress.log(f"[w{index}] {line.rstrip()}")


def run_local(name: str, url: str, *, slots: list[str | None], args: list[str]) -> int:
    """Start one child worker per slot (a GPU id or None), show the study until all exit.

    Returns the highest child exit code (1 for a child killed by a signal). SIGTERM or Ctrl-C
    is passed on to the children, which hand their trials back and exit; the parent waits.
    """
    from edgesearch.searcher.progress import StudyProgress, format_counts

    counts = _StudyCounts(name, url)
    children: list[subprocess.Popen[str]] = []
    with StudyProgress(name, counts.n_trials) as progress:
        threads = []
        for index, gpu in enumerate(slots):
            env = dict(os.environ, EDGESEARCH_STORAGE=url, PYTHONUNBUFFERED="1")
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            cmd = [sys.executable, "-m", "edgesearch", "worker", name, "--worker-index", str(index), *args]
            # A session of its own: a terminal's Ctrl-C reaches only this parent, which passes on
            # one SIGTERM; a child that got both would take the second as "stop now".
            child = subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
            children.append(child)
            thread = threading.Thread(target=_relay, args=(child, index, progress), daemon=True)
            thread.start()
            threads.append(thread)
        with stop_on_signals() as stop:
            forwarded = False
            try:
                while any(child.poll() is None for child in children):
                    if stop.is_set() and not forwarded:
                        # Each child hands its trial back on SIGTERM and exits 0; wait for them.
                        for child in children:
                            if child.poll() is None:
                                child.send_signal(signal.SIGTERM)
                        forwarded = True
                    progress.refresh(counts.read())
                    stop.wait(1.0)
            except KeyboardInterrupt:  # a second signal: stop now
                for child in children:
                    child.kill()
                for child in children:
                    child.wait()
        for thread in threads:
            thread.join(timeout=5)
        progress.refresh(counts.read())
    out.print(f"study {name}: {format_counts(counts.last, counts.n_trials)}")
    codes = [child.returncode or 0 for child in children]
    return max(EXIT_RUN_FAILED if code < 0 else code for code in codes)


def worker_args(
    *, runs_dir: Path, artifacts: Path | None, n_trials: int | None = None, timeout: float | None = None
) -> list[str]:
    """The options a parent passes on to its child workers."""
    args = ["--runs-dir", str(runs_dir)]
    if artifacts is not None:
        args += ["--artifacts", str(artifacts)]
    if n_trials is not None:
        args += ["--n-trials", str(n_trials)]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    return args


@worker_app.command("worker")
def worker_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOption = None,
    n_trials: Annotated[int | None, typer.Option(min=1, help="Stop after this many trials here.")] = None,
    timeout: Annotated[float | None, typer.Option(min=1, help="Stop starting trials after this many seconds.")] = None,
    processes: Annotated[int, typer.Option(min=1, help="Worker processes on this machine (CPU boxes).")] = 1,
    gpus: Annotated[str | None, typer.Option(help="Comma-separated GPU ids: one worker process per GPU.")] = None,
    worker_index: Annotated[int, typer.Option(hidden=True, min=0)] = 0,
    runs_dir: RunsOption = Path("runs"),
    artifacts: ArtifactsOption = None,
) -> None:
    """Run trials of study NAME until the study holds its n_trials finished trials."""
    with user_errors():
        from edgesearch.searcher.artifacts import open_artifact_store, resolve_artifact_dir
        from edgesearch.searcher.storage import resolve_storage_url
        from edgesearch.searcher.study import load_study

        quiet_optuna()
        url = resolve_storage_url(storage)
        load_study(name, url)  # a missing study or database fails here, before any process starts
        open_artifact_store(resolve_artifact_dir(artifacts))
        gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
        if gpu_list or processes > 1:
            slots: list[str | None] = list(gpu_list) if gpu_list else [None] * processes
            args = worker_args(runs_dir=runs_dir, artifacts=artifacts, n_trials=n_trials, timeout=timeout)
            raise typer.Exit(run_local(name, url, slots=slots, args=args))
        run_here(
            name,
            url,
            worker_index=worker_index,
            n_trials=n_trials,
            timeout=timeout,
            runs_dir=runs_dir,
            artifacts=artifacts,
        )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
