"""How numbers read in tables, logs and the report: floats to 4 significant digits.

One rule for every place a person reads a value (a sampled ``edge_lambda`` of
0.21182739966945235 reads as 0.2118); files meant for programs (``report.json``, exports, the
resolved config) keep full precision.
"""

from __future__ import annotations

from typing import Any

__all__ = ["format_value"]


def format_value(value: Any) -> str:
    """A value for a table or a log line: floats to 4 significant digits, None as ``-``."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
