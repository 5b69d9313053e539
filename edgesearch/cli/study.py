"""``edgesearch study ...``: thin commands over the searcher API."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgesearch.cli.console import EXIT_INTERRUPTED, err, fail, out, print_commands, user_errors
from edgesearch.cli.options import (
    ArtifactsOption,
    RunsOption,
    StorageOption,
    format_value,
    quiet_optuna,
)
from edgesearch.cli.study_best import best_command, confirm_command
from edgesearch.cli.worker import run_here, run_local

if TYPE_CHECKING:
    from collections.abc import Sequence

    from optuna.trial import FrozenTrial

    from edgesearch.searcher.study.disk import DiskUse

__all__ = ["app"]

app = typer.Typer(help="Create, run and inspect studies.", no_args_is_help=True)
app.command("best")(best_command)
app.command("confirm")(confirm_command)


class ExportFormat(str, Enum):
    csv = "csv"
    json = "json"


@app.command("create")
def create_command(
    file: Annotated[Path, typer.Argument(help="Study file (YAML).")], storage: StorageOption = None
) -> None:
    """Create a study from FILE in the storage (or load it when an identical one exists)."""
    with user_errors():
        from edgesearch.searcher.storage.urls import redact, resolve_storage_url
        from edgesearch.searcher.study.config import StudyConfig
        from edgesearch.searcher.study.studies import create_study

        config = StudyConfig.from_yaml(file)
        url = resolve_storage_url(storage, config.storage)
        quiet_optuna()
        _, created = create_study(config, url)
    verb = "created" if created else "already exists (same config)"
    out.print(f"study {config.name} {verb} in {redact(url)}", markup=False)
    print_commands(url, [f"run workers with: edgesearch worker {config.name}{{storage}}"])


@app.command("run")
def run_command(
    file: Annotated[Path, typer.Argument(help="Study file (YAML).")],
    storage: StorageOption = None,
    processes: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    runs_dir: RunsOption = Path("runs"),
    artifacts: ArtifactsOption = None,
) -> None:
    """Create (or load) the study in FILE and run local workers until it is complete."""
    with user_errors():
        from edgesearch.files import check_folder_path
        from edgesearch.searcher.storage.artifacts import check_artifact_dir, open_artifact_store, resolve_artifact_dir
        from edgesearch.searcher.storage.urls import redact, resolve_storage_url
        from edgesearch.searcher.study.config import StudyConfig
        from edgesearch.searcher.study.studies import create_study

        config = StudyConfig.from_yaml(file)
        url = resolve_storage_url(storage, config.storage)
        artifact_dir = resolve_artifact_dir(artifacts)
        check_folder_path(runs_dir, label="--runs-dir")
        # Check everything before writing anything: the artifact folder is created only once the
        # storage has taken the study, so a bad URL or an unreachable database leaves no folder behind.
        check_artifact_dir(artifact_dir)
        quiet_optuna()
        create_study(config, url)
        open_artifact_store(artifact_dir)
        out.print(f"study {config.name} in {redact(url)}: {config.n_trials} trials, {processes} process(es)")
        if processes > 1:
            from edgesearch.searcher.run.processes import worker_args

            code = run_local(
                config.name, url, slots=[None] * processes, args=worker_args(runs_dir=runs_dir, artifacts=artifacts)
            )
            if code:
                raise typer.Exit(code)
        else:
            run_here(
                config.name,
                url,
                n_trials=None,
                timeout=None,
                runs_dir=runs_dir,
                artifacts=artifacts,
            )
    pick = " --pick knee" if config.multi_objective else ""  # a front has no best trial without a pick
    print_commands(
        url,
        [
            f"best trial:  edgesearch study best {config.name}{{storage}}{pick}",
            f"report:      edgesearch study report {config.name}{{storage}} --out reports/{config.name}",
            f"dashboard:   edgesearch dashboard{{storage}} --artifacts {artifact_dir}",
        ],
    )


@app.command("list")
def list_command(storage: StorageOption = None) -> None:
    """List the studies in the storage with their progress."""
    with user_errors():
        from edgesearch.searcher.results.listing import study_summaries
        from edgesearch.searcher.storage.urls import redact, resolve_storage_url

        url = resolve_storage_url(storage)
        summaries = study_summaries(url)
    if not summaries:
        out.print(f"no studies in {redact(url)}")
        return
    for s in summaries:
        best = f"{s.best_value:.4f}" if s.best_value is not None else "-"
        out.print(f"{s.name}\t{s.n_trials} trials\tbest {best}")


@app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOption = None,
    artifacts: ArtifactsOption = None,
) -> None:
    """A table of the study's trials, best first, and the disk its runs and artifacts take."""
    with user_errors():
        from rich.console import Console
        from rich.table import Table

        from edgesearch.cli.study_progress import describe_eta, format_counts
        from edgesearch.searcher.storage.artifacts import resolve_artifact_dir
        from edgesearch.searcher.storage.urls import resolve_storage_url
        from edgesearch.searcher.study.best import front_trials
        from edgesearch.searcher.study.disk import disk_use
        from edgesearch.searcher.study.progress import epochs_done
        from edgesearch.searcher.study.studies import load_study, trial_counts

        url = resolve_storage_url(storage)
        study, config = load_study(name, url, read_only=True)
        trials = study.get_trials(deepcopy=False)
        disk = disk_use(study, resolve_artifact_dir(artifacts))
    counts = trial_counts(study, n_trials=config.n_trials)
    out.print(f"study {name}: {format_counts(counts, config.n_trials)}; {describe_eta(counts, config.n_trials)}")
    _print_running(trials, config.objectives[0])
    out.print(_disk_line(disk), markup=False)
    params = list(config.space)
    # A study of two objectives: a column per metric and one marking its Pareto front.
    front = {t.number for t in front_trials(study)} if config.multi_objective else set()
    marks = ["front"] if config.multi_objective else []
    table = Table("trial", "state", *config.objectives, *marks, "epochs", "MB", *params)
    for t in sorted(trials, key=lambda t: (t.values is None, [-v for v in t.values or []], t.number)):
        values = [f"{v:.4f}" for v in t.values] if t.values is not None else ["-"] * len(config.objectives)
        mark = ["yes" if t.number in front else ""] if config.multi_objective else []
        epochs = str(epochs_done(t))
        size = f"{disk.per_trial[t.number] / 1e6:.1f}" if t.number in disk.per_trial else "-"
        cells = [format_value(t.params.get(p)) for p in params]
        table.add_row(str(t.number), t.state.name, *values, *mark, epochs, size, *cells)
    # A pipe or log gets the whole table instead of columns squeezed to 80 characters.
    wide = out if out.is_terminal else Console(file=out.file, width=400, highlight=False, markup=False)
    wide.print(table)


def _disk_line(disk: DiskUse) -> str:
    """``disk: 352.4 MB: runs 349.1 MB (FOLDER), artifacts 3.3 MB (FOLDER); 58.7 MB per finished trial``."""
    folders = ", ".join(str(folder) for folder in disk.run_folders) or "none here"
    per = f"{disk.per_finished / 1e6:.1f} MB" if disk.per_finished is not None else "-"
    return (
        f"disk: {disk.total / 1e6:.1f} MB: runs {disk.runs / 1e6:.1f} MB ({folders}), artifacts "
        f"{disk.artifacts / 1e6:.1f} MB ({disk.artifact_folder}; files linked to the runs counted there); "
        f"{per} per finished trial"
    )


def _print_running(trials: Sequence[FrozenTrial], metric: str) -> None:
    """One line per RUNNING trial: how long it has run, its last epoch and value, seconds per epoch, ETA."""
    from datetime import datetime

    from optuna.trial import TrialState

    from edgesearch.formatting import format_duration
    from edgesearch.searcher.study.progress import running_trial

    now = datetime.now()  # naive local time, as Optuna stamps a trial's start
    for trial in sorted((t for t in trials if t.state == TrialState.RUNNING), key=lambda t: t.number):
        r = running_trial(trial, now)
        parts = [f"trial {r.number} running for {format_duration(r.elapsed_s)}"]
        if r.epoch is None:
            parts.append("no epoch finished yet")
        else:
            value = f" ({metric} {format_value(r.latest)})" if r.latest is not None else ""
            parts.append(f"epoch {r.epoch}/{format_value(r.epochs)}{value}")
        if r.seconds_per_epoch is not None:
            parts.append(f"{r.seconds_per_epoch:.1f} s/epoch")
        if r.eta_s is not None:
            parts.append(f"ETA {format_duration(r.eta_s)}")
        out.print(", ".join(parts), markup=False)


@app.command("export")
def export_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOption = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv: one row per trial; json: with histories.")] = (
        ExportFormat.csv
    ),
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write to this file (written whole, through a symlink) instead of stdout; - is stdout."
        ),
    ] = None,
) -> None:
    """Every trial of study NAME: state, value, parameters, epochs, paths (json adds histories)."""
    with user_errors():
        from edgesearch.searcher.results.export import export_text
        from edgesearch.searcher.storage.urls import resolve_storage_url
        from edgesearch.searcher.study.studies import load_study

        study, config = load_study(name, resolve_storage_url(storage), read_only=True)
        text = export_text(study, config, fmt=fmt.value)
        if out_file is None or str(out_file) == "-":
            typer.echo(text, nl=False)
            return
        from edgesearch.errors import UserError
        from edgesearch.files import write_text

        try:
            write_text(out_file, text)
        except UserError as exc:
            raise UserError(f"--out: {exc}") from None
    err.print(f"wrote {len(study.trials)} trials to {out_file}")


@app.command("enqueue")
def enqueue_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    assignments: Annotated[list[str], typer.Argument(help="Space paths and values: loss.edge_lambda=0.15 ...")],
    storage: StorageOption = None,
) -> None:
    """Queue a point of the search space to be tried next (values parsed as YAML scalars)."""
    with user_errors():
        from edgesearch.cli.study_progress import format_counts
        from edgesearch.searcher.storage.urls import resolve_storage_url
        from edgesearch.searcher.study.studies import enqueue_point, load_study, parse_assignments, trial_counts

        study, config = load_study(name, resolve_storage_url(storage))
        point = parse_assignments(assignments, config)
        enqueue_point(study, point)
        counts = trial_counts(study)
    shown = ", ".join(f"{key}={value}" for key, value in point.items())
    out.print(f"enqueued in study {name}: {shown}")
    if counts.finished >= config.n_trials:
        out.print(
            f"note: the study already holds {format_counts(counts, config.n_trials)}; "
            "no worker starts a new trial in a full study, so this point waits"
        )


@app.command("set")
def set_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    n_trials: Annotated[
        int,
        typer.Option(
            "--n-trials", min=1, help="Finished trials wanted; at least the study's finished + running trials."
        ),
    ],
    storage: StorageOption = None,
) -> None:
    """Change study NAME's n_trials, also while workers run it (they follow it at their next trial)."""
    with user_errors():
        from edgesearch.searcher.run.worker import set_n_trials
        from edgesearch.searcher.storage.urls import resolve_storage_url
        from edgesearch.searcher.study.studies import load_study

        url = resolve_storage_url(storage)
        quiet_optuna()
        study, _ = load_study(name, url)
        before = set_n_trials(study, n_trials)
    out.print(f"study {name}: n_trials {before} -> {n_trials}", markup=False)


@app.command("delete")
def delete_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Delete even while workers run its trials (they then stop).")
    ] = False,
) -> None:
    """Delete study NAME and all its trials from the storage (run folders and artifacts stay)."""
    with user_errors():
        from edgesearch.searcher.storage.urls import redact, resolve_storage_url
        from edgesearch.searcher.study.studies import delete_study, find_study

        url = resolve_storage_url(storage)
        study = find_study(name, url)
        n = len(study.get_trials(deepcopy=False))
        if not yes and not typer.confirm(f"delete study {name} and its {n} trials from {redact(url)}?"):
            out.print("nothing deleted")
            raise typer.Exit(1)
        delete_study(study, force=force)
    out.print(f"deleted study {name} ({n} trials) from {redact(url)}")


@app.command("report")
def report_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for report.html and its figures.")],
    storage: StorageOption = None,
    artifacts: ArtifactsOption = None,
) -> None:
    """Figures and an HTML report of study NAME (works while the study is still running)."""
    with user_errors():
        from edgesearch.searcher.results.report import build_report, check_report_folder
        from edgesearch.searcher.run.processes import terminate_as_interrupt
        from edgesearch.searcher.storage.artifacts import open_artifact_store, resolve_artifact_dir
        from edgesearch.searcher.storage.urls import resolve_storage_url
        from edgesearch.searcher.study.studies import load_study

        check_report_folder(out_dir, label="--out")
        study, config = load_study(name, resolve_storage_url(storage), read_only=True)
        folder = resolve_artifact_dir(artifacts)
        store = open_artifact_store(folder) if folder.is_dir() else None
        try:
            with terminate_as_interrupt():  # the report's temporary folder is removed on SIGTERM too
                path = build_report(study, config, out_dir, artifact_store=store)
        except KeyboardInterrupt:
            fail("interrupted; the report folder is as it was before", EXIT_INTERRUPTED)
    out.print(f"report: {path}")
