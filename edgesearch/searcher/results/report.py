"""The report of a study: PNG figures, the data behind them (report.json) and one HTML page.

A report is regenerated often while a study runs, so it reads whatever the storage holds right
now and copes with RUNNING, WAITING and FAIL trials, trials with no value and half-recorded
histories. It reproduces the training report's figures for every trial at once: validation
curves coloured by lambda (its Figures 1-3), the metric against lambda / edge width /
round_ratio with BCE and focal apart, edge correlation against IoU, and the edge overlays of
the best and the worst trial (its Figures 4-5). Each figure is a pure ``data -> Figure``
function over the same dicts that report.json holds, so the plotted data can be checked.

A study of two objectives (``metric: [val_iou, val_boundary_iou]``) is read by its first metric
where one number is wanted (curves, scatters, findings, importances, the worst trial); its best
trial is the knee of its Pareto front (:mod:`~edgesearch.searcher.study.front`), and the trade-off figure
marks the knee beside the best point of each metric: the three ``--pick`` points.

The best trial's configuration is written as ``best-config.yaml``, a trainer file that
``edgesearch train`` takes as it is: the study's trainer config with that trial's parameters
applied, as the trial itself was built (:func:`~edgesearch.searcher.study.space.apply_params`).
"""

from __future__ import annotations

import html
import json
import math
import os
import shlex
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from optuna.artifacts import download_artifact, get_all_artifact_meta
from optuna.trial import FrozenTrial, TrialState

from edgesearch.errors import UserError
from edgesearch.files import check_folder_path
from edgesearch.formatting import format_value
from edgesearch.searcher.results.findings import (
    MIN_FOR_IMPORTANCE,
    Outcome,
    confirmed_finding,
    findings,
    last_epoch_finding,
)
from edgesearch.searcher.storage._optuna.handles import study_storage
from edgesearch.searcher.study.confirm import Confirmed, confirmed, ranking_holds
from edgesearch.searcher.study.front import KNEE, knee, pareto_front, pick_point
from edgesearch.trainer.run_files import EDGES as OVERLAY

if TYPE_CHECKING:
    from matplotlib.typing import LineStyleType

    from edgesearch.searcher.storage._optuna.handles import ArtifactStore
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.trainer.config import TrainConfig

__all__ = [
    "BEST_CONFIG",
    "best_train_config",
    "build_report",
    "check_report_folder",
    "collect",
    "curves_figure",
    "importances_figure",
    "is_report_folder",
    "pareto_figure",
    "pareto_front",
    "scatter_figure",
]
SCATTERS = {
    "iou_vs_lambda": ("loss.edge_lambda", "edge lambda"),
    "iou_vs_edge_width": ("loss.edge_width", "edge width (px)"),
    "iou_vs_round_ratio": ("loss.round_ratio", "round_ratio"),
}
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
_SCATTER_LIKE = (*SCATTERS, "edge_corr_vs_iou")
_FIGURES = ("curves", *_SCATTER_LIKE, "pareto", "importances")
BEST_CONFIG = "best-config.yaml"
"""The best trial's trainer config in the report folder, for ``edgesearch train``."""
_OWNED = {f"{name}.png" for name in _FIGURES} | {"best_edges.png", "worst_edges.png", "report.json", "report.html"}
_OWNED |= {BEST_CONFIG}
_KIND_STYLE = {"bce": ("o", "tab:blue"), "focal": ("^", "tab:orange")}
_LINE_STYLE: dict[str, tuple[LineStyleType, float]] = {"COMPLETE": ("-", 1.6), "PRUNED": ("--", 0.9)}
_OTHER_LINE: tuple[LineStyleType, float] = (":", 0.9)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _lookup(node: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _setting(trial: FrozenTrial, path: str, base: dict[str, Any]) -> Any:
    """A TrainConfig value of the trial: its stored resolved config, else its params, else the base."""
    value = _lookup(trial.user_attrs.get("config"), path)
    if value is None:
        value = trial.params.get(path, _lookup(base, path))
    return value


def _series(trial: FrozenTrial, metric: str) -> dict[int, float]:
    """Metric per epoch: the history (complete also for resumed trials) plus the reported values."""
    out: dict[int, float] = {}
    for row in trial.user_attrs.get("history") or []:
        value = _finite(row.get(metric)) if isinstance(row, dict) else None
        if value is not None and isinstance(row.get("epoch"), int):
            out[row["epoch"]] = value
    out.update({step: v for step, raw in trial.intermediate_values.items() if (v := _finite(raw)) is not None})
    return dict(sorted(out.items()))


def _best_value(trial: FrozenTrial, series: dict[int, float]) -> float | None:
    if trial.state == TrialState.COMPLETE and _first_value(trial) is not None:
        return _first_value(trial)
    return max(series.values()) if series else None


def _best_row(trial: FrozenTrial, metric: str) -> dict[str, Any] | None:
    rows = [r for r in trial.user_attrs.get("history") or [] if isinstance(r, dict) and _finite(r.get(metric))]
    return max(rows, key=lambda r: float(r[metric])) if rows else None


def _importances(study: optuna.Study, n_complete: int) -> dict[str, Any]:
    """Optuna's default parameter importances (for the first objective of a study of two), or
    ``{"unavailable": reason}``: never an error."""
    if n_complete < 2:
        return {"unavailable": f"needs at least 2 complete trials; the study has {n_complete}"}
    # Optuna asks a study of two objectives which number to explain.
    target = (lambda t: float(t.values[0])) if len(study.directions) > 1 else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            values = optuna.importance.get_param_importances(study, target=target)
        except Exception as exc:  # any evaluator limitation becomes a one-line reason in the report
            return {"unavailable": " ".join(f"{type(exc).__name__}: {exc}".split())}
    equal = [str(w.message) for w in caught if "will be equal" in str(w.message)]
    if equal:  # equal-by-construction importances carry no information
        return {"unavailable": " ".join(equal[0].split())}
    if not values:
        return {"unavailable": "no searched parameter appears in the complete trials"}
    return {"values": {name: float(v) for name, v in values.items()}}


def _trial_info(trial: FrozenTrial | None, objectives: tuple[str, ...], why: str = "") -> dict[str, Any] | None:
    """The trial's number, value (``values`` per metric with two objectives), params and paths;
    ``why`` says how it was chosen, when that is not plain."""
    if trial is None:
        return None
    info: dict[str, Any] = {"number": trial.number, "params": trial.params, "why": why}
    if len(objectives) > 1:
        info["values"] = {metric: _finite(v) for metric, v in zip(objectives, trial.values or [], strict=False)}
    else:
        info["value"] = _first_value(trial)
    return info | {key: trial.user_attrs.get(key) for key in ("config", "run_dir", "best_checkpoint")}


def _point(trial: FrozenTrial, base: dict[str, Any], *, x: Any, y: float) -> dict[str, Any]:
    kind = _setting(trial, "loss.kind", base)
    return {"number": trial.number, "state": trial.state.name, "loss_kind": kind, "x": x, "y": y}


def _first_value(trial: FrozenTrial) -> float | None:
    """The trial's value, or its first objective's in a study of two (``trial.value`` raises there)."""
    return _finite(trial.values[0]) if trial.values else None


def _pareto(
    finished: list[tuple[FrozenTrial, float]], metric: str, base: dict[str, Any], *, two_objectives: bool
) -> dict[str, Any]:
    """val IoU against val Boundary IoU of each complete trial, at its best epoch by the study metric
    (with two objectives: its values, read at that epoch), the front and its ``--pick`` points.

    The knee is given for a study of two objectives only: elsewhere the points are not what the
    study maximised, and no command picks it.
    """
    points: list[dict[str, Any]] = []
    for t, _ in finished:
        if two_objectives:
            iou, biou = (_finite(v) for v in t.values or (None, None))
        else:
            row = _best_row(t, metric) or {}
            iou, biou = _finite(row.get("val_iou")), _finite(row.get("val_boundary_iou"))
        if t.state == TrialState.COMPLETE and iou is not None and biou is not None:
            lam = _finite(_setting(t, "loss.edge_lambda", base))
            points.append({"number": t.number, "lambda": lam, "x": iou, "y": biou})
    coordinates = [(p["x"], p["y"]) for p in points]
    on_front = set(pareto_front(coordinates))
    for index, point in enumerate(points):
        point["front"] = index in on_front
    axes = ("val_iou", "val_boundary_iou")
    picks: dict[str, Any] = {
        key: points[pick_point(coordinates, axes, axis)]["number"] if points else None
        for key, axis in (("best_iou", "val_iou"), ("best_boundary_iou", "val_boundary_iou"))
    }
    picks[KNEE] = points[knee(coordinates)]["number"] if points and two_objectives else None
    return {"x_label": "val_iou", "y_label": "val_boundary_iou", "points": points, **picks}


def _confirmed(study: optuna.Study, config: StudyConfig) -> dict[str, Any]:
    """The re-trainings ``study confirm`` queued (none for a study of two objectives, which cannot have any)."""
    rows = [] if config.multi_objective else confirmed(study)
    return {
        "rows": [{"trial": r.trial, "original": r.original, "values": list(r.values), "seeds": r.seeds} for r in rows],
        "ranking_holds": ranking_holds(rows),
    }


def collect(study: optuna.Study, config: StudyConfig) -> dict[str, Any]:
    """Everything the report shows, as plain JSON-able data (the body of report.json).

    Curves: every trial with at least one epoch, any state. Scatter points: COMPLETE and PRUNED
    trials (a pruned trial's best is the best epoch it reached). Settings come from each trial's
    resolved config, so a parameter fixed in the base config is read the same way as a searched one.
    """
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    metric, base = config.objectives[0], config.base_config.model_dump(mode="json")
    study_metric: str | list[str] = list(config.objectives) if config.multi_objective else metric
    counts = dict.fromkeys(STATES, 0)
    curves: list[dict[str, Any]] = []
    finished: list[tuple[FrozenTrial, float]] = []
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
        series = _series(t, metric)
        if series:
            lam = _finite(_setting(t, "loss.edge_lambda", base))
            curves.append({"number": t.number, "state": t.state.name, "lambda": lam, "epochs": list(series)})
            curves[-1]["values"] = list(series.values())
        best = _best_value(t, series)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and best is not None:
            finished.append((t, best))
    counts["finished"] = counts["COMPLETE"] + counts["PRUNED"]
    counts["n_trials"] = config.n_trials
    data: dict[str, Any] = {
        # A list for a study of two objectives, as its study file names them.
        "study": {"name": study.study_name, "metric": study_metric, "n_trials": config.n_trials},
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "running": counts["RUNNING"] + counts["WAITING"] > 0 or counts["finished"] < config.n_trials,
        "counts": counts,
        "curves": {"metric": metric, "n_curves": len(curves), "trials": curves},
    }
    for name, (path, label) in SCATTERS.items():
        points = [_point(t, base, x=x, y=best) for t, best in finished if (x := _setting(t, path, base)) is not None]
        data[name] = {"x_label": label, "y_label": f"best {metric}", "points": points}
    corr = []
    for t, _ in finished:
        row = _best_row(t, metric) or {}
        iou, edge = _finite(row.get("val_iou")), _finite(row.get("val_edge_corr"))
        if iou is not None and edge is not None:
            corr.append(_point(t, base, x=iou, y=edge))
    data["edge_corr_vs_iou"] = {"x_label": "val_iou", "y_label": "val_edge_corr", "points": corr}
    data["pareto"] = _pareto(finished, metric, base, two_objectives=config.multi_objective)
    complete = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and _first_value(t) is not None),
        key=lambda t: (-(_first_value(t) or 0.0), t.number),
    )
    data["importances"] = _importances(study, len(complete)) | {"n_complete": len(complete)}
    outcomes = [
        Outcome(
            number=t.number,
            value=_first_value(t) or 0.0,
            edge_lambda=_finite(_setting(t, "loss.edge_lambda", base)),
            loss_kind=_setting(t, "loss.kind", base),
            edge_width=_setting(t, "loss.edge_width", base),
            edge_profile=_setting(t, "loss.edge_profile", base),
        )
        for t in complete
    ]
    data["findings"] = findings(outcomes, metric=metric, importances=data["importances"].get("values"))
    data["confirmed"] = _confirmed(study, config)
    line = confirmed_finding(
        [Confirmed(**{**row, "values": tuple(row["values"])}) for row in data["confirmed"]["rows"]],
        metric=metric,
        holds=data["confirmed"]["ranking_holds"],
    )
    if line is not None:
        data["findings"].append(line)
    top, why_best, why_worst = (complete[0] if complete else None), "", ""
    if config.multi_objective:
        top = next((t for t in complete if t.number == data["pareto"][KNEE]), None)
        why_best, why_worst = "the knee of the Pareto front (--pick knee)", f"the lowest {metric}"
        data["findings"].insert(1, _front_finding(data["pareto"], len(complete)))
    warning = last_epoch_finding(top.number, _series(top, metric), metric=metric) if top is not None else None
    if warning is not None:  # right after the lines that name the best trial
        data["findings"].insert(2 if config.multi_objective else 1, warning)
    data["best_trial"] = _trial_info(top, config.objectives, why_best)
    data["worst_trial"] = _trial_info(complete[-1] if complete else None, config.objectives, why_worst)
    data["failures"] = [
        {"number": t.number, "reason": t.user_attrs.get("fail_reason")} for t in trials if t.state == TrialState.FAIL
    ]
    return data


def _front_finding(pareto: dict[str, Any], n_complete: int) -> str:
    """A sentence on a two-objective study's front: its size and the three points ``--pick`` chooses."""
    front = sorted((p for p in pareto["points"] if p["front"]), key=lambda p: p["number"])
    if not front:
        return "Pareto front: no complete trial yet."
    by_number = {p["number"]: p for p in front}

    def point(number: int) -> str:
        p = by_number[number]
        return f"trial {number} (val_iou {format_value(p['x'])}, val_boundary_iou {format_value(p['y'])})"

    return (
        f"Pareto front of val_iou and val_boundary_iou: {len(front)} of {n_complete} complete trials; "
        f"knee {point(pareto[KNEE])}; best val_iou {point(pareto['best_iou'])}; "
        f"best val_boundary_iou {point(pareto['best_boundary_iou'])}."
    )


# ---------------------------------------------------------------------------------------------
# Figures: pure functions of the report data.


def _norm(values: list[float]) -> Normalize:
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    return Normalize(low - 0.05, high + 0.05) if low == high else Normalize(low, high)


def _finish(fig: Figure, *, empty: str = "", integer_x: bool = False, **labels: str) -> Figure:
    ax = fig.axes[0]
    if integer_x:  # epochs, pixel widths
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if empty:
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set(**labels)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def curves_figure(curves: dict[str, Any]) -> Figure:
    """The metric per epoch of every trial, one line each: colour = lambda, style = state."""
    fig = Figure(figsize=(9, 5), dpi=100)
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    norm = _norm([c["lambda"] for c in curves["trials"] if c["lambda"] is not None])
    for c in curves["trials"]:
        style, width = _LINE_STYLE.get(c["state"], _OTHER_LINE)
        colour = cmap(norm(c["lambda"])) if c["lambda"] is not None else "grey"
        ax.plot(c["epochs"], c["values"], linestyle=style, linewidth=width, color=colour, marker=".", markersize=4)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="edge lambda")
    styles = {**_LINE_STYLE, "RUNNING / FAIL": _OTHER_LINE}
    ax.legend(
        handles=[Line2D([], [], color="k", linestyle=s, linewidth=w, label=k.lower()) for k, (s, w) in styles.items()]
    )
    metric = curves["metric"]
    empty = "" if curves["trials"] else "no epochs reported yet"
    labels = {"xlabel": "epoch", "ylabel": metric, "title": f"{metric} per epoch, every trial"}
    return _finish(fig, empty=empty, integer_x=True, **labels)


def scatter_figure(plot: dict[str, Any], *, title: str = "") -> Figure:
    """One point per trial, one marker and colour per loss kind; pruned trials hollow."""
    fig = Figure(figsize=(6.5, 4.5), dpi=100)
    ax = fig.subplots()
    points = plot["points"]
    for kind in sorted({str(p["loss_kind"]) for p in points}):
        marker, colour = _KIND_STYLE.get(kind, ("s", "tab:grey"))
        for pruned in (False, True):
            chosen = [p for p in points if str(p["loss_kind"]) == kind and (p["state"] == "PRUNED") == pruned]
            if chosen:
                face, label = ("none", f"{kind}, pruned") if pruned else (colour, kind)
                xs, ys = [p["x"] for p in chosen], [p["y"] for p in chosen]
                ax.scatter(xs, ys, marker=marker, facecolors=face, edgecolors=colour, label=label, s=36)
    if points:
        ax.legend(fontsize=8)
    empty = "" if points else "no finished trials yet"
    integer_x = bool(points) and all(isinstance(p["x"], int) for p in points)
    return _finish(fig, empty=empty, integer_x=integer_x, xlabel=plot["x_label"], ylabel=plot["y_label"], title=title)


def pareto_figure(plot: dict[str, Any]) -> Figure:
    """Complete trials by val IoU and val Boundary IoU, coloured by lambda; the front joined by a line,
    the best trial of each metric marked, and the knee of a study of two objectives."""
    fig = Figure(figsize=(6.5, 4.5), dpi=100)
    ax = fig.subplots()
    points = plot["points"]
    cmap = colormaps["viridis"]
    norm = _norm([p["lambda"] for p in points if p["lambda"] is not None])
    colours = [cmap(norm(p["lambda"])) if p["lambda"] is not None else "grey" for p in points]
    ax.scatter([p["x"] for p in points], [p["y"] for p in points], c=colours, s=36, edgecolors="k", linewidths=0.4)
    front = sorted((p for p in points if p["front"]), key=lambda p: p["x"])
    if front:
        ax.plot([p["x"] for p in front], [p["y"] for p in front], color="tab:red", linewidth=1, label="Pareto front")
    by_number = {p["number"]: p for p in points}
    marks = (("best_iou", "*", "best val_iou"), ("best_boundary_iou", "D", "best val_boundary_iou"), (KNEE, "s", KNEE))
    for key, marker, label in marks:
        best = by_number.get(plot.get(key))
        if best is not None:
            ax.scatter(
                [best["x"]], [best["y"]], marker=marker, s=160, facecolors="none", edgecolors="tab:red", label=label
            )
            ax.annotate(
                f"#{best['number']}", (best["x"], best["y"]), textcoords="offset points", xytext=(6, 6), fontsize=8
            )
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="edge lambda")
    if points:
        ax.legend(fontsize=8)
    empty = "" if points else "no complete trials yet"
    title = "the trade-off: val_boundary_iou vs val_iou"
    return _finish(fig, empty=empty, xlabel=plot["x_label"], ylabel=plot["y_label"], title=title)


def importances_figure(values: dict[str, float]) -> Figure:
    """Horizontal bars, the most important parameter on top."""
    fig = Figure(figsize=(6.5, 0.8 + 0.45 * max(len(values), 1)), dpi=100)
    ranked = sorted(values.items(), key=lambda item: item[1])
    fig.subplots().barh([name for name, _ in ranked], [value for _, value in ranked], color="tab:green")
    return _finish(fig, xlabel="importance (Optuna's default evaluator)")


# ---------------------------------------------------------------------------------------------
# Files: overlays, HTML, publication.


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


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
    "img{max-width:100%;border:1px solid #eee}pre{background:#f6f6f6;padding:.6em;overflow:auto}"
    ".note{background:#fff4ce;border:1px solid #e0c060;padding:.5em}.muted{color:#777}figure{margin:1em 0}"
)


def _e(value: Any) -> str:
    return html.escape(format_value(value))


def _table(rows: list[tuple[Any, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{_e(src)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _trial_section(title: str, info: dict[str, Any] | None) -> str:
    if info is None:
        return f'<h2>{_e(title)}</h2><p class="muted">no complete trial yet</p>'
    values = list(info["values"].items()) if "values" in info else [("value", info["value"])]
    chosen = [("chosen as", info["why"])] if info.get("why") else []
    rows = [("trial", info["number"]), *chosen, *values, ("checkpoint", info["best_checkpoint"])]
    parts = [f"<h2>{_e(title)}</h2>", _table([*rows, ("run dir", info["run_dir"])])]
    parts.append("<h3>params</h3>" + _table(sorted(info["params"].items())))
    if info.get("overlay"):
        parts.append(_figure(info["overlay"], f"edge overlay of trial {info['number']} (true and predicted edges)"))
    else:
        parts.append('<p class="muted">no edge overlay stored</p>')
    config = json.dumps(info["config"], indent=2, sort_keys=True)
    return "".join(parts) + f"<details><summary>resolved config</summary><pre>{_e(config)}</pre></details>"


def _confirmed_section(data: dict[str, Any], metric: str) -> str:
    """The "Confirmed" table: each re-trained configuration's fresh-seed mean, spread and minimum."""
    rows = [Confirmed(**{**row, "values": tuple(row["values"])}) for row in data["rows"]]
    if not rows:
        return ""
    by_mean = sorted((r for r in rows if r.mean is not None), key=lambda r: (-(r.mean or 0.0), rows.index(r)))
    rank = {r.trial: i + 1 for i, r in enumerate(by_mean)}
    head = "".join(
        f"<th>{h}</th>"
        for h in ("trial", f"{_e(metric)} in the search", "seeds done", "mean", "sd", "min", "rank: search → mean")
    )
    cells = [
        (
            r.trial,
            format_value(r.original),
            f"{r.n} / {r.seeds}",
            format_value(r.mean) if r.mean is not None else "-",
            format_value(r.sd) if r.sd is not None else "-",
            format_value(r.min) if r.min is not None else "-",
            f"{i + 1} → {rank.get(r.trial, '-')}",
        )
        for i, r in enumerate(rows)
    ]
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in cells)
    holds = {
        True: "The search's ranking holds.",
        False: "The search's ranking does not hold.",
        None: "The ranking is not settled until every re-training has finished.",
    }[data["ranking_holds"]]
    return (
        f"<h2>Confirmed</h2><p>The best configurations re-trained with fresh seeds (the search's own run not "
        f"counted). {holds}</p><table><tr>{head}</tr>{body}</table>"
    )


def _html(data: dict[str, Any]) -> str:
    study, counts, metric = data["study"], data["counts"], data["curves"]["metric"]
    objectives = study["metric"] if isinstance(study["metric"], list) else None
    maximised = f"metrics {_e(' and '.join(objectives))} (two objectives)" if objectives else f"metric {_e(metric)}"
    body = [f"<h1>{_e(study['name'])}</h1>", f"<p>generated {_e(data['generated_at'])}; {maximised}</p>"]
    if data["running"]:
        status = "still running" if counts["RUNNING"] + counts["WAITING"] else "not finished"
        body.append(
            f'<p class="note">Study {status}: {counts["finished"]} of {counts["n_trials"]} trials finished, '
            f"{counts['RUNNING']} running, {counts['WAITING']} waiting. This report is a snapshot.</p>"
        )
    body.append("<h2>Findings</h2><ul>" + "".join(f"<li>{_e(line)}</li>" for line in data["findings"]) + "</ul>")
    rows = [*((state, counts[state]) for state in STATES), ("finished", f"{counts['finished']} / {counts['n_trials']}")]
    body.append("<h2>Trials</h2>" + _table(rows))
    body.append(_confirmed_section(data["confirmed"], metric))
    body.extend(
        f"<p>trial {f['number']} failed: {_e(f['reason'] or 'no reason recorded')}</p>" for f in data["failures"]
    )
    body.append(_trial_section("Best trial", data["best_trial"]))
    if data.get("best_config"):
        body.append(
            f"<h3>train this configuration again</h3><p>{_e(data['best_config']['file'])}: the study's trainer "
            f"config with this trial's parameters applied; train it with</p><pre>{_e(data['best_config']['command'])}"
            "</pre>"
        )
    body.append(_trial_section("Worst complete trial", data["worst_trial"]))
    body.append("<h2>Figures</h2>")
    n_curves = data["curves"]["n_curves"]
    body.append(_figure("curves.png", f"{metric} per epoch of {n_curves} trials; solid complete, dashed pruned"))
    body.extend(_figure(f"{n}.png", f"{data[n]['y_label']} vs {data[n]['x_label']}") for n in _SCATTER_LIKE)
    pareto = data["pareto"]
    on_front = sorted(p["number"] for p in pareto["points"] if p["front"])
    body.append(
        _figure(
            "pareto.png",
            f"val_boundary_iou vs val_iou of {len(pareto['points'])} complete trials, colour = edge lambda; "
            f"on the Pareto front: trials {', '.join(map(str, on_front)) or '-'}; "
            f"best val_iou: trial {format_value(pareto['best_iou'])}, "
            f"best val_boundary_iou: trial {format_value(pareto['best_boundary_iou'])}"
            + (f", knee: trial {format_value(pareto[KNEE])}" if objectives else ""),
        )
    )
    if "values" in data["importances"]:
        n = data["importances"]["n_complete"]
        rough = f" (rough: fewer than {MIN_FOR_IMPORTANCE} say little)" if n < MIN_FOR_IMPORTANCE else ""
        body.append(_figure("importances.png", f"parameter importances from {n} complete trials{rough}"))
    else:
        body.append(f'<p class="muted">parameter importances unavailable: {_e(data["importances"]["unavailable"])}</p>')
    head = f'<meta charset="utf-8"><title>{_e(study["name"])} report</title><style>{_CSS}</style>'
    content = "\n".join(body)
    return f"<!DOCTYPE html>\n<html><head>{head}</head><body>\n{content}\n</body></html>\n"


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
    for name in _SCATTER_LIKE:
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
    (folder / "report.html").write_text(_html(data), encoding="utf-8")


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
