"""Many processes forked from the caller once it has imported everything, released at one instant.

For measuring what processes cost from their start signal on, never Python's start-up: each child
inherits the parent's imports, waits at a barrier, does its work and puts one result on a queue. The
parent must hold no open database connection when it forks (dispose its engines), or a child shares it.
"""

from __future__ import annotations

import gc
import multiprocessing
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtools.proc_cpu import busy_fraction, machine_ticks

Target = Callable[[int, Any, Any], None]
"""``target(index, start, results)``: wait on the ``start`` barrier, then put one result on ``results``."""


@dataclass(frozen=True)
class Forked:
    """What a round of forked processes left: when they were released, their results, their exit codes."""

    go: float
    """Wall-clock time of the release (``time.time()``, comparable with a storage's timestamps)."""
    results: list[Any]
    """What the processes put on their queue, in the order it arrived."""
    exit_codes: list[int | None]
    machine_busy: float | None
    """The machine's busy share of its CPU time from the release to the last result; None where unknown."""


def run_forked(count: int, target: Target, *, timeout: float, watch: Callable[[], None]) -> Forked:
    """Fork ``count`` processes running ``target``, release them together, wait for them all.

    ``watch`` is called about every half second while they run (for looks from outside, such as counting
    server connections). :class:`TimeoutError` when results are still missing after ``timeout`` seconds; a
    round that went wrong has its processes killed rather than waited for.
    """
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(count + 1)
    results: Any = ctx.Queue()
    procs = [ctx.Process(target=target, args=(i, start, results)) for i in range(count)]
    gc.collect()  # nothing of ours left for a child's collector to finalize
    for proc in procs:
        proc.start()
    collected: list[Any] = []
    done = False
    try:
        start.wait(timeout=300)
        go = time.time()
        ticks = machine_ticks()
        deadline = time.monotonic() + timeout
        while len(collected) < count:
            try:
                collected.append(results.get(timeout=0.5))
            except queue.Empty:
                if time.monotonic() > deadline:
                    missing = count - len(collected)
                    raise TimeoutError(f"{missing} of {count} processes still running after {timeout:.0f} s") from None
                if not any(proc.is_alive() for proc in procs):
                    break  # died without a word: their exit codes say so
            watch()
        after = machine_ticks()
        done = True
    finally:
        for proc in procs:
            if not done:
                proc.kill()
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return Forked(go, collected, [proc.exitcode for proc in procs], busy_fraction(ticks, after))
