"""The designed block read as the report's questions: schedule, edge lambda and edge width, with the noise.

Each comparison is **paired**: level A against the reference level B over the cells where every other knob is
the same (for the schedules: the 10 loss settings; for lambda: each schedule and width against lambda 0 of the
same schedule; for the width: each schedule and lambda against width 2). A cell's difference is the difference
of the two configurations' means over seeds; the effect is the mean of the cells' differences, its standard
error the cells' standard deviation over sqrt(cells), which holds both the seed noise and how the effect varies
with the other knobs::

    d_c = mean_s v(A, c, s) - mean_s v(B, c, s);   effect = mean_c d_c;   se = sd_c(d_c) / sqrt(C)

``v`` is a run's best val IoU within ``epochs`` (30: the whole run; 10: early), or its best Boundary IoU. Boundary
IoU is measured at d = the edge width, so for it the lambdas are compared at width 2 only (4 cells, one per
schedule) and the widths not at all.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

from . import configs
from .table import Table

__all__ = ["RANDOM_LEVELS", "effects", "random_levels"]

SCHEDULE_KEYS = ("optim.freeze_epochs", "optim.warmup_epochs", "optim.backbone_lr_factor")


def _schedule(params: dict[str, Any]) -> str | None:
    for name, schedule in configs.SCHEDULES.items():
        if all(params[k] == v for k, v in schedule.items()):
            return name
    return None


def _mean(table: Table, cid: str, epochs: int, metric: str) -> float:
    return statistics.fmean(max(getattr(c, metric)[:epochs]) for c in table.curves[cid])


def _paired(table: Table, cells: dict[Any, tuple[str, str]], epochs: int, metric: str) -> dict[str, float | int | None]:
    diffs = [_mean(table, a, epochs, metric) - _mean(table, b, epochs, metric) for a, b in cells.values()]
    if not diffs:
        return {"effect": None, "se": None, "cells": 0}
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return {"effect": statistics.fmean(diffs), "se": se, "cells": len(diffs)}


def effects(table: Table, epochs: int = configs.EPOCHS, metric: str = "val_iou") -> dict[str, dict[str, Any]]:
    """Paired effects of the designed block's knobs (module docstring), from the configurations recorded so far."""
    designed = {cid: p for cid, p in table.configs.items() if cid.startswith("d") and cid in table.curves}
    key: dict[tuple[str | None, float, int], str] = {
        (_schedule(p), float(p["loss.edge_lambda"]), int(p["loss.edge_width"])): cid for cid, p in designed.items()
    }

    def compare(
        level: Callable[[tuple[str | None, float, int]], tuple[str | None, float, int] | None],
    ) -> dict[Any, tuple[str, str]]:
        out = {}
        for cell, cid in key.items():
            ref = level(cell)
            if ref is not None and ref in key and ref != cell:
                out[cell] = (cid, key[ref])
        return out

    reference = "all from epoch 1"
    boundary = metric == "val_boundary_iou"
    schedules = {
        name: _paired(table, compare(lambda c, n=name: (reference, c[1], c[2]) if c[0] == n else None), epochs, metric)
        for name in configs.SCHEDULES
        if name != reference
    }
    lambdas = {
        str(lam): _paired(
            table,
            compare(lambda c, lam=lam: (c[0], 0.0, 2) if c[1] == lam and (c[2] == 2 or not boundary) else None),
            epochs,
            metric,
        )
        for lam in configs.LAMBDAS
    }
    out = {f"schedule (against {reference})": schedules, "edge lambda (against 0)": lambdas}
    if not boundary:
        out["edge width (against 2)"] = {
            str(w): _paired(
                table, compare(lambda c, w=w: (c[0], c[1], 2) if c[2] == w and c[1] > 0 else None), epochs, metric
            )
            for w in configs.WIDTHS
            if w != 2
        }
    return out


RANDOM_LEVELS: dict[str, tuple[str, dict[str, tuple[Any, Any]]]] = {
    "backbone lr factor, pretrained": (
        "optim.backbone_lr_factor",
        {"0.05-0.2": (0.05, 0.2), "0.2-0.5": (0.2, 0.5), "0.5-1": (0.5, 1.0 + 1e-9)},
    ),
    "optimiser": ("optim.name", {"adam": ("adam", "adam"), "rmsprop": ("rmsprop", "rmsprop")}),
    "encoder": ("model.encoder_weights", {"scratch": (None, None), "pretrained": ("packaged", "packaged")}),
}
"""Knobs the designed block holds fixed, read from the random block: {question: (knob, {level: (low, high)})},
a level holding the configurations with ``low <= value < high`` (a choice: ``value == low``)."""


def random_levels(table: Table) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Mean true value ± standard error over the random block's configurations at each level of
    :data:`RANDOM_LEVELS`. Unpaired: the other knobs vary at random, so these means are unbiased but carry the
    spread of everything else (the standard error says how much); the backbone factor only on pretrained ones."""
    randoms = {cid: p for cid, p in table.configs.items() if cid.startswith("r") and cid in table.curves}
    out: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for question, (knob, levels) in RANDOM_LEVELS.items():
        pretrained_only = knob == "optim.backbone_lr_factor"
        out[question] = {}
        for level, (low, high) in levels.items():
            values = [
                table.true_mean[cid]
                for cid, p in randoms.items()
                if (not pretrained_only or p["model.encoder_weights"] is not None)
                and (p[knob] == low if isinstance(low, str) or low is None else low <= p[knob] < high)
            ]
            se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
            out[question][level] = {"mean": statistics.fmean(values) if values else None, "se": se, "n": len(values)}
    return out
