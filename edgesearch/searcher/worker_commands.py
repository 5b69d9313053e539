"""``edgesearch worker``: run trials of a stored study here, in one or many local processes.

One process runs trials itself and shows a live study bar; ``--processes N`` or ``--gpus``
starts one child ``edgesearch worker`` per slot (``CUDA_VISIBLE_DEVICES`` set per GPU) and
the parent relays their lines, prefixed ``[w<i>]``, above one bar read from the storage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgesearch.console import out, user_errors

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


def _counts(name: str, url: str) -> tuple[dict[str, Any], int]:
    from edgesearch.searcher.study import load_study, trial_counts

    study, config = load_study(name, url)
    return trial_counts(study), config.n_trials


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
    """Run trials in this process with a live study view; returns when the worker stops."""
    from edgesearch.searcher.artifacts import open_artifact_store, resolve_artifact_dir
    from edgesearch.searcher.progress import EpochLines, StudyProgress, format_counts
    from edgesearch.searcher.study import load_study
    from edgesearch.searcher.worker import run_worker

    store = open_artifact_store(resolve_artifact_dir(artifacts))
    _, config = load_study(name, url)
    with StudyProgress(name, config.n_trials) as progress:
        epochs = EpochLines(progress, config.metric)

        def started(trial: optuna.Trial) -> None:
            epochs.number = trial.number
            params = ", ".join(f"{key}={_fmt(value)}" for key, value in trial.params.items())
            progress.log(f"trial {trial.number} started{': ' + params if params else ''}")

        def ended(outcome: TrialOutcome) -> None:
            value = f" value {outcome.value:.4f}" if outcome.value is not None else ""
            reason = f" ({outcome.reason})" if outcome.reason else ""
            progress.log(f"trial {outcome.number}: {outcome.state.name}{value} after {outcome.epochs} epochs{reason}")
            progress.refresh(_counts(name, url)[0])

        progress.refresh(_counts(name, url)[0])
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
        )
    out.print(f"worker {worker_index} stopped: {summary.stopped_because}; ran {len(summary.outcomes)} trials")
    counts, n = _counts(name, url)
    out.print(f"study {name}: {format_counts(counts, n)}")


def _relay(child: subprocess.Popen[str], index: int, progress: StudyProgress) -> None:
    assert child.stdout is not None  # Popen(stdout=PIPE) guarantees it
    for line in child.stdout:
        progress.log(f"[w{index}] {line.rstrip()}")


def run_local(name: str, url: str, *, slots: list[str | None], args: list[str]) -> int:
    """Start one child worker per slot (a GPU id or None), show the study until all exit.

    Returns the highest child exit code. Ctrl-C is passed on to the children, which hand
    their trials back and exit; the parent waits for them.
    """
    from edgesearch.searcher.progress import StudyProgress, format_counts

    counts, n_trials = _counts(name, url)
    children: list[subprocess.Popen[str]] = []
    with StudyProgress(name, n_trials) as progress:
        threads = []
        for index, gpu in enumerate(slots):
            env = dict(os.environ, EDGESEARCH_STORAGE=url, PYTHONUNBUFFERED="1")
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            cmd = [sys.executable, "-m", "edgesearch", "worker", name, "--worker-index", str(index), *args]
            child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            children.append(child)
            thread = threading.Thread(target=_relay, args=(child, index, progress), daemon=True)
            thread.start()
            threads.append(thread)
        try:
            while any(child.poll() is None for child in children):
                progress.refresh(_counts(name, url)[0])
                time.sleep(1.0)
        except KeyboardInterrupt:
            for child in children:
                child.terminate()
            for child in children:
                child.wait()
        for thread in threads:
            thread.join(timeout=5)
        counts, n_trials = _counts(name, url)
        progress.refresh(counts)
    out.print(f"study {name}: {format_counts(counts, n_trials)}")
    return max((child.returncode or 0) for child in children)


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
