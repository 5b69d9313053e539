"""The report of a study, written as one folder: PNG figures, the data behind them (report.json),
one HTML page and the best trial's configuration.

The data comes from :mod:`~edgesearch.searcher.results.collect`, the figures from
:mod:`~edgesearch.searcher.results.figures` and the page from :mod:`~edgesearch.searcher.results.page`;
this module fetches the edge overlays of the best and the worst trial (the training report's
Figures 4-5), writes every file into a temporary folder and moves them in together.

The best trial's configuration is written as ``best-config.yaml``, a trainer file that
``edgesearch train`` takes as it is: the study's trainer config with that trial's parameters
applied, as the trial itself was built (:func:`~edgesearch.searcher.study.space.apply_params`).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.artifacts import download_artifact, get_all_artifact_meta
from optuna.trial import FrozenTrial

from edgesearch.errors import UserError
from edgesearch.files import check_folder_path
from edgesearch.searcher.results.collect import SCATTER_LIKE, collect
from edgesearch.searcher.results.figures import curves_figure, importances_figure, pareto_figure, scatter_figure
from edgesearch.searcher.results.page import render_html
from edgesearch.searcher.storage._optuna.handles import study_storage
from edgesearch.trainer.run_files import EDGES as OVERLAY

if TYPE_CHECKING:
    from edgesearch.searcher.storage._optuna.handles import ArtifactStore
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.trainer.config import TrainConfig

__all__ = ["BEST_CONFIG", "best_train_config", "build_report", "check_report_folder", "is_report_folder"]

_FIGURES = ("curves", *SCATTER_LIKE, "pareto", "importances")
BEST_CONFIG = "best-config.yaml"
"""The best trial's trainer config in the report folder, for ``edgesearch train``."""
_OWNED = {f"{name}.png" for name in _FIGURES} | {"best_edges.png", "worst_edges.png", "report.json", "report.html"}
_OWNED |= {BEST_CONFIG}


def _fetch_overlay(study: optuna.Study, trial: FrozenTrial, store: ArtifactStore | None, dest: Path) -> str | None:
    """Copy the trial's edge overlay to ``dest``: its artifact, else its run dir's file; says which."""
    if store is not None:
        metas = get_all_artifact_meta(trial, storage=study_storage(study))
        for meta in reversed([m for m in metas if m.filename == OVERLAY]):
            try:
                download_artifact(artifact_store=store, file_path=str(dest), artifact_id=meta.artifact_id)
                return f"artifact {meta.artifact_id}"
            except Exception:  # a missing or unreadable artifact: try the next source
                dest.unlink(missing_ok=True)
    run_dir = trial.user_attrs.get("run_dir")
    if isinstance(run_dir, str) and (Path(run_dir) / OVERLAY).is_file():
        shutil.copyfile(Path(run_dir) / OVERLAY, dest)
        return f"run dir {Path(run_dir) / OVERLAY}"
    return None


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return [_clean(v) for v in value] if isinstance(value, (list, tuple)) else value


def best_train_config(config: StudyConfig, trial: FrozenTrial) -> TrainConfig:
    """The study's trainer config with ``trial``'s parameters applied: the config the trial trained."""
    from edgesearch.searcher.study.space import apply_params

    source = f"study {config.name} trial {trial.number}"
    return apply_params(config.base_config, trial.params, source=source, stored=True)  # checked when it ran


def _best_config_text(config: StudyConfig, trial: FrozenTrial, command: str) -> str:
    """``best-config.yaml``: a comment saying what it is and how to train it, then the trainer config."""
    import yaml

    body = yaml.safe_dump(best_train_config(config, trial).model_dump(mode="json"), sort_keys=False)
    return (
        f"# Study {config.name}, trial {trial.number}: the study's trainer config with this trial's parameters "
        f"applied.\n# Train it with: {command}\n{body}"
    )


def _write(
    study: optuna.Study,
    config: StudyConfig,
    data: dict[str, Any],
    folder: Path,
    store: ArtifactStore | None,
    out_dir: Path,
) -> None:
    figures = {"curves": curves_figure(data["curves"])}
    for name in SCATTER_LIKE:
        figures[name] = scatter_figure(data[name], title=f"{data[name]['y_label']} vs {data[name]['x_label']}")
    figures["pareto"] = pareto_figure(data["pareto"])
    if "values" in data["importances"]:
        figures["importances"] = importances_figure(data["importances"]["values"])
    for name, fig in figures.items():
        fig.savefig(folder / f"{name}.png")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for key in ("best", "worst"):
        info = data[f"{key}_trial"]
        if info is not None:
            source = _fetch_overlay(study, trials[info["number"]], store, folder / f"{key}_edges.png")
            info.update(overlay=f"{key}_edges.png" if source else None, overlay_source=source)
    best = data["best_trial"]
    data["best_config"] = None
    if best is not None:
        where = shlex.quote(str(out_dir / BEST_CONFIG))
        command = f"edgesearch train {where} --out {shlex.quote(f'runs/{config.name}-best')}"
        text = _best_config_text(config, trials[best["number"]], command)
        (folder / BEST_CONFIG).write_text(text, encoding="utf-8")
        data["best_config"] = {"file": BEST_CONFIG, "command": command}
    (folder / "report.json").write_text(json.dumps(_clean(data), indent=2) + "\n")
    (folder / "report.html").write_text(render_html(data), encoding="utf-8")


def _publish(folder: Path, out_dir: Path) -> None:
    """Move the finished files into ``out_dir``, report.html last, then drop stale report files."""
    if not out_dir.exists():
        os.replace(folder, out_dir)
        return
    names = set(os.listdir(folder))
    for name in [*sorted(names - {"report.html"}), "report.html"]:
        os.replace(folder / name, out_dir / name)
    for stale in _OWNED - names:
        (out_dir / stale).unlink(missing_ok=True)


def is_report_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier report: its report.json, an object naming a study and a time."""
    try:
        data = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and isinstance(data.get("study"), dict)
        and isinstance(data["study"].get("name"), str)
        and isinstance(data.get("generated_at"), str)
    )


def check_report_folder(out_dir: Path, *, label: str = "report:") -> None:
    """Raise UserError unless ``out_dir`` is new (and can be made), empty or an earlier report;
    ``label`` names the option."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{label} {out_dir} is a file; expected a folder for the report (e.g. report/)")
    check_folder_path(out_dir, label=label)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_report_folder(out_dir):
        raise UserError(
            f"{label} {out_dir}: folder is not empty and holds no earlier report (no report.json of a study "
            "report); choose a new or empty folder"
        )


def build_report(
    study: optuna.Study, config: StudyConfig, out_dir: Path, *, artifact_store: ArtifactStore | None = None
) -> Path:
    """Write the report folder (report.html, figures, report.json, best-config.yaml) and return report.html's path.

    The files are built in a temporary folder beside ``out_dir`` and moved in only when all are
    written, so a failure leaves the previous report as it was. ``out_dir`` must be new, empty or
    an earlier report (:func:`is_report_folder`): its report files are replaced, other files there
    are left alone. A folder of other files is refused, as is a path that cannot be a folder.
    """
    out_dir = Path(out_dir)
    check_report_folder(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"report: cannot create folder {out_dir.parent}: {exc.strerror}") from None
    folder = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    folder.chmod(0o755)  # mkdtemp's 0700 would become the report folder's mode
    try:
        _write(study, config, collect(study, config), folder, artifact_store, out_dir)
        _publish(folder, out_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out_dir / "report.html"
