"""How numbers read in tables, logs and the report: floats to 4 significant digits.

One rule for every place a person reads a value (a sampled ``edge_lambda`` of
0.21182739966945235 reads as 0.2118); files meant for programs (``report.json``, exports, the
resolved config) keep full precision.
"""

from __future__ import annotations

from typing import Any

__all__ = ["format_duration", "format_value"]


def format_value(value: Any) -> str:
    """A value for a table or a log line: floats to 4 significant digits, None as ``-``."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_duration(seconds: float) -> str:
    """A time span for a person: ``42s``, ``3m 05s``, ``2h 03m``, ``1d 04h`` (the two largest units, rounded down)."""
    whole = max(int(seconds), 0)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
