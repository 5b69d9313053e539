"""A study's trials as CSV (one row per trial) or JSON (with per-epoch histories) for other tools.

A study of two objectives has no single ``value``: its rows hold ``values.<metric>`` for each.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from edgesearch.searcher.study.config import StudyConfig

__all__ = ["export_text", "trial_records"]

_COLUMNS = ("number", "state", "epochs", "datetime_start", "datetime_complete", "duration_s")
_PATHS = ("run_dir", "best_checkpoint", "fail_reason")


def _value_columns(config: StudyConfig) -> list[str]:
    return [f"values.{metric}" for metric in config.objectives] if config.multi_objective else ["value"]


def trial_records(study: optuna.Study, config: StudyConfig, *, full: bool = False) -> list[dict[str, Any]]:
    """One flat dict per trial, in trial order; ``full`` adds history, intermediate values and config."""
    from edgesearch.searcher.study.progress import epochs_done

    records = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        duration = t.duration.total_seconds() if t.duration is not None else None
        values = list(t.values) if t.values is not None else [None] * len(config.objectives)
        record: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            **dict(zip(_value_columns(config), values, strict=False)),
            "epochs": epochs_done(t),
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
            "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
            "duration_s": round(duration, 3) if duration is not None else None,
        }
        record.update({f"params.{path}": t.params.get(path) for path in config.space})
        record.update({key: t.user_attrs.get(key) for key in _PATHS})
        if full:
            record["intermediate_values"] = {str(step): v for step, v in sorted(t.intermediate_values.items())}
            record["history"] = t.user_attrs.get("history", [])
            record["config"] = t.user_attrs.get("config")
        records.append(record)
    return records


def export_text(study: optuna.Study, config: StudyConfig, *, fmt: str) -> str:
    if fmt == "json":
        metric = list(config.objectives) if config.multi_objective else config.objectives[0]
        payload: dict[str, Any] = {"study": study.study_name, "metric": metric, "n_trials": config.n_trials}
        payload["trials"] = trial_records(study, config, full=True)
        return json.dumps(payload, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        number, state, *rest = _COLUMNS
        fields = [number, state, *_value_columns(config), *rest, *(f"params.{path}" for path in config.space), *_PATHS]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(trial_records(study, config))
        return buffer.getvalue()
    raise ValueError(f"unknown export format {fmt!r}; allowed: csv, json")
