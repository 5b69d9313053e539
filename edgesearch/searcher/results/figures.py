"""The figures of a study's report: pure ``data -> Figure`` functions over the dicts that report.json holds.

They reproduce the training report's figures for every trial at once: validation curves coloured by
lambda (its Figures 1-3), the metric against lambda / edge width / round_ratio with BCE and focal
apart, edge correlation against IoU, the trade-off of val IoU and val Boundary IoU with its Pareto
front, and the parameter importances. Being functions of the data, the plotted numbers can be checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from edgesearch.searcher.study.front import KNEE

if TYPE_CHECKING:
    from matplotlib.typing import LineStyleType

__all__ = ["curves_figure", "importances_figure", "pareto_figure", "scatter_figure"]

_KIND_STYLE = {"bce": ("o", "tab:blue"), "focal": ("^", "tab:orange")}
_LINE_STYLE: dict[str, tuple[LineStyleType, float]] = {"COMPLETE": ("-", 1.6), "PRUNED": ("--", 0.9)}
_OTHER_LINE: tuple[LineStyleType, float] = (":", 0.9)


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
