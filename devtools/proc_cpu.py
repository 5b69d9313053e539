"""CPU time read from /proc: of one process, of a process and its children, and of the whole machine.

For benchmarks that meter processes they did not start as children of their own (a PostgreSQL server, a
pooler), where ``resource.getrusage`` cannot see. Linux only: where /proc is missing, a process reads as
gone and the machine's ticks as unknown (None).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

_UTIME, _STIME, _CUTIME, _CSTIME = 11, 12, 13, 14
"""Indexes into :func:`stat_fields` (state is 0): user and system CPU ticks, own and of reaped children."""


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def command_line(pid: int) -> str | None:
    """The process's command line, arguments joined by spaces (a server's title as it set it); None once gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the process itself so far; 0.0 once it is gone."""
    fields = stat_fields(pid)
    return (int(fields[_UTIME]) + int(fields[_STIME])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def process_tree_cpu(root: int, *, leave_out: Sequence[str] = ()) -> float:
    """CPU seconds of ``root`` and its children: its own, its living children's, and its reaped children's.

    A server that runs one child process per connection (PostgreSQL's postmaster) reaps each child that
    exits, and the child's CPU joins its ``cutime``: so differences of this sum over an interval are the CPU
    the server spent in it, whichever connections came and went. Living children whose command line starts
    with one of ``leave_out`` are not counted.
    """
    own = stat_fields(root)
    if own is None:
        return 0.0
    total = sum(int(own[i]) for i in (_UTIME, _STIME, _CUTIME, _CSTIME))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(root):
            fields = stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(root) and not _left_out(int(entry.name), leave_out):
                total += int(fields[_UTIME]) + int(fields[_STIME])
    return total / os.sysconf("SC_CLK_TCK")


def _left_out(pid: int, prefixes: Sequence[str]) -> bool:
    if not prefixes:
        return False
    title = command_line(pid)
    return title is not None and title.startswith(tuple(prefixes))


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat; None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The machine's busy share of its CPU time between two :func:`machine_ticks`; None when unknown."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])
