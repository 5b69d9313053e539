"""What a process keeps between its training runs: checked data folders and decoded images.

Why: every trial of a study reads the same data. Checking a folder (pairing the files, decoding
each one to find broken, mismatched or non-binary files) and decoding every image again in every
epoch cost seconds per trial, which a GPU trial of a few seconds per epoch cannot hide. So, per
process (a worker runs its trials one after the other in one process):

- :func:`scan_result` / :func:`keep_scan` keep a folder's checked pairs with its *fingerprint*:
  the name, size and modification time of every file in it. A later scan returns the kept pairs
  when the fingerprint is unchanged (a few ``stat`` calls) and checks the folder again when not;
- :class:`DecodedCache` keeps decoded images and masks while they fit the budget,
  ``EDGESEARCH_DATA_CACHE_MB`` (default 4096 MiB, counted as the arrays' bytes; ``0`` turns
  caching off). An entry is keyed by the file's path, size and modification time, so a file that
  changed is read again. Entries are never evicted: an epoch reads every file in turn, and with
  such a cyclic order an evicting cache of a dataset larger than its budget would miss on every
  read, while a cache that keeps what came first hits on the part that fits.

Kept arrays are read-only, so a transform that wrote into its input would fail at once instead
of changing the data of later epochs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Final

import numpy as np

from edgesearch.errors import ConfigError

__all__ = [
    "BUDGET_ENV",
    "DEFAULT_BUDGET_MB",
    "DecodedCache",
    "Fingerprint",
    "budget_bytes",
    "check_budget",
    "clear",
    "decoded",
    "file_key",
    "fingerprint",
    "keep_scan",
    "scan_result",
]

BUDGET_ENV: Final = "EDGESEARCH_DATA_CACHE_MB"
DEFAULT_BUDGET_MB: Final = 4096

FileKey = tuple[str, int, int, int, int]
"""(path, size in bytes, modification and change times in ns, inode): a file as it is now. The inode
and change time catch a file replaced within the clock's granularity by one of the same size."""
Fingerprint = tuple[FileKey, ...]


def budget_bytes() -> int:
    """The decoded-data budget from ``EDGESEARCH_DATA_CACHE_MB`` (MiB), in bytes; ConfigError when malformed."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_BUDGET_MB * 2**20
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"{BUDGET_ENV}: {raw[:40]!r} is not a size; allowed: a whole number of MiB >= 0 "
            f"(0 turns the cache off; default {DEFAULT_BUDGET_MB})"
        )
    return value * 2**20


def check_budget() -> None:
    """Raise the ConfigError of a malformed ``EDGESEARCH_DATA_CACHE_MB`` now: called where a run, a worker or
    a command starts, so that bad input stops it before anything is written or started."""
    budget_bytes()


def file_key(path: Path) -> FileKey:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def fingerprint(folders: list[Path]) -> Fingerprint:
    """Every file directly in ``folders`` as its :data:`FileKey`: changes when any file is added,
    removed, rewritten or touched. A missing folder counts as empty."""
    entries: list[FileKey] = []
    for folder in folders:
        try:
            with os.scandir(folder) as found:
                for entry in found:
                    try:
                        if not entry.is_file():
                            continue
                        stat = entry.stat()
                    except OSError:  # a symbolic link loop, or a file gone since: the scan names it
                        continue
                    entries.append((entry.path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return tuple(sorted(entries))


class DecodedCache:
    """Arrays by key, up to ``budget`` bytes in all; what does not fit is not kept."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: dict[Hashable, tuple[np.ndarray, ...]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> tuple[np.ndarray, ...] | None:
        return self._items.get(key)

    def put(self, key: Hashable, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """Keep read-only views of ``arrays`` when they fit; returns what the caller should use."""
        size = sum(array.nbytes for array in arrays)
        with self._lock:
            if key in self._items:
                return self._items[key]
            if self.used + size > self.budget:
                return arrays
            kept = tuple(_read_only(array) for array in arrays)
            self._items[key] = kept
            self.used += size
            return kept

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.used = 0


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


_decoded: DecodedCache | None = None
_scans: dict[Hashable, tuple[Fingerprint, object]] = {}


def decoded() -> DecodedCache:
    """This process's cache of decoded data (its budget read from the environment on first use)."""
    global _decoded
    if _decoded is None:
        _decoded = DecodedCache(budget_bytes())
    return _decoded


def clear() -> None:
    """Forget every kept scan and decoded image (and read the budget again on next use)."""
    global _decoded
    _decoded = None
    _scans.clear()


def scan_result(key: Hashable, seen: Fingerprint) -> object | None:
    """The result kept for ``key`` when its folders' fingerprint is still ``seen``; else None."""
    kept = _scans.get(key)
    if kept is None or kept[0] != seen:
        return None
    return kept[1]


def keep_scan(key: Hashable, folders: list[Path], result: object, *, seen: Fingerprint) -> None:
    """Keep ``result`` for ``key``; ``seen`` is the fingerprint taken *before* the scan read the files,
    so a file changed during the scan makes the next scan check again."""
    if seen == fingerprint(folders):
        _scans[key] = (seen, result)
