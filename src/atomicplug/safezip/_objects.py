"""Extract a validated archive into the object store instead of a folder (docs/design.md "The object store").

Why: a store tree is made of hard links to objects, so extraction only has to
make sure every file's object exists. With a RECORD, an entry whose object is
already there (stat-checked) is not inflated at all: an upgrade changing 1 % of
the files inflates about 1 % of the bytes. Every entry that is inflated streams
into an object writer (64 KiB at a time, never a whole entry in memory), with
the same caps and CRC check as :func:`atomicplug.safezip.extract`, and must hash
to its RECORD line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

from atomicplug.config import ExtractLimits
from atomicplug.errors import OperationError
from atomicplug.metadata import Metadata
from atomicplug.package_record import PackageRecord, RecordEntry
from atomicplug.safezip._archive import Archive, Budget, Entry, PackageSource
from atomicplug.safezip._package import check_against_record, metadata_of, record_of

if TYPE_CHECKING:
    from atomicplug.objects import ObjectStore

__all__ = ["SourceSink", "ObjectExtraction", "extract_to_objects"]


class SourceSink(Protocol):
    """Receives the content of files it wants, by sha256 (the backend compiler).

    ``known(sha256)``: the sink already has what it would make of this content
    (its pyc), so the extractor neither keeps nor reads it back for the sink.
    ``expect(size)``: about how many bytes it will be given, told before the first
    when the package has a RECORD (what it wants, less what RECORD says it knows),
    so it can get ready early; without one, what it knows shows only once inflated.
    """

    def wants(self, relative: str) -> bool: ...

    def known(self, sha256: str) -> bool: ...

    def expect(self, size: int) -> None: ...

    def take(self, relative: str, sha256: str, data: bytes) -> None: ...


@attrs.frozen
class ObjectExtraction:
    """What :func:`extract_to_objects` produced: the tree to materialise from objects.

    ``files``: every file entry (path, size, sha256), sorted by path, each an
    object in the store; ``folders``: the zip's folder entries (empty folders
    included); ``inflated_bytes``: what was actually inflated; ``reused``: entries
    skipped because their object existed; ``created``: objects this call added.
    """

    metadata: Metadata
    files: tuple[RecordEntry, ...]
    folders: tuple[str, ...]
    has_record: bool
    inflated_bytes: int
    reused: int
    created: tuple[str, ...]

    @property
    def recorded(self) -> tuple[RecordEntry, ...] | None:
        """The files as the package's RECORD lists them (what the tree record keeps); None without a RECORD."""
        return self.files if self.has_record else None


def extract_to_objects(
    source: PackageSource,
    objects: ObjectStore,
    limits: ExtractLimits | None = None,
    *,
    sink: SourceSink | None = None,
    sha256: str | None = None,
    fresh: bool = False,
) -> ObjectExtraction:
    """Put every file of a zip (a path, or an open binary file left open) into ``objects``.

    Every entry is validated, and RECORD checked against the central directory,
    before the first byte is written. An entry with a RECORD line whose object
    passes :meth:`ObjectStore.has` is not inflated; any other is inflated and
    must match its line. An object that exists but fails the stat check is
    repaired in place by the writer. Not durable: the caller syncs once
    (:meth:`ObjectStore.sync`) before anything durable refers to the objects.

    ``sha256``: the caller has just hashed ``source`` to it (see ``Archive.open``).
    ``fresh``: the files are most likely not in the store (the plugin has no tree
    here yet), so each object is created under its name first and looked up only
    when that name is taken: one open per new file, where looking first costs an
    lstat more (docs/design.md "Performance decisions").

    Raises PackageError/MetadataError for a bad archive (a security refusal),
    OperationError when the store cannot be written. On any failure the objects
    this call created are removed again and no temp file stays (a kill leaves
    at most unreferenced objects and one temp, which :meth:`ObjectStore.sweep` removes).
    """
    limits = limits or ExtractLimits()
    extraction = _Extraction(objects, sink, fresh)
    try:
        with Archive.open(source, limits, sha256=sha256) as archive:
            metadata = metadata_of(archive)
            record = record_of(archive)
            budget = Budget(archive.limits, archive.total_compressed)
            if sink is not None and record is not None:
                sink.expect(_source_bytes(archive, record, sink))
            files = [extraction.store(archive, entry, budget, record) for entry in archive.entries if not entry.is_dir]
            folders = tuple(sorted(e.name for e in archive.entries if e.is_dir))
    except BaseException as exc:
        objects.discard(extraction.created)
        if isinstance(exc, OSError):
            raise OperationError(f"cannot write into {objects.root}: {exc.strerror or exc}") from exc
        raise
    return ObjectExtraction(
        metadata=metadata,
        files=tuple(sorted(files, key=lambda f: f.path)),
        folders=folders,
        has_record=record is not None,
        inflated_bytes=budget.total_out,
        reused=extraction.reused,
        created=tuple(extraction.created),
    )


def _source_bytes(archive: Archive, record: PackageRecord, sink: SourceSink) -> int:
    """The bytes of the entries ``sink`` wants, but those whose RECORD line it knows."""
    total = 0
    for entry in archive.entries:
        if entry.is_dir or not sink.wants(entry.name):
            continue
        line = record.files.get(entry.name)
        if line is None or not sink.known(line.sha256):
            total += entry.file_size
    return total


class _Extraction:
    """The running state of one extraction: what was created (to undo) and reused."""

    def __init__(self, objects: ObjectStore, sink: SourceSink | None, fresh: bool) -> None:
        self.objects = objects
        self.sink = sink
        self.fresh = fresh
        self.created: list[str] = []
        self.reused = 0

    def store(self, archive: Archive, entry: Entry, budget: Budget, record: PackageRecord | None) -> RecordEntry:
        line = record.files.get(entry.name) if record is not None else None
        sink = self.sink if self.sink is not None and self.sink.wants(entry.name) else None
        new = self.objects.new_object(line.sha256) if line is not None and self.fresh else None
        if line is not None and new is None and self.objects.has(line.sha256, line.size):
            self.reused += 1
            if sink is not None and not sink.known(line.sha256):  # read back, not inflated
                sink.take(entry.name, line.sha256, self.objects.read_bytes(line.sha256))
            return line
        kept: list[bytes] | None = [] if sink is not None else None
        with new or self.objects.writer(line.sha256 if line is not None else None) as writer:
            for chunk in archive.stream(entry, budget):
                writer.write(chunk)
                if kept is not None:
                    kept.append(chunk)
            check_against_record(entry, line, writer.hexdigest())
            sha256, size = writer.commit()
        if line is not None:  # the same value (checked above): one string per file kept, not two (memory, issue 14)
            sha256 = line.sha256
        if writer.created:
            self.created.append(sha256)
        if sink is not None and kept is not None and not sink.known(sha256):
            sink.take(entry.name, sha256, b"".join(kept))
        # its RECORD line says the same (path, size checked with the archive, sha256 above): no second copy
        return line if line is not None else RecordEntry(path=entry.name, size=size, sha256=sha256)
