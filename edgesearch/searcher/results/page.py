"""The HTML page of a study's report (report.html): one self-contained page over the report data.

It shows the findings, the trial counts, the confirmed re-trainings, the best and the worst trial
(with their edge overlays and resolved configs) and the figures, which it names by file
(``curves.png``, ...) beside it in the report folder.
"""

from __future__ import annotations

import html
import json
from typing import Any

from edgesearch.formatting import format_value
from edgesearch.searcher.results.collect import SCATTER_LIKE, STATES
from edgesearch.searcher.results.findings import MIN_FOR_IMPORTANCE
from edgesearch.searcher.study.confirm import Confirmed
from edgesearch.searcher.study.front import KNEE

__all__ = ["render_html"]


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
    sure = [("how sure", info["sure"])] if info.get("sure") else []
    rows = [("trial", info["number"]), *chosen, *sure, *values, ("checkpoint", info["best_checkpoint"])]
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


def render_html(data: dict[str, Any]) -> str:
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
    body.extend(_figure(f"{n}.png", f"{data[n]['y_label']} vs {data[n]['x_label']}") for n in SCATTER_LIKE)
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
