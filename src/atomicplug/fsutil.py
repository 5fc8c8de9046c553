"""Durable file-system primitives: every mutation of state goes through here.

Why: an operation is only crash-safe if each step reaches the disk in the
order the journal assumes. These helpers fsync what must survive (the file,
then its folder) and replace files atomically (temp in the same folder, then
``os.replace``). Each one passes a :func:`atomicplug.faults.crash_point`, and
an OSError from it names the step and the path (:func:`atomicplug.ioerrors.named`).
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from atomicplug.faults import crash_point
from atomicplug.ioerrors import named

__all__ = [
    "fsync_dir",
    "fsync_file",
    "sync_tree",
    "atomic_write_bytes",
    "make_dirs",
    "remove_empty_dirs",
    "replace",
    "remove_tree",
    "remove_file",
    "TRASH_PREFIX",
    "TEMP_SUFFIX",
    "remove_temp_files",
    "alive",
    "delete_trash",
    "switch_symlink",
    "make_symlinks",
    "write_new_file",
    "append_line",
]


@named("fsync")
def fsync_dir(path: Path) -> None:
    """Make a folder's entries (creations, renames, unlinks) durable."""
    crash_point()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@named("fsync")
def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    crash_point()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def libc_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(2)`` (Linux), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


@named("sync")
def sync_tree(root: Path) -> None:
    """Make every file and folder written under ``root``, and ``root``'s own entry, durable.

    On Linux this is one ``syncfs(2)`` of the file system holding ``root``: measured
    (issue 8) at a third of the time of an fsync per file, even with the fsyncs spread
    over threads, because the file system commits its journal once. It also flushes
    other processes' dirty data on that file system, which can make it slower on a
    machine that is writing a lot. Elsewhere: an fsync of each file and folder, deepest
    first. Raises OSError when the data cannot be written (syncfs reports write-back
    errors since Linux 5.8).
    """
    crash_point()
    syncfs = libc_syncfs()
    if syncfs is None:
        _fsync_walk(Path(root))
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:  # ctypes releases the GIL while the disk works
            import ctypes

            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(root))
    finally:
        os.close(fd)


def _fsync_walk(root: Path) -> None:
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(Path(folder, name))
        fsync_dir(Path(folder))
    fsync_dir(root.parent)


@named("create folder")
def link_points_into(link: str | os.PathLike[str], folder: Path) -> bool:
    """Whether the symlink ``link`` leads into ``folder``, however either is spelled.

    Both resolved: a link written relative (``../../state/store/…``), or through a home reached
    by a symlink that an earlier atomicplug resolved when it wrote it, is still the same place.
    """
    target = os.path.realpath(os.path.join(os.path.dirname(link), os.readlink(link)))
    return os.path.commonpath([target, os.path.realpath(folder)]) == os.path.realpath(folder)


def make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and missing parents, fsyncing each new entry's parent; returns those created."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    created = []
    for folder in reversed(missing):
        crash_point()
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue
        created.append(folder)
        fsync_dir(folder.parent)
    return created


def remove_empty_dirs(folders: list[Path]) -> None:
    """Undo :func:`make_dirs` after a refusal: remove the folders it created, deepest first, if still empty."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:
            return  # not empty (someone else uses it) or already gone: leave the rest


@named("write")
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old bytes or the new, never a mix."""
    path = Path(path)
    # Unique per writer: some files (the repository trust state) are written without the lock.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
    crash_point()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, data)
        crash_point()
        os.fsync(fd)
    finally:
        os.close(fd)
    replace(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@named("append to")
def append_line(path: Path, line: bytes, *, create: bool = False) -> None:
    """Append one newline-terminated record to ``path`` and fsync it (the folder too when created).

    A crash can tear an append: the file then ends without a newline. That torn
    part is cut off (and the cut fsync'd) before anything is appended, or the new
    record would be glued to it and read as damaged as well (issue 13 item 5).
    """
    path = Path(path)
    crash_point()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0), 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            crash_point()
            os.ftruncate(fd, _after_last_newline(fd, size))
        _write_all(fd, line)
        crash_point()
        os.fsync(fd)
    finally:
        os.close(fd)
    if create and size == 0:
        fsync_dir(path.parent)


def _after_last_newline(fd: int, size: int) -> int:
    """The length of the file's whole lines (0 when it has none)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        found = chunk.rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


@named("rename to", path_arg=1)
def replace(src: Path, dst: Path, *, durable: bool = True) -> None:
    """Atomically rename ``src`` onto ``dst`` and (unless ``durable=False``) make the rename durable."""
    crash_point()
    os.replace(src, dst)
    if durable:
        fsync_dir(Path(dst).parent)


@named("remove")
def remove_file(path: Path, *, durable: bool = True) -> bool:
    """Unlink a file or symlink if present (durably, unless ``durable=False``); True when something went."""
    path = Path(path)
    crash_point()
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if durable:
        fsync_dir(path.parent)
    return True


TRASH_PREFIX = ".deleting-"
TEMP_SUFFIX = ".tmp-atomicplug"


@named("remove leftovers in")
def remove_temp_files(folder: Path) -> None:
    """Delete ``.<name>.<pid>-<rand>.tmp-atomicplug`` files left by writers that died.

    A temp file whose writer is still alive is another process's write in progress: kept.
    """
    if not folder.is_dir():
        return
    for leftover in folder.glob(f".*{TEMP_SUFFIX}"):
        pid = leftover.name[: -len(TEMP_SUFFIX)].rsplit(".", 1)[-1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and alive(int(pid)):
            continue
        remove_file(leftover)


def alive(pid: int) -> bool:
    """Whether process ``pid`` may still write: it exists and has not died.

    A writer killed while its parent has not yet waited for it (a zombie) still
    answers ``kill(pid, 0)``, but it writes nothing more: dead, by /proc.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return not Path("/proc/self/stat").exists()  # reaped just now, unless there is no /proc
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


@named("remove")
def remove_tree(path: Path) -> bool:
    """Delete a folder tree if present; durable once it returns.

    The tree is first renamed to ``.deleting-<name>`` in one atomic step, so a
    crash during the slow delete never leaves a half-deleted tree under its
    real name (a later install would take it for complete). ``gc`` sweeps
    ``.deleting-*`` leftovers; removing the same path again finishes a delete
    that failed half-way (a full or failing disk: the rollback's second try).
    """
    path = Path(path)
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}")
    if os.path.lexists(trash):
        delete_trash(trash)
    if not os.path.lexists(path):
        return False
    if path.is_symlink() or not path.is_dir():
        return remove_file(path)
    replace(path, trash)
    delete_trash(trash)
    return True


@named("remove")
def delete_trash(path: Path) -> None:
    """Delete a tree already renamed out of the way (no atomicity needed)."""
    crash_point()
    shutil.rmtree(path, ignore_errors=False)
    fsync_dir(path.parent)


@named("create links in")
def make_symlinks(folder: str, links: Iterable[tuple[str, str]], *, like: str | None = None) -> None:
    """Create new symlinks ``<folder>/<name> -> <target>`` in a folder being built (made durable
    by the builder's sync of the folder); one crash point each, on strings (1000 at a time).

    ``like``: a folder holding some of the same links (same name, same target); those become
    hard links to its entries instead of new symlinks. A new symlink is a new inode, and finding
    one took ext4 up to ten times as long as adding a name (1000 symlinks: 90-240 ms in a busy
    block group against 12-22 ms of hard links; issue 14). Where an entry cannot be linked (a
    file system without hard links, its link count at the maximum), a symlink is made.
    Both folders are opened once and each call names an entry in them: a path through ``like``
    (``<home>/current/backend``, two symlinks) resolved for each of 1000 entries, twice, cost a
    sixth of the time.
    """
    into = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        source = _open_folder(like) if like is not None else None
        try:
            for name, target in links:
                crash_point()
                if source is None or not _link_same(source, name, target, into):
                    os.symlink(target, name, dir_fd=into)
        finally:
            if source is not None:
                os.close(source)
    finally:
        os.close(into)


def _open_folder(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # none yet (a first generation): every link is new
        return None


def _link_same(source: int, name: str, target: str, into: int) -> bool:
    """Hard-link the symlink ``name`` of the folder ``source`` into ``into`` if it points at
    ``target``; False when it does not, is missing, or cannot be linked (then nothing was made)."""
    try:
        if os.readlink(name, dir_fd=source) != target:
            return False
        os.link(name, name, src_dir_fd=source, dst_dir_fd=into, follow_symlinks=False)
    except OSError:
        return False
    return True


@named("write")
def write_new_file(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Create a new file inside a folder being built: made durable by the builder's one sync, or
    here (``durable``: its data fsync'd; its folder's entry is the builder's to fsync)."""
    crash_point()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, data)
        if durable:
            crash_point()
            os.fsync(fd)
    finally:
        os.close(fd)


@named("switch link")
def switch_symlink(link: Path, target: Path, txid: str, *, replace_file: bool = False) -> None:
    """Point ``link`` at ``target`` atomically (docs/design.md "State").

    Create ``<link>.tmp-<txid>`` then ``os.replace`` it onto ``link`` and fsync
    the folder: readers see the old tree or the new one, never a mix. A real
    folder (not a symlink) in the way is refused: atomicplug never deletes
    what it did not install; a regular file only when ``replace_file`` (one
    atomicplug wrote itself, such as the registry before generations).
    """
    link = Path(link)
    if link.exists() and not link.is_symlink() and not (replace_file and link.is_file()):
        from atomicplug.errors import OperationError

        raise OperationError(f"{link} exists and is not a symlink made by atomicplug; move it away first")
    tmp = link.with_name(f"{link.name}.tmp-{txid}")
    crash_point()
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    crash_point()
    try:
        os.symlink(target, tmp)
    except OSError as exc:  # pragma: no cover - only on exotic file systems
        if exc.errno != errno.EEXIST:
            raise
    replace(tmp, link)
