"""The writer lock (atomicplug.lock): one holder per home, a bounded wait, the same flock as filelock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import filelock
import pytest

from atomicplug.errors import LockBusyError
from atomicplug.lock import writer_lock

_HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from atomicplug.lock import writer_lock
    with writer_lock(Path(sys.argv[1]), 5):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_waits_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "home" / "lock"
    holder = _holder(path, 30)
    heard: list[object] = []
    try:
        with pytest.raises(LockBusyError, match="another atomicplug operation holds"):
            with writer_lock(path, 0.2, heard.append):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert [str(event) for event in heard] == ["waiting up to 0.2s for another atomicplug operation to finish"]


def test_the_lock_is_taken_once_the_holder_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = _holder(path, 30)
    holder.kill()  # SIGKILL: the kernel drops the flock with the process
    holder.wait()
    heard: list[object] = []
    with writer_lock(path, 5, heard.append):
        pass
    assert heard == []


def test_a_waiter_gets_the_lock_when_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = _holder(path, 0.3)
    heard: list[object] = []
    try:
        with writer_lock(path, 10, heard.append):
            pass
    finally:
        holder.wait()
    assert [str(event) for event in heard] == ["waiting up to 10s for another atomicplug operation to finish"]


def test_filelock_and_writer_lock_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with filelock.FileLock(str(path)):
        with pytest.raises(LockBusyError):
            with writer_lock(path, 0.1):
                pass
    with writer_lock(path, 1):
        with pytest.raises(filelock.Timeout):
            filelock.FileLock(str(path)).acquire(timeout=0.1)


def test_the_lock_is_reentrant_across_uses_not_held_after(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    for _ in range(3):
        with writer_lock(path, 0.1):
            pass
    with filelock.FileLock(str(path), timeout=0.1):
        pass
