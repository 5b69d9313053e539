"""What every benchmark shares: the command line, machine facts, timing statistics, JSON out.

Each benchmark is a script: ``python benchmarks/NAME.py [--tiny] [--json FILE]``. It prints a
human summary on stderr and its result as one JSON object on stdout (or into ``--json FILE``).
``--tiny`` shrinks every size so that the script finishes in seconds: CI runs it that way to
prove the script works, never to judge a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The one place that puts the repository root on the path, for `devtools` (the PostgreSQL, pooler and
# /proc helpers the tests share; not in the wheel, so never installed): a script run as
# `python benchmarks/NAME.py` has only benchmarks/ on it, and every script imports this module first.
# At the front, as pytest puts it for the tests, so that the checkout's own code is what is measured.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

POSTGRES_ENV = ("EDGESEARCH_BENCH_POSTGRES_URL", "EDGESEARCH_TEST_POSTGRES_URL")
THROWAWAY_PORT = 56100
"""The first port tried for a throwaway PostgreSQL server (``$EDGESEARCH_BENCH_PG_PORT`` moves it)."""


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tiny", action="store_true", help="smallest sizes: proves the script runs (CI smoke test)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the JSON result here too")
    return p


def machine() -> dict[str, Any]:
    """Facts that a number means nothing without."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def given_postgres(explicit: str | None) -> tuple[str | None, str]:
    """(PostgreSQL server URL or None, where it came from or why there is none): ``--postgres URL``, else
    the first of :data:`POSTGRES_ENV` that is set."""
    for candidate, source in [(explicit, "--postgres"), *((os.environ.get(n), f"${n}") for n in POSTGRES_ENV)]:
        if candidate and candidate.strip():
            return candidate.strip(), source
    return None, f"no PostgreSQL server given (--postgres URL, ${POSTGRES_ENV[0]} or ${POSTGRES_ENV[1]})"


def throwaway_port() -> int:
    return int(os.environ.get("EDGESEARCH_BENCH_PG_PORT", THROWAWAY_PORT))


@contextlib.contextmanager
def postgres_server(explicit: str | None) -> Iterator[tuple[str | None, str]]:
    """(server URL or None, where it came from or why there is none): the one given (:func:`given_postgres`),
    else a throwaway server started with ``.ci/start-postgres.sh``, stopped after."""
    from devtools.postgres import START_POSTGRES, PostgresUnavailable, throwaway_postgres

    server, source = given_postgres(explicit)
    if server is not None:
        yield server, source
        return
    with contextlib.ExitStack() as stack:
        try:
            started = stack.enter_context(throwaway_postgres(first_port=throwaway_port()))
        except PostgresUnavailable as exc:
            yield None, str(exc)
            return
        yield started.url, f"a throwaway server started with {START_POSTGRES.name}"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


def alternate(variants: dict[str, Callable[[], float]], *, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each variant once per round, in turns, after ``warmup`` untimed rounds.

    Each callable returns its own measurement (e.g. seconds per step). Taking turns puts every
    variant under the same drift in clock speed, cache and background load, so their medians
    compare like with like.
    """
    for _ in range(warmup):
        for run in variants.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            samples[name].append(run())
    return samples


def paired_ratio(samples: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of ``numerator / denominator`` measured in the same round.

    On a machine whose speed drifts (shared cores, turbo, other tenants), two samples taken
    seconds apart agree far better than two taken a minute apart, so the ratio of each round's
    pair is steadier than the ratio of the two medians.
    """
    return median([a / b for a, b in zip(samples[numerator], samples[denominator], strict=True)])


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(name: str, args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Print the result as JSON on stdout (and into ``--json FILE``)."""
    payload = {"benchmark": name, "tiny": bool(args.tiny), "machine": machine(), **result}
    text = json.dumps(payload, indent=2, default=str)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
