"""``edgesearch study ...`` and ``edgesearch worker``: thin commands over the searcher API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgesearch.console import out, user_errors

if TYPE_CHECKING:
    from edgesearch.searcher.objective import TrialOutcome

study_app = typer.Typer(help="Create, run and inspect studies.", no_args_is_help=True)
worker_app = typer.Typer()

StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage", help="SQLAlchemy URL; default $EDGESEARCH_STORAGE, the study file's, sqlite:///edgesearch.db"
    ),
]
RunsOption = Annotated[Path, typer.Option("--runs-dir", help="Where trial run directories go (runs/<study>/...).")]


def _print_outcome(outcome: TrialOutcome) -> None:
    value = f" value {outcome.value:.4f}" if outcome.value is not None else ""
    reason = f" ({outcome.reason})" if outcome.reason else ""
    out.print(f"trial {outcome.number}: {outcome.state.name}{value} after {outcome.epochs} epochs{reason}")


def _summary_line(name: str, url: str) -> str:
    from edgesearch.searcher.study import load_study, trial_counts

    study, config = load_study(name, url)
    c = trial_counts(study)
    best = f"{c['best']:.4f}" if c["best"] is not None else "-"
    return (
        f"study {name}: {c['finished']}/{config.n_trials} finished ({c.get('COMPLETE', 0)} complete, "
        f"{c.get('PRUNED', 0)} pruned), {c.get('FAIL', 0)} failed, {c.get('RUNNING', 0)} running; best {best}"
    )


@study_app.command("create")
def create_command(
    file: Annotated[Path, typer.Argument(help="Study file (YAML).")], storage: StorageOption = None
) -> None:
    """Create a study from FILE in the storage (or load it when an identical one exists)."""
    with user_errors():
        from edgesearch.searcher.config import StudyConfig
        from edgesearch.searcher.storage import redact, resolve_storage_url
        from edgesearch.searcher.study import create_study

        config = StudyConfig.from_yaml(file)
        url = resolve_storage_url(storage, config.storage)
        _, created = create_study(config, url)
    verb = "created" if created else "already exists (same config)"
    out.print(f"study {config.name} {verb} in {redact(url)}")
    out.print(f"run workers with: edgesearch worker {config.name} --storage '{redact(url)}'")


def _spawn_workers(name: str, url: str, *, gpus: list[str] | None, processes: int, args: list[str]) -> int:
    """Start one child ``edgesearch worker`` per GPU or process, show a summary until all exit."""
    children = []
    slots = gpus if gpus else [None] * processes
    for index, gpu in enumerate(slots):
        env = dict(os.environ, EDGESEARCH_STORAGE=url)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        cmd = [sys.executable, "-m", "edgesearch", "worker", name, "--worker-index", str(index), *args]
        children.append(subprocess.Popen(cmd, env=env))
    try:
        while any(child.poll() is None for child in children):
            time.sleep(1.0)
    except KeyboardInterrupt:
        for child in children:
            child.terminate()
        for child in children:
            child.wait()
    out.print(_summary_line(name, url))
    return max((child.returncode or 0) for child in children)


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
) -> None:
    """Run trials of study NAME until the study holds its n_trials finished trials."""
    with user_errors():
        from edgesearch.searcher.storage import resolve_storage_url
        from edgesearch.searcher.study import load_study

        url = resolve_storage_url(storage)
        load_study(name, url)  # a missing study or database fails here, before any process starts
        gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
        if gpu_list or processes > 1:
            extra = ["--runs-dir", str(runs_dir)]
            if n_trials is not None:
                extra += ["--n-trials", str(n_trials)]
            if timeout is not None:
                extra += ["--timeout", str(timeout)]
            raise typer.Exit(_spawn_workers(name, url, gpus=gpu_list, processes=processes, args=extra))
        _run_here(name, url, worker_index=worker_index, n_trials=n_trials, timeout=timeout, runs_dir=runs_dir)


def _run_here(
    name: str, url: str, *, worker_index: int, n_trials: int | None, timeout: float | None, runs_dir: Path
) -> None:
    from edgesearch.searcher.worker import run_worker

    summary = run_worker(
        name,
        url,
        worker_index=worker_index,
        max_trials=n_trials,
        timeout=timeout,
        runs_dir=runs_dir,
        on_trial_end=_print_outcome,
    )
    out.print(f"worker {worker_index} stopped: {summary.stopped_because}; ran {len(summary.outcomes)} trials")
    out.print(_summary_line(name, url))


@study_app.command("run")
def run_command(
    file: Annotated[Path, typer.Argument(help="Study file (YAML).")],
    storage: StorageOption = None,
    processes: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    runs_dir: RunsOption = Path("runs"),
) -> None:
    """Create (or load) the study in FILE and run local workers until it is complete."""
    with user_errors():
        from edgesearch.searcher.config import StudyConfig
        from edgesearch.searcher.storage import redact, resolve_storage_url
        from edgesearch.searcher.study import create_study

        config = StudyConfig.from_yaml(file)
        url = resolve_storage_url(storage, config.storage)
        create_study(config, url)
        out.print(f"study {config.name} in {redact(url)}: {config.n_trials} trials, {processes} process(es)")
        if processes > 1:
            code = _spawn_workers(config.name, url, gpus=None, processes=processes, args=["--runs-dir", str(runs_dir)])
            raise typer.Exit(code)
        _run_here(config.name, url, worker_index=0, n_trials=None, timeout=None, runs_dir=runs_dir)
    out.print(f"best trial: edgesearch study best {config.name} --storage '{redact(url)}'")


@study_app.command("list")
def list_command(storage: StorageOption = None) -> None:
    """List the studies in the storage with their progress."""
    with user_errors():
        import optuna

        from edgesearch.searcher.storage import open_storage, redact, resolve_storage_url

        url = resolve_storage_url(storage)
        summaries = optuna.get_all_study_summaries(open_storage(url), include_best_trial=True)
    if not summaries:
        out.print(f"no studies in {redact(url)}")
        return
    for s in summaries:
        best = f"{s.best_trial.value:.4f}" if s.best_trial is not None and s.best_trial.value is not None else "-"
        out.print(f"{s.study_name}\t{s.n_trials} trials\tbest {best}")


def _best_record(name: str, url: str) -> dict[str, Any]:
    from edgesearch.errors import UserError
    from edgesearch.searcher.study import load_study

    study, _ = load_study(name, url)
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(f"study {name!r} has no completed trial yet") from None
    return {
        "study": name,
        "trial": best.number,
        "value": best.value,
        "params": best.params,
        "checkpoint": best.user_attrs.get("best_checkpoint"),
        "run_dir": best.user_attrs.get("run_dir"),
    }


@study_app.command("best")
def best_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The best trial: value, parameters and checkpoint path."""
    with user_errors():
        from edgesearch.searcher.storage import resolve_storage_url

        record = _best_record(name, resolve_storage_url(storage))
    if as_json:
        out.print_json(json.dumps(record))
        return
    out.print(f"best trial {record['trial']}: value {record['value']:.4f}")
    for key, value in record["params"].items():
        out.print(f"  {key} = {value}")
    out.print(f"checkpoint: {record['checkpoint']}")


@study_app.command("show")
def show_command(name: Annotated[str, typer.Argument(help="Study name.")], storage: StorageOption = None) -> None:
    """A table of the study's trials, best first."""
    with user_errors():
        from rich.table import Table

        from edgesearch.searcher.storage import resolve_storage_url
        from edgesearch.searcher.study import load_study

        url = resolve_storage_url(storage)
        study, config = load_study(name, url)
        trials = study.get_trials(deepcopy=False)
    out.print(_summary_line(name, url))
    params = list(config.space)
    table = Table("trial", "state", config.metric, "epochs", *params)
    for t in sorted(trials, key=lambda t: (t.value is None, -(t.value or 0.0), t.number)):
        value = f"{t.value:.4f}" if t.value is not None else "-"
        epochs = str(len(t.intermediate_values))
        cells = [_fmt(t.params.get(p)) for p in params]
        table.add_row(str(t.number), t.state.name, value, epochs, *cells)
    out.print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
