"""How numbers and time spans read in tables, logs and the report."""

from __future__ import annotations

import pytest

from edgesearch.formatting import format_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (42.9, "42s"),  # rounded down: an ETA never promises less time than it says
        (60, "1m 00s"),
        (185, "3m 05s"),
        (3599, "59m 59s"),
        (3600, "1h 00m"),
        (7380, "2h 03m"),
        (86400 + 4 * 3600 + 59, "1d 04h"),
        (-5, "0s"),  # a deadline already passed
    ],
)
def test_a_duration_reads_in_its_two_largest_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
