"""Atomic writes and the new-or-empty folder rule (edgesearch.files), and problem lists (edgesearch.errors)."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from edgesearch.errors import DataError, DiskFullError, UserError, join_problems, raise_problems
from edgesearch.files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    check_folder_path,
    check_new_or_empty,
    disk_full,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "history.json"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    target.write_bytes(b"old checkpoint")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise ValueError("the writer broke")

    with pytest.raises(ValueError, match="the writer broke"):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old checkpoint"
    assert _leftovers(tmp_path) == []


def test_a_full_disk_is_one_error_naming_the_file_however_deep_a_library_wrapped_it(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"

    def torch_like(tmp: Path) -> None:  # torch.save into a file: its RuntimeError has the OSError as context
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    with pytest.raises(DiskFullError, match=f"^{target}: no space left on device$"):
        atomic_write(target, torch_like)
    assert _leftovers(tmp_path) == []
    quota = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert disk_full(quota) and not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(RuntimeError("basic_ios::clear: iostream error"))  # no errno to go by


def test_files_get_the_umask_permissions_not_mkstemps_private_ones(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "best.pt", b"weights")
        os.umask(0o027)
        atomic_write_bytes(tmp_path / "team.pt", b"weights")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "best.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "team.pt").stat().st_mode) == 0o640


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink()
    assert real.read_text() == "new"


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_a_folder_fifo_or_device_is_never_replaced(tmp_path: Path, kind: str) -> None:
    if kind == "folder":
        target = tmp_path / "out"
        target.mkdir()
    elif kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
    else:
        target = Path("/dev/null")
    with pytest.raises(UserError, match="refusing to replace it"):
        atomic_write_text(target, "text")
    assert target.exists() and not target.is_file()


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "x.json", "{}")


def test_concurrent_writers_of_one_file_never_collide_on_a_temporary_name(tmp_path: Path) -> None:
    target = tmp_path / "shared.json"
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            for _ in range(25):
                atomic_write_text(target, f"writer {index}\n" * 1000)
        except BaseException as exc:  # collected: an exception in a thread would vanish
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    lines = set(target.read_text().splitlines())
    assert len(lines) == 1  # one writer's whole file, never a mix
    assert _leftovers(tmp_path) == []


def test_new_or_empty_accepts_a_missing_or_empty_folder(tmp_path: Path) -> None:
    check_new_or_empty(tmp_path / "new", label="--out")
    (tmp_path / "empty").mkdir()
    check_new_or_empty(tmp_path / "empty", label="--out")


def test_new_or_empty_refuses_a_file_or_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--out .*file: exists and is not a folder"):
        check_new_or_empty(tmp_path / "file", label="--out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(UserError, match=r"folder is not empty; or resume"):
        check_new_or_empty(tmp_path / "full", label="--out", hint="or resume")


def test_problem_lists_stop_at_ten_and_say_how_many_more() -> None:
    problems = [f"file{i}.png: unreadable" for i in range(13)]
    text = join_problems(problems)
    assert text.splitlines() == [*problems[:10], "... and 3 more problems"]
    assert join_problems(problems[:10]).splitlines() == problems[:10]
    with pytest.raises(DataError) as caught:
        raise_problems(problems, DataError)
    assert str(caught.value) == text
    raise_problems([], DataError)  # nothing to say: no error


def test_a_path_that_cannot_be_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match=rf"^--out {tmp_path}/file/sub/deeper: {tmp_path}/file is not a folder$"):
        check_new_or_empty(tmp_path / "file" / "sub" / "deeper", label="--out")
    with pytest.raises(UserError, match=rf"^--out {tmp_path}/link: is a broken symbolic link"):
        check_new_or_empty(tmp_path / "link", label="--out")
    check_folder_path(tmp_path / "new" / "deeper", label="--out")  # nothing there yet: it can be made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link"]
