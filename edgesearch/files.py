"""Files that are either whole or absent: atomic writes, and the "new or empty folder" rule.

Every file edgesearch writes for a user (checkpoints, history, pictures, masks, exports) goes
through :func:`atomic_write`: the content is written to a temporary file with a unique name in
the same folder, flushed to disk, then renamed over the target. A reader, a crash or a second
writer never sees half a file, and two processes writing the same file cannot collide on one
temporary name. The file gets the process umask's permissions, like any other file the user
creates, so a team sharing a runs folder can read each other's models.

A write that finds its file system full (``ENOSPC``, or a quota's ``EDQUOT``), however deep in a
library the error was raised, becomes one :class:`~edgesearch.errors.DiskFullError` naming the
file, so that the user reads "no space left on device" instead of a chain of tracebacks; the
temporary file is removed, so the space it took is free again.

A symlink at the target is written through (the link stays, its regular file is replaced); a
device node, a FIFO or a folder is never replaced: that is a :class:`~edgesearch.errors.UserError`.
:func:`write_text`, for files a user names (``study export --out``), writes into a FIFO or device
such as ``/dev/stdout`` directly instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgesearch.errors import DiskFullError, UserError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_folder_path",
    "check_new_or_empty",
    "disk_full",
    "is_stream",
    "writable_target",
    "write_text",
]


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else by a swap."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def writable_target(path: Path) -> Path:
    """The regular file a write to ``path`` should replace: ``path``, or the file its symlink points to.

    Raises UserError when ``path`` (or the end of its link) exists and is not a regular file, or
    when its folder does not exist.
    """
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise UserError(f"{path}: is {kind}; refusing to replace it")
    if not target.parent.is_dir():
        raise UserError(f"{path}: folder {target.parent} does not exist")
    return target


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then make it ``path`` in one rename.

    ``write`` may use any library that writes to a path (``torch.save``, ``Figure.savefig``, PIL).
    On any error, the temporary file is removed and ``path`` is left as it was; a full file
    system is a :class:`~edgesearch.errors.DiskFullError`.
    """
    target = writable_target(path)
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise _disk_full_error(target, exc) or exc from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:  # flushed before the rename: a power cut leaves old or new
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the file private
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        full = _disk_full_error(target, exc)
        if full is not None:
            raise full from exc
        raise


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from or while handling, is "no space left" (or a quota).

    Libraries wrap it: ``torch.save`` into a file object raises a RuntimeError whose context is the
    file's OSError, and Pillow raises another OSError while closing the file.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in _FULL:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _disk_full_error(path: Path, exc: BaseException) -> DiskFullError | None:
    if isinstance(exc, Exception) and disk_full(exc):
        return DiskFullError(f"{path}: no space left on device")
    return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def is_stream(path: Path) -> bool:
    """Whether ``path`` is (or links to) a FIFO, character device or socket, such as ``/dev/stdout``."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` for a user who named ``path``: straight into a stream (``/dev/stdout``, a FIFO),
    else atomically into a regular file (through a symlink, never replacing it); a folder is refused."""
    if is_stream(path):
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        return
    atomic_write_text(path, text)


def check_folder_path(folder: Path, *, label: str) -> None:
    """Raise UserError unless ``folder`` is a folder or can be made one: not a file, not a link to
    nowhere, and the nearest part of its path that exists is a folder. ``label`` names the option."""
    if folder.is_symlink() and not folder.exists():
        raise UserError(
            f"{label} {folder}: is a broken symbolic link (to {os.readlink(folder)}); remove it or choose another"
        )
    if folder.exists():
        if not folder.is_dir():
            raise UserError(f"{label} {folder}: exists and is not a folder")
        return
    # mkdir(parents=True) would stop at the first part of the path that is there and is not a folder.
    above = next((parent for parent in folder.parents if parent.exists() or parent.is_symlink()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"{label} {folder}: {above} is not a folder")


def check_new_or_empty(folder: Path, *, label: str, hint: str = "choose a new one") -> None:
    """Raise UserError unless ``folder`` is missing (and can be made) or an empty folder; ``label`` names the option."""
    check_folder_path(folder, label=label)
    if folder.is_dir() and any(folder.iterdir()):
        raise UserError(f"{label} {folder}: folder is not empty; {hint}")
