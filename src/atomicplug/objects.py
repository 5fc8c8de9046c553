"""The content-addressed object store ``<home>/objects/`` (docs/design.md "The object store").

Every installed file is stored once, named by its sha256, in one flat folder
(``objects/abcdef…``, as in the Nix store: see docs/design.md "Performance
decisions" for why not git's fan-out); store trees are made of
hard links to these objects, so identical files across versions and plugins
cost one inode, and an upgrade writes only what changed.

Objects are immutable: read-only (0444) and stamped with a fixed mtime
(:data:`MTIME_STAMP_NS`) before they get their name. Any write to an object,
through any of its links, sets its mtime to "now", so :meth:`ObjectStore.has`
tells a tampered object from a good one by one ``lstat`` (size, mtime, mode),
without reading it. Its limit: a change that keeps the mtime (silent bit rot,
or a writer that restores it on purpose) needs a re-hash, :meth:`ObjectStore.verify`.

Writes are temp-then-rename inside ``objects/`` (or, when the sha256 is known, straight under the
object's own name, sealed last: :meth:`ObjectStore.writer`) and not fsync'd one by one: the
caller makes them durable with one sync (:meth:`ObjectStore.sync`, a ``syncfs``
on Linux, see docs/design.md "Performance decisions") before anything durable
refers to them. Every mutation passes a :func:`atomicplug.faults.crash_point`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterator, Set
from pathlib import Path

from atomicplug.errors import OperationError
from atomicplug.faults import crash_point
from atomicplug.fsutil import TEMP_SUFFIX, fsync_dir, fsync_file, remove_temp_files, sync_tree

__all__ = ["MTIME_STAMP_NS", "OBJECT_MODE", "ObjectStore", "ObjectWriter", "probe_hardlinks", "sealed"]

#: Every object's mtime (1 s after the epoch, as in the Nix store); a write changes it.
MTIME_STAMP_NS = 1_000_000_000
OBJECT_MODE = 0o444
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: The earlier layout, git's fan-out ``objects/ab/cdef…`` (see :meth:`ObjectStore.flatten`).
_FAN_OUTS = tuple(f"{n:02x}" for n in range(256))
_REST = re.compile(r"[0-9a-f]{62}")
_CHUNK = 1 << 20
#: How an object is opened to read it: a symlink in its place is never followed.
_READ_OBJECT = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
#: errnos of os.link meaning "no hard link possible here"; the object is copied instead.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
#: sync_tree is one syncfs(2) there: no need to remember each path written.
_SYNCFS = sys.platform.startswith("linux")


def _check_sha(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"expected a sha256 as 64 lowercase hex digits, got {sha256!r}")
    return sha256


def sealed(info: os.stat_result, size: int) -> bool:
    """The stat of an object as the store left it: a regular file of ``size`` bytes, mode 0444 and
    the mtime stamp (a write changes the mtime; see the module docstring for what this catches)."""
    return (
        stat.S_ISREG(info.st_mode)
        and info.st_size == size
        and info.st_mtime_ns == MTIME_STAMP_NS
        and stat.S_IMODE(info.st_mode) == OBJECT_MODE
    )


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _seal(fd: int) -> None:
    """Read-only and the fixed mtime: the last step of writing any object."""
    os.fchmod(fd, OBJECT_MODE)
    os.utime(fd, ns=(MTIME_STAMP_NS, MTIME_STAMP_NS))


class ObjectStore:
    """The objects under ``root`` (``<home>/objects``); no I/O until the first call.

    ``link_fallback`` is None while hard links work; after :meth:`link` had to
    copy it names why (e.g. ``EXDEV``), and :attr:`notice` is the line to show.
    ``repaired`` lists the objects this instance rewrote in place.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._root = os.fspath(self.root)
        self.link_fallback: str | None = None
        self.copied = 0
        self.repaired: list[str] = []
        self._linking = True
        self._dirty = False  # written since the last sync()
        self._written: set[Path] = set()  # what was written, where sync() must fsync one by one (not Linux)
        self._root_made = False
        self._left: frozenset[str] | None = None  # fan-out folders still there (see flatten); None: not looked yet
        self._temps = 0
        self._temp_prefix = f"{os.getpid()}-{secrets.token_hex(4)}"

    # -- reading ----------------------------------------------------------------------
    def path(self, sha256: str) -> Path:
        """Where the object ``sha256`` lives (whether or not it exists)."""
        return Path(self._name(sha256))

    def _flat(self, sha256: str) -> str:
        """The object's name in the flat layout, where every new object is written; a string, not a
        Path: a tree links thousands of objects, and pathlib costs more than the link."""
        _check_sha(sha256)
        return f"{self._root}/{sha256}"

    def _fanned(self, sha256: str) -> str:
        return f"{self._root}/{sha256[:2]}/{sha256[2:]}"

    def _name(self, sha256: str) -> str:
        """Where the object is: its flat name; in a store not wholly flattened (:meth:`flatten`), its
        fan-out name when only that exists."""
        flat = self._flat(sha256)
        if sha256[:2] not in self.fan_outs_left() or os.path.lexists(flat):
            return flat
        fanned = self._fanned(sha256)
        return fanned if os.path.lexists(fanned) else flat

    def has(self, sha256: str, size: int) -> bool:
        """True when the object exists and its stat shows it untouched (size, mtime stamp, mode).

        No re-hash: see the module docstring for what this catches and :meth:`verify` for the rest.
        """
        try:  # a string path: called once per entry of every package, pathlib costs more than the lstat
            return sealed(os.lstat(self._flat(sha256)), size)
        except FileNotFoundError:
            if sha256[:2] not in self.fan_outs_left():
                return False
        try:
            return sealed(os.lstat(self._fanned(sha256)), size)
        except OSError:  # a folder left as it is may refuse more than that: read as not there
            return False

    def verify(self, sha256: str) -> bool:
        """Re-hash the object: True when its content still has its name's sha256 (catches bit rot).

        A name that is missing, unreadable or a symlink (never followed) holds no object.
        """
        return _hashes_to(self._name(sha256), sha256)

    def read_bytes(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def __iter__(self) -> Iterator[str]:
        """The sha256 of every object present (names only; nothing is checked)."""
        try:
            names = os.listdir(self._root)
        except FileNotFoundError:
            return
        found = {name for name in names if _SHA256.fullmatch(name)}
        for fan in self.fan_outs_left():
            try:
                found.update(fan + rest for rest in os.listdir(f"{self._root}/{fan}") if _REST.fullmatch(rest))
            except OSError:  # a folder left as it is (see fan_outs_left)
                continue
        yield from sorted(found)

    def footprint(self, sha256: str) -> int:
        """The bytes the object's names hold (flat, and fanned out while that folder is left; each inode once)."""
        sizes: dict[tuple[int, int], int] = {}
        for name in self._names(sha256):
            try:
                info = os.lstat(name)
            except OSError:
                continue
            sizes[(info.st_dev, info.st_ino)] = info.st_size
        return sum(sizes.values())

    def _names(self, sha256: str) -> list[str]:
        """Every name the object may have: flat, and fanned out while that folder is left."""
        return [self._flat(sha256)] + ([self._fanned(sha256)] if sha256[:2] in self.fan_outs_left() else [])

    # -- writing ----------------------------------------------------------------------
    def new_object(self, sha256: str) -> ObjectWriter | None:
        """A writer straight into the object's own name, None when that name is taken: one open and
        no lookup, for a file most likely new here (see :meth:`writer` for what a crash leaves)."""
        try:
            return ObjectWriter(self, sha256, or_temp=False)
        except FileExistsError:
            return None

    def writer(self, expected: str | None = None) -> ObjectWriter:
        """A file in ``objects/`` that becomes an object on :meth:`ObjectWriter.commit`.

        With the ``expected`` sha256 (a RECORD line) and no file of that name yet,
        the bytes are written under the object's own name straight away: no temp,
        no rename. Until the mtime stamp is set last, :meth:`has` refuses the file,
        so a crash or a mismatch never leaves something that passes for the object
        (a leftover is repaired in place by the next write of it, or swept).
        """
        return ObjectWriter(self, expected)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its sha256 (an existing, untouched object is kept)."""
        return self.put(data)[0]

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``; returns (its sha256, whether this made the object).

        The bytes are in hand, so the name is known before one is written: the
        object is created under it (no temp, no rename) and looked up only when
        that name is taken; a damaged object there is mended through a temp
        (:meth:`writer`, with no second try at the name).
        """
        sha256 = hashlib.sha256(data).hexdigest()
        writer = self.new_object(sha256)
        if writer is None:
            if self.has(sha256, len(data)):
                return sha256, False
            writer = self.writer()
        with writer:
            writer.write(data)
            writer.commit()
        return sha256, writer.created

    def repair(self, sha256: str, data: bytes) -> None:
        """Rewrite a damaged object's content in place, so every tree linked to it is repaired too.

        Same inode; mode and mtime stamp restored last, after an fsync of the
        data, so a crash half-way leaves an object that :meth:`has` refuses
        (to be repaired again), never one that passes with the wrong bytes.
        Raises ValueError when ``data`` does not hash to ``sha256``.
        """
        if hashlib.sha256(data).hexdigest() != _check_sha(sha256):
            raise ValueError(f"expected data with sha256 {sha256}, got {hashlib.sha256(data).hexdigest()}")
        self._mend(sha256, [data])

    def _mend(self, sha256: str, chunks: Iterator[bytes] | list[bytes]) -> None:
        """Put right an object whose stat check fails (docs/design.md "The object store").

        Its bytes are every linked tree's file: when they still hash to its name (only its
        mode or mtime changed: a ``touch``, a restore without times), it is only sealed
        again, and nothing a live tree reads is rewritten; otherwise ``chunks`` are written
        over it in place (the trees are already damaged then).
        """
        target = self._name(sha256)
        if _hashes_to(target, sha256):
            crash_point()
            fd = os.open(target, _READ_OBJECT)
            try:
                _seal(fd)
            finally:
                os.close(fd)
        else:
            self._rewrite(target, chunks)
        self.repaired.append(sha256)

    def _rewrite(self, target: str | Path, chunks: Iterator[bytes] | list[bytes]) -> None:
        """Write ``chunks`` over ``target`` in place and seal it; truncated to their size last, so a
        failure half-way never leaves a shorter file than the damaged one it was mending."""
        crash_point()
        os.chmod(target, 0o644, follow_symlinks=False)
        crash_point()
        fd = os.open(target, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            size = 0
            for chunk in chunks:
                _write_all(fd, chunk)
                size += len(chunk)
            os.ftruncate(fd, size)
            crash_point()
            os.fsync(fd)  # the data first: the stamp below is what makes has() trust it again
            crash_point()
            _seal(fd)
        finally:
            os.close(fd)

    def _place(self, temp: str, sha256: str, size: int) -> bool:
        """Give a sealed temp its object name; True when a new object was created.

        An existing object that passes :meth:`has` is kept (the temp is dropped);
        one that fails it is repaired in place from the temp's bytes.
        """
        target = self._name(sha256)
        try:
            info = os.lstat(target)
        except FileNotFoundError:
            crash_point()
            os.rename(temp, target)
            self._wrote(target)
            return True
        if sealed(info, size):
            _drop(temp)
            return False
        if not stat.S_ISREG(info.st_mode):  # not a file (a symlink?): replace the name
            crash_point()
            os.rename(temp, target)
            self._wrote(target)
            return True
        with open(temp, "rb") as source:
            self._mend(sha256, iter(lambda: source.read(_CHUNK), b""))
        _drop(temp)
        return False

    def _make_root(self) -> None:
        if self._root_made:
            return
        if not self.root.is_dir():
            crash_point()
            os.makedirs(self.root, 0o755, exist_ok=True)
            self._wrote(self.root)
        self._root_made = True

    def _open_new(self, sha256: str) -> int:
        self._make_root()
        target = self._flat(sha256)
        crash_point()
        return os.open(target, _NEW_FILE, OBJECT_MODE)

    def _new_temp(self) -> tuple[str, int]:
        self._make_root()
        self._temps += 1
        temp = f"{self._root}/.incoming.{self._temp_prefix}-{self._temps}{TEMP_SUFFIX}"
        crash_point()
        return temp, os.open(temp, _NEW_FILE, 0o600)

    # -- trees ------------------------------------------------------------------------
    def link(self, sha256: str, dest: str | os.PathLike[str]) -> None:
        """Hard-link the object at ``dest`` (which must not exist); copy it where links are impossible.

        A copy is read-only like the object. After the first copy ``link_fallback``
        holds the reason, and later calls copy without trying to link (except after
        EMLINK, which is about one object having too many links).
        """
        source = self._name(sha256)
        if self._linking:
            crash_point()
            try:
                os.link(source, dest, follow_symlinks=False)
                return
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                self.link_fallback = self.link_fallback or errno.errorcode.get(exc.errno or 0, str(exc.errno))
                if exc.errno != errno.EMLINK:
                    self._linking = False
        self._copy(source, dest)

    def _copy(self, source: str, dest: str | os.PathLike[str]) -> None:
        crash_point()
        fd = os.open(dest, _NEW_FILE, 0o644)
        try:
            with open(source, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    _write_all(fd, chunk)
            _seal(fd)  # as its object: a tree of copies passes the check a reused tree gets (verification.tree_sealed)
        finally:
            os.close(fd)
        self.copied += 1

    @property
    def notice(self) -> str | None:
        """The line to show when :meth:`link` had to copy, else None."""
        if self.link_fallback is None:
            return None
        return f"object store: hard links unavailable on this file system ({self.link_fallback}), copying"

    # -- durability and collection ----------------------------------------------------
    def sync(self) -> None:
        """Make every object this instance wrote durable (one ``syncfs`` of the store's file system on Linux).

        When the store trees are on the same file system (hard links worked),
        the caller's own :func:`atomicplug.fsutil.sync_tree` of a tree covers the objects too.
        """
        if not self._dirty:
            return
        if _SYNCFS:
            sync_tree(self.root)
        else:
            for path in sorted(self._written, key=lambda p: len(p.parts), reverse=True):
                if path.exists():
                    (fsync_dir if path.is_dir() else fsync_file)(path)
            fsync_dir(self.root.parent)
        self._written.clear()
        self._dirty = False

    def _wrote(self, path: str | Path) -> None:
        self._dirty = True
        if not _SYNCFS:
            self._written.add(Path(path))

    def sweep(self, referenced: Set[str]) -> int:
        """Remove every object not in ``referenced``, and temps left by dead writers; returns how many objects went.

        Crash safe in any order: each unlink is atomic, and an object is only ever
        removed when unreferenced (the caller, holding the lock, says which are).
        Each folder is fsync'd once after its removals; a fan-out folder left empty
        (:meth:`flatten`) is removed.
        """
        if not self.root.is_dir():
            return 0
        remove_temp_files(self.root)
        removed = 0
        touched: set[str] = set()
        for sha256 in self:
            if sha256 in referenced:
                continue
            gone = False
            for name in self._names(sha256):
                crash_point()
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if name == self._flat(sha256) or exc.errno not in _LEFT_AS_IT_IS:
                        raise
                    continue  # in a fan-out folder that refuses changes (doctor names it): left with it
                gone = True
                touched.add(os.path.dirname(name))
            removed += gone
        for folder in sorted(touched):
            if folder != self._root and not os.listdir(folder):
                crash_point()
                os.rmdir(folder)
                touched.add(self._root)
                self._left = self.fan_outs_left() - {os.path.basename(folder)}
        for folder in sorted(touched):
            if os.path.isdir(folder):
                fsync_dir(Path(folder))
        return removed

    def discard(self, shas: list[str]) -> None:
        """Remove objects just created for a package that was then refused (best effort, not durable)."""
        for sha256 in shas:
            try:
                crash_point()  # inside the try: a failing disk here is as best-effort as the unlink
                os.unlink(self.path(sha256))
            except OSError:
                continue

    # -- the earlier fan-out layout ----------------------------------------------------
    def fan_outs_left(self) -> frozenset[str]:
        """The fan-out folders of the earlier layout still in the store: real folders (a symlink is never
        followed) this process may list and search (:meth:`fan_outs_ignored` names the others); found
        once per instance by 256 ``lstat`` calls, not by listing the store, or by one when the store's
        link count says it holds no folder at all (a flat store, on ext4, tmpfs, xfs)."""
        if self._left is None:
            if _holds_no_folder(self._root):
                self._left = frozenset()
            else:
                self._left = frozenset(fan for fan in _FAN_OUTS if _usable_folder(f"{self._root}/{fan}"))
        return self._left

    def fan_outs_ignored(self) -> dict[str, str]:
        """Names of the fan-out layout that are not folders this process may read (a symlink, a file,
        a folder it may not search), each with why: what they hold is neither used nor freed."""
        ignored = {}
        for fan in _FAN_OUTS:
            path = f"{self._root}/{fan}"
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(info.st_mode):
                ignored[fan] = "a symlink, never followed"
            elif not stat.S_ISDIR(info.st_mode):
                ignored[fan] = "not a folder"
            elif not _usable_folder(path):
                ignored[fan] = "a folder this user may not read"
        return ignored

    def flatten(self) -> int:
        """Move the objects of git's fan-out layout (``objects/ab/cdef…``) to their flat names; returns how many.

        Best effort, never in the way (docs/design.md "The object store"): a folder that cannot be
        emptied (a full disk, a read-only or immutable folder, something else in it) is left as it
        is, and its objects are read where they are until a later call moves them. Crash safe at
        every step: each move is one rename (same inode, so no tree changes); a flat name already
        sealed whose bytes hash right wins, and the fanned-out duplicate is dropped; any other flat
        name is replaced by the fanned-out object; only regular files with an object's name are moved.
        """
        moved = 0
        left: set[str] = set()
        for fan in sorted(self.fan_outs_left()):
            folder = f"{self._root}/{fan}"
            try:
                for rest in sorted(os.listdir(folder)):
                    source = f"{folder}/{rest}"
                    if not _REST.fullmatch(rest) or not _is_file(source):
                        continue  # not an object: left, and so is its folder
                    target = self._flat(fan + rest)
                    crash_point()
                    if self._stamped_file(target) and _hashes_to(target, fan + rest):  # a sealed flat copy wins when right
                        os.unlink(source)
                    else:
                        os.rename(source, target)
                        moved += 1
                crash_point()
                os.rmdir(folder)
            except OSError:  # left as it is: read in place (see the docstring)
                left.add(fan)
        self._left = frozenset(left)
        if moved:
            try:
                fsync_dir(self.root)
            except OSError:  # a move lost to a power cut is read in place, and made again
                pass
        return moved

    def _stamped_file(self, name: str) -> bool:
        """A sealed object is there (size unknown: any size it was sealed at)."""
        try:
            info = os.lstat(name)
        except FileNotFoundError:
            return False
        return sealed(info, info.st_size)

    def probe_hardlinks(self, dest_dir: str | os.PathLike[str]) -> str | None:
        """None when objects can be hard-linked into ``dest_dir``; else the errno name (for ``doctor``)."""
        self._make_root()
        return probe_hardlinks(self.root, Path(dest_dir))


#: errnos of a fan-out folder that refuses changes (immutable, read-only, another owner): left as it is.
_LEFT_AS_IT_IS = frozenset({errno.EPERM, errno.EACCES, errno.EROFS})


def _hashes_to(name: str, sha256: str) -> bool:
    """The file ``name`` (a symlink is never followed) holds bytes with that sha256."""
    try:
        fd = os.open(name, _READ_OBJECT)
    except OSError:
        return False
    with open(fd, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest() == sha256


def _holds_no_folder(path: str) -> bool:
    """True when the folder's link count (2 plus one per subfolder) says it has no subfolder, or it is
    missing. Where folders count no links (btrfs: always 1) it says nothing: False."""
    try:
        return os.lstat(path).st_nlink == 2
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _usable_folder(path: str) -> bool:
    """A real folder (never through a symlink) this process may list and search."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode) and os.access(path, os.R_OK | os.X_OK)
    except OSError:
        return False


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


class ObjectWriter:
    """Streams one object into a temp file in ``objects/``, hashing as it goes; use as a context manager.

    :meth:`commit` seals the temp (read-only, mtime stamp) and gives it its name,
    unless an untouched object with that name exists (then the temp is dropped);
    leaving the ``with`` block without committing drops the temp.
    """

    def __init__(self, store: ObjectStore, expected: str | None = None, *, or_temp: bool = True) -> None:
        """``or_temp=False``: raise FileExistsError, not fall back to a temp, when the name is taken."""
        self._store = store
        self._digest = hashlib.sha256()
        self.size = 0
        self.created = False
        self._direct = False
        # No file has the object's name yet: written there directly (O_EXCL says so, no lstat first). An
        # object only in a fan-out folder goes through a temp, so _place mends it where the trees link it.
        if expected is not None and store._name(expected) == store._flat(expected):
            try:
                self._temp, self._fd = store._flat(expected), store._open_new(expected)
                self._direct = True
            except FileExistsError:
                if not or_temp:
                    raise
        if not self._direct:
            if not or_temp:
                raise FileExistsError(expected)  # only in a fan-out folder: taken as well
            self._temp, self._fd = store._new_temp()
        self._open = True

    def write(self, chunk: bytes) -> None:
        _write_all(self._fd, chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        """The sha256 of what was written so far (to compare before committing)."""
        return self._digest.hexdigest()

    def commit(self) -> tuple[str, int]:
        """Seal and name the object; returns (sha256, size). ``created`` tells whether it is new."""
        sha256 = self.hexdigest()
        if self._direct and self._temp != self._store._flat(sha256):
            raise ValueError(f"object written as {os.path.basename(self._temp)} hashes to {sha256}")  # the caller checks first
        try:
            _seal(self._fd)
        finally:
            self._close()
        if self._direct:
            self._store._wrote(self._temp)
            self.created = True
        else:
            self.created = self._store._place(self._temp, sha256, self.size)
        self._open = False
        return sha256, self.size

    def abort(self) -> None:
        if self._open:
            self._close()
            _drop(self._temp)
            self._open = False

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.abort()
            return
        try:  # the error in flight is the one to report; what a failing disk leaves (a temp, an
            # unsealed object that has() refuses) is swept by gc
            self.abort()
        except OSError:
            pass


def _drop(temp: str | Path) -> None:
    crash_point()
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass


def probe_hardlinks(source_dir: Path, dest_dir: Path) -> str | None:
    """Try one hard link from ``source_dir`` into ``dest_dir``: None when it works, else the errno
    name of a file system without them (:data:`_NO_LINK`). Any other failure (a full or failing
    disk) is raised: it is no reason to copy, and the next install would fail on it.

    The probes are named like temp files: one a failing disk keeps from being removed is swept
    with a dead writer's temps (``transaction.sweep_temp_files``).
    """
    token = f"{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    source = Path(source_dir) / f".probe.{token}"
    dest = Path(dest_dir) / f".probe-link.{token}"
    crash_point()
    try:
        os.close(os.open(source, _NEW_FILE, 0o600))
    except OSError as exc:
        raise OperationError(f"cannot write into {source_dir}: {exc.strerror or exc}") from exc
    try:
        crash_point()
        os.link(source, dest)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        return errno.errorcode.get(exc.errno or 0, str(exc))
    else:
        _remove_probe(dest)
        return None
    finally:
        _remove_probe(source)


def _remove_probe(path: Path) -> None:
    """The probe's answer (or its error) is what matters: a probe a failing disk keeps is litter."""
    try:
        os.unlink(path)
    except OSError:
        pass
