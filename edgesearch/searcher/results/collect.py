"""The data of a study's report: everything its figures and page show, as plain JSON-able dicts (report.json).

A report is regenerated often while a study runs, so :func:`collect` reads whatever the storage holds
right now and copes with RUNNING, WAITING and FAIL trials, trials with no value and half-recorded
histories.

A study of two objectives (``metric: [val_iou, val_boundary_iou]``) is read by its first metric
where one number is wanted (curves, scatters, findings, importances, the worst trial); its best
trial is the knee of its Pareto front (:mod:`~edgesearch.searcher.study.front`), and the trade-off data
names the knee beside the best point of each metric: the three ``--pick`` points.
"""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgesearch.formatting import format_value
from edgesearch.searcher.results.findings import Outcome, confirmed_finding, findings, last_epoch_finding
from edgesearch.searcher.study.choice import choice_record, study_choice
from edgesearch.searcher.study.confirm import Confirmed, confirmed, ranking_holds
from edgesearch.searcher.study.front import KNEE, knee, pareto_front, pick_point

if TYPE_CHECKING:
    from edgesearch.searcher.study.config import StudyConfig

__all__ = ["SCATTERS", "SCATTER_LIKE", "STATES", "collect"]

SCATTERS = {
    "iou_vs_lambda": ("loss.edge_lambda", "edge lambda"),
    "iou_vs_edge_width": ("loss.edge_width", "edge width (px)"),
    "iou_vs_round_ratio": ("loss.round_ratio", "round_ratio"),
}
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
SCATTER_LIKE = (*SCATTERS, "edge_corr_vs_iou")
"""The plots of one point per trial: each has its figure (``NAME.png``) and its dict in the data."""


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
    data["confirmed"] = _confirmed(study, config)
    rows = [Confirmed(**{**row, "values": tuple(row["values"])}) for row in data["confirmed"]["rows"]]
    # The best trial of one metric is the choice of `study best`'s default rule, with how sure it is.
    one_metric = bool(complete) and not config.multi_objective
    data["choice"] = choice_record(study_choice(study, config, rows=rows)) if one_metric else None
    says = data["choice"]["says"] if data["choice"] else None
    data["findings"] = findings(outcomes, metric=metric, importances=data["importances"].get("values"), chosen=says)
    line = confirmed_finding(rows, metric=metric, holds=data["confirmed"]["ranking_holds"])
    if line is not None:
        data["findings"].append(line)
    top, why_best, why_worst = (complete[0] if complete else None), "", ""
    if data["choice"]:
        top = next(t for t in complete if t.number == data["choice"]["trial"])
    if config.multi_objective:
        top = next((t for t in complete if t.number == data["pareto"][KNEE]), None)
        why_best, why_worst = "the knee of the Pareto front (--pick knee)", f"the lowest {metric}"
        data["findings"].insert(1, _front_finding(data["pareto"], len(complete)))
    warning = last_epoch_finding(top.number, _series(top, metric), metric=metric) if top is not None else None
    if warning is not None:  # right after the lines that name the best trial
        data["findings"].insert(2 if config.multi_objective else 1, warning)
    data["best_trial"] = _trial_info(top, config.objectives, why_best)
    if data["best_trial"] is not None:
        data["best_trial"]["sure"] = says
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
