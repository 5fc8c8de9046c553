"""What a package says about itself: metadata.json and RECORD, read from a validated archive.

Why here: both extractors (into a folder, into the object store) and
``read_metadata`` must refuse the same things, before the first byte is
written. RECORD is optional (packages made before it still install); when
present it must list exactly the zip's files with their sizes, and every
entry inflated must hash to its line (docs/design.md "RECORD").
"""

from __future__ import annotations

from atomicplug.metadata import Metadata
from atomicplug.package_record import PackageRecord, RecordEntry
from atomicplug.safezip._archive import Archive, Entry
from atomicplug.safezip._names import refuse

__all__ = ["metadata_of", "record_of", "check_against_record"]


def metadata_of(archive: Archive) -> Metadata:
    entry = archive.metadata_entry()
    data = archive.read_small(entry, ("max_metadata_bytes", archive.limits.max_metadata_bytes))
    return Metadata.from_json_bytes(data)


def record_of(archive: Archive) -> PackageRecord | None:
    """The package's RECORD, parsed and checked against the central directory; None without one.

    Once per process per package (intake's answer serves the extraction), like the validation.
    """
    return archive.remembered("record", lambda: _read_record(archive))


def _read_record(archive: Archive) -> PackageRecord | None:
    entry = archive.record_entry()
    if entry is None:
        return None
    record = PackageRecord.from_bytes(archive.read_small(entry, archive.record_cap()), {e.name: e.name for e in archive.entries})
    files = {e.name: e.file_size for e in archive.entries if not e.is_dir}
    record.check_against(files, {e.name for e in archive.entries if e.is_dir})
    return record


def check_against_record(entry: Entry, line: RecordEntry | None, sha256: str) -> None:
    """Refuse an inflated entry whose sha256 differs from its RECORD line (sizes were checked already)."""
    if line is not None and line.sha256 != sha256:
        raise refuse(entry.name, f"does not match RECORD (expected sha256 {line.sha256}, got {sha256})")
