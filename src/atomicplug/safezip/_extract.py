"""Write a validated archive into a fresh folder, durably (docs/design.md "One transaction" step 3).

Why: staging must hold exactly the package's files, durable on disk, with their
sha256 recorded for ``verify``; and a refused package must leave nothing
behind. Every name was validated before the first byte is written, and each
write is still checked to land inside the target.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import attrs

from atomicplug.config import ExtractLimits
from atomicplug.errors import AtomicplugError, OperationError
from atomicplug.fsutil import sync_tree
from atomicplug.metadata import Metadata
from atomicplug.package_record import PackageRecord, RecordEntry
from atomicplug.safezip._archive import Archive, Budget, Entry, PackageSource
from atomicplug.safezip._names import refuse
from atomicplug.safezip._package import check_against_record, metadata_of, record_of

__all__ = ["ExtractedFile", "ExtractResult", "read_metadata", "read_entries", "extract"]

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


#: One written file: posix path relative to the target, size and sha256 (hex).
ExtractedFile = RecordEntry


@attrs.frozen
class ExtractResult:
    """What :func:`extract` wrote; ``files`` is what ``verify`` compares against."""

    metadata: Metadata
    files: tuple[ExtractedFile, ...]
    unpacked_bytes: int


def read_metadata(source: PackageSource, limits: ExtractLimits | None = None, *, sha256: str | None = None) -> Metadata:
    """Validate the archive's structure and RECORD (if any) and parse its metadata.json.

    ``source`` is a path or an open binary file (left open); ``sha256``, when
    the caller has just hashed its bytes, lets a later extraction of those bytes
    in this process skip the structural validation (``Archive.open``). Raises
    PackageError (or its subclass MetadataError) for any bad input.
    """
    limits = limits or ExtractLimits()
    with Archive.open(source, limits, sha256=sha256) as archive:
        metadata = metadata_of(archive)
        record_of(archive)
        return metadata


def entry_names(source: PackageSource, limits: ExtractLimits, *, sha256: str) -> tuple[str, ...]:
    """The names of a validated package's entries (folders without their '/').

    ``sha256`` as for :func:`read_metadata`: intake's validation of these bytes is
    reused, so asking costs no second parse of a large central directory.
    """
    with Archive.open(source, limits, sha256=sha256) as archive:
        return tuple(entry.name for entry in archive.entries)


def read_entries(source: PackageSource, names: set[str], limits: ExtractLimits | None = None) -> list[tuple[str, bytes]]:
    """The bytes of the named file entries (validated, capped and CRC-checked like any extraction).

    For repairs, which need a few files of a package again, not a tree.
    """
    limits = limits or ExtractLimits()
    found = []
    with Archive.open(source, limits) as archive:
        budget = Budget(archive.limits, archive.total_compressed)
        for entry in archive.entries:
            if not entry.is_dir and entry.name in names:
                found.append((entry.name, b"".join(archive.stream(entry, budget))))
    return found


def extract(
    source: PackageSource,
    target_dir: str | os.PathLike[str],
    limits: ExtractLimits | None = None,
    *,
    durable: bool = True,
) -> ExtractResult:
    """Safely unpack a zip (path or open binary file) into ``target_dir`` (absent or empty; its parent must exist).

    With ``durable`` (the default) every file and folder is on disk when this
    returns; ``durable=False`` leaves that to the caller, who syncs once after
    adding its own files (staging does: see :func:`atomicplug.fsutil.sync_tree`).
    Raises PackageError/MetadataError for a bad archive, OperationError when
    the target is unusable or a write fails. On any failure whatever was
    created is removed (``target_dir`` too, if this call created it).
    """
    limits = limits or ExtractLimits()
    target = Path(os.path.abspath(target_dir))
    created = _prepare_target(target)
    try:
        with Archive.open(source, limits) as archive:
            metadata = metadata_of(archive)
            record = record_of(archive)
            files = _write_all(archive, target, record)
        if durable:
            _sync(target)
    except BaseException:
        _clean(target, created)
        raise
    return ExtractResult(
        metadata=metadata,
        files=tuple(sorted(files, key=lambda f: f.path)),
        unpacked_bytes=sum(f.size for f in files),
    )


def _prepare_target(target: Path) -> bool:
    """Check the target is usable; return True when it must be created (and was)."""
    if not target.parent.is_dir():
        raise OperationError(f"cannot extract into {target}: its parent folder does not exist")
    if target.is_symlink():
        raise OperationError(f"cannot extract into {target}: it is a symlink")
    if target.exists():
        if not target.is_dir():
            raise OperationError(f"cannot extract into {target}: it is not a folder")
        if any(target.iterdir()):
            raise OperationError(f"cannot extract into {target}: the folder is not empty")
        return False
    try:
        os.mkdir(target, 0o755)
    except OSError as exc:
        raise OperationError(f"cannot create {target}: {exc.strerror or exc}") from exc
    return True


def _inside(target: Path, entry: Entry) -> Path:
    """Defence in depth: the validated name must still resolve inside ``target``."""
    path = Path(os.path.normpath(os.path.join(target, *entry.parts)))
    if path == target or not path.is_relative_to(target):
        raise refuse(entry.name, "escapes the package folder")
    return path


def _write_all(archive: Archive, target: Path, record: PackageRecord | None) -> list[ExtractedFile]:
    folders: set[tuple[str, ...]] = set()
    for entry in archive.entries:
        depth = len(entry.parts) if entry.is_dir else len(entry.parts) - 1
        folders.update(entry.parts[:n] for n in range(1, depth + 1))
    budget = Budget(archive.limits, archive.total_compressed)
    try:
        for parts in sorted(folders, key=len):
            os.mkdir(os.path.join(target, *parts), 0o755)
        files = []
        for entry in archive.entries:
            if not entry.is_dir:
                written = _write_file(archive, entry, _inside(target, entry), budget)
                check_against_record(entry, record.files.get(entry.name) if record else None, written.sha256)
                files.append(written)
        return files
    except AtomicplugError:
        raise
    except OSError as exc:
        raise OperationError(f"cannot write into {target}: {exc.strerror or exc}") from exc


def _write_file(archive: Archive, entry: Entry, path: Path, budget: Budget) -> ExtractedFile:
    relative = "/".join(entry.parts)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, _OPEN_FLAGS, 0o644)
    try:
        for chunk in archive.stream(entry, budget):
            digest.update(chunk)
            size += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return ExtractedFile(path=relative, size=size, sha256=digest.hexdigest())


def _sync(target: Path) -> None:
    """Every written file and folder, and the target's own entry, durable (one sync)."""
    try:
        sync_tree(target)
    except OSError as exc:
        raise OperationError(f"cannot sync {target} to disk: {exc.strerror or exc}") from exc


def _clean(target: Path, created: bool) -> None:
    """Remove what this call wrote; best effort, the caller's error matters more."""
    if created:
        shutil.rmtree(target, ignore_errors=True)
        return
    for child in list(target.iterdir()) if target.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
