"""Durable file primitives: atomic replacement and the leftovers of dead writers."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from atomicplug import fsutil
from atomicplug.fsutil import TEMP_SUFFIX, atomic_write_bytes, remove_temp_files, remove_tree


def test_concurrent_atomic_writes_to_one_file_never_fail(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    errors: list[BaseException] = []

    def writer(tag: bytes) -> None:
        try:
            for _ in range(200):
                atomic_write_bytes(target, tag * 100)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in (b"a" * 100, b"b" * 100)
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_temp_files_of_dead_writers_go_and_of_live_writers_stay(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    dead = tmp_path / f".registry.json.{pid}-abcd{TEMP_SUFFIX}"
    live = tmp_path / f".registry.json.{os.getppid()}-abcd{TEMP_SUFFIX}"
    dead.write_bytes(b"x")
    live.write_bytes(b"y")
    remove_temp_files(tmp_path)
    assert not dead.exists()
    assert live.exists()


def test_the_temp_file_of_a_killed_writer_not_yet_reaped_goes(tmp_path: Path) -> None:
    """A writer SIGKILLed whose parent has not yet waited for it is a zombie: dead, though its pid still answers."""
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.001)
        os.kill(pid, 0)  # the pid still answers
        leftover = tmp_path / f".index.ts.{pid}-abcd{TEMP_SUFFIX}"
        leftover.write_bytes(b"x")
        remove_temp_files(tmp_path)
        assert not leftover.exists()
    finally:
        os.waitpid(pid, 0)


def test_remove_tree_renames_before_deleting(tmp_path: Path) -> None:
    tree = tmp_path / "store" / "shop" / "1.0.0-abc"
    (tree / "backend").mkdir(parents=True)
    (tree / "backend" / "x.py").write_text("")
    assert remove_tree(tree)
    assert not tree.exists()
    assert not list(tree.parent.iterdir())
    assert not remove_tree(tree)


def test_sync_tree_makes_a_tree_durable_through_syncfs_or_fsyncs(tmp_path, monkeypatch):
    """Both paths: one syncfs (Linux) and the portable walk that fsyncs every file and folder."""
    import atomicplug.fsutil as fsutil

    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f.txt").write_text("x")
    (tree / "g.txt").write_text("y")
    fsutil.sync_tree(tree)  # the real syncfs here
    synced: list[str] = []
    monkeypatch.setattr(fsutil, "libc_syncfs", lambda: None)
    monkeypatch.setattr(fsutil, "fsync_file", lambda path: synced.append(f"file {path.relative_to(tmp_path)}"))
    monkeypatch.setattr(fsutil, "fsync_dir", lambda path: synced.append(f"dir {path.relative_to(tmp_path)}"))
    fsutil.sync_tree(tree)
    assert sorted(synced) == sorted(
        ["file tree/a/b/f.txt", "file tree/g.txt", "dir tree/a/b", "dir tree/a", "dir tree", "dir ."]
    )


def test_sync_tree_reports_a_missing_folder(tmp_path):
    import atomicplug.fsutil as fsutil

    with pytest.raises(FileNotFoundError):
        fsutil.sync_tree(tmp_path / "absent")


def test_append_line_cuts_a_torn_tail_before_appending(tmp_path):
    """History shares the journal's rule: a crash-torn last line must not swallow the next record."""
    from atomicplug.fsutil import append_line

    path = tmp_path / "history.jsonl"
    append_line(path, b'{"txid": "a"}\n', create=True)
    with open(path, "ab") as handle:
        handle.write(b'{"txid": "b", "outco')  # torn by a crash
    append_line(path, b'{"txid": "b"}\n')
    assert path.read_bytes() == b'{"txid": "a"}\n{"txid": "b"}\n'
    path.write_bytes(b"no newline at all")
    append_line(path, b"x\n")
    assert path.read_bytes() == b"x\n"


def test_removing_a_tree_again_finishes_a_delete_that_failed_half_way(tmp_path: Path) -> None:
    """EIO after the rename to ``.deleting-tree``: the rollback's second try must not leave that trash."""
    import errno

    from atomicplug.testing import fail_at

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "file").write_text("x")
    failure = fail_at(lambda: remove_tree(tree), 3, errno.EIO)  # rename, fsync, then the delete fails
    assert isinstance(failure, OSError) and sorted(p.name for p in tmp_path.iterdir()) == [".deleting-tree"]
    assert remove_tree(tree) is False
    assert list(tmp_path.iterdir()) == []


def test_an_oserror_from_a_primitive_names_its_step_and_path(tmp_path: Path) -> None:
    """``os.fsync(fd)`` raises with no file name; the one line still says where (docs/design.md)."""
    import errno

    from atomicplug.ioerrors import describe
    from atomicplug.testing import fail_at

    target = tmp_path / "state.json"
    failure = fail_at(lambda: atomic_write_bytes(target, b"{}"), 2, errno.ENOSPC)  # the fsync of the temp file
    assert isinstance(failure, OSError) and failure.filename is None
    assert describe(failure) == f"could not write {target}: No space left on device (ENOSPC)"
    failure = fail_at(lambda: atomic_write_bytes(target, b"{}"), 3, errno.EIO)  # the rename
    assert describe(failure) == f"could not rename to {target}: Input/output error (EIO)"


def test_links_like_an_existing_folder_are_hard_links_to_its_entries_or_new_symlinks(tmp_path, monkeypatch):
    """Issue 14: a new symlink needs a new inode; the live view's entries are linked instead."""
    import errno

    live, new, fallback = (tmp_path / name for name in ("live", "new", "fallback"))
    live.mkdir()
    fsutil.make_symlinks(str(live), [("a", "../t/a"), ("b", "../t/b")])
    new.mkdir()
    fsutil.make_symlinks(str(new), [("a", "../t/a"), ("b", "../t/b2"), ("c", "../t/c")], like=str(live))
    assert {name: os.readlink(new / name) for name in "abc"} == {"a": "../t/a", "b": "../t/b2", "c": "../t/c"}
    assert os.lstat(new / "a").st_ino == os.lstat(live / "a").st_ino  # same name, same target: linked
    assert os.lstat(new / "b").st_ino != os.lstat(live / "b").st_ino  # another target: a symlink of its own

    def no_links(*args, **kwargs):
        raise OSError(errno.EMLINK, os.strerror(errno.EMLINK))

    monkeypatch.setattr(os, "link", no_links)
    fallback.mkdir()
    fsutil.make_symlinks(str(fallback), [("a", "../t/a")], like=str(live))
    assert os.readlink(fallback / "a") == "../t/a" and os.lstat(fallback / "a").st_nlink == 1
