"""RECORD: the signed list of a package's files with size and sha256 (docs/design.md "RECORD").

Why: with every file's sha256 known before anything is inflated, an upgrade
skips the entries whose objects the store already holds (an upgrade writing 1 %
of the files costs about 1 %), and every entry that is inflated is checked
against a hash the publisher signed (RECORD is inside the signed zip).

The format, like a wheel's RECORD but with hex digests, parsed strictly:

- UTF-8, one line per file entry of the zip, each ending in ``\\n``;
- a line is three CSV fields as Python's ``csv`` module writes them with
  minimal quoting: ``path,sha256=<64 lowercase hex digits>,<size in decimal>``;
- RECORD lists itself once, without hash and size: ``RECORD,,``;
- ``pack`` writes the files sorted by path, then ``RECORD,,`` (the order is not checked).

Anything else (a blank line, ``\\r``, extra spaces or quotes, a duplicate path)
is a PackageError. :meth:`PackageRecord.check_against` compares it with the
zip's central directory; the extractor compares each hash while inflating.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Set

import attrs

from atomicplug.errors import PackageError
from atomicplug.layout import RECORD_NAME

__all__ = ["RecordEntry", "PackageRecord", "record_size_cap"]

_HASH = re.compile(r"sha256=([0-9a-f]{64})")
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_SELF_LINE = f"{RECORD_NAME},,"


@attrs.frozen
class RecordEntry:
    """One file: posix path inside the package, size in bytes, sha256 (lowercase hex)."""

    path: str
    size: int
    sha256: str


def _show(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 120 else shown[:117] + "...'"


def _refuse(rule: str) -> PackageError:
    return PackageError(f"package RECORD {rule}")


def _csv_line(fields: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(fields)
    return out.getvalue()


@attrs.frozen
class PackageRecord:
    """A parsed RECORD: ``files`` maps each path to its entry, in RECORD order (RECORD itself not included)."""

    files: Mapping[str, RecordEntry]

    @classmethod
    def from_entries(cls, entries: Iterable[RecordEntry]) -> PackageRecord:
        files: dict[str, RecordEntry] = {}
        for entry in entries:
            if entry.path in files or entry.path == RECORD_NAME:
                raise ValueError(f"expected each path once and not {RECORD_NAME!r}, got {entry.path!r} again")
            files[entry.path] = entry
        return cls(files)

    @classmethod
    def from_bytes(cls, data: bytes, names: Mapping[str, str] | None = None) -> PackageRecord:
        """Parse a RECORD; raises PackageError naming the first line that breaks the format.

        ``names``: the archive's entry names, each mapped to itself: a path equal to one
        is that very string, not a second copy (5000 paths of the large bench plugin).
        """
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _refuse(f"is not UTF-8 (byte {exc.start})") from None
        if not text.endswith("\n"):
            raise _refuse("must end with a newline")
        files: dict[str, RecordEntry] = {}
        listed_self = False
        for number, line in enumerate(text[:-1].split("\n"), start=1):
            if line == _SELF_LINE:
                if listed_self:
                    raise _refuse(f"line {number} lists {RECORD_NAME} a second time")
                listed_self = True
                continue
            entry = _parse_line(number, line, names or {})
            if entry.path == RECORD_NAME:
                raise _refuse(f"line {number} gives {RECORD_NAME} a hash or size (expected {_SELF_LINE!r})")
            if entry.path in files:
                raise _refuse(f"line {number} lists {_show(entry.path)} a second time")
            files[entry.path] = entry
        if not listed_self:
            raise _refuse(f"does not list itself (expected a line {_SELF_LINE!r})")
        return cls(files)

    def to_bytes(self) -> bytes:
        """The canonical RECORD: files sorted by path, then ``RECORD,,``."""
        lines = [_csv_line((e.path, f"sha256={e.sha256}", str(e.size))) for e in sorted(self.files.values(), key=lambda e: e.path)]
        return ("".join(lines) + _SELF_LINE + "\n").encode("utf-8")

    def check_against(self, file_sizes: Mapping[str, int], folders: Set[str] = frozenset()) -> None:
        """Refuse unless RECORD lists exactly the zip's files (RECORD aside) with the central directory's sizes.

        ``file_sizes`` maps each file entry's name to its size in the central
        directory; ``folders`` are the zip's folder entries (not listed in RECORD).
        """
        for path, entry in self.files.items():
            if path in folders:
                raise _refuse(f"lists {_show(path)}, which is a folder in the package")
            if path not in file_sizes:
                raise _refuse(f"lists {_show(path)}, which is not in the package")
            if file_sizes[path] != entry.size:
                raise _refuse(f"gives {_show(path)} {entry.size} bytes, but the archive says {file_sizes[path]}")
        for path in file_sizes:
            if path not in self.files and path != RECORD_NAME:
                raise _refuse(f"does not list package entry {_show(path)}")


def _parse_line(number: int, line: str, names: Mapping[str, str]) -> RecordEntry:
    expected = "expected 'path,sha256=<64 hex digits>,<size>' as the csv module writes it"
    if '"' in line or "\r" in line:  # quoted: let csv parse it, then require its canonical form
        try:
            rows = list(csv.reader([line], strict=True))
        except csv.Error as exc:
            raise _refuse(f"line {number}: {expected}, got {_show(line)} ({exc})") from None
        fields = rows[0] if len(rows) == 1 else []
        canonical = _csv_line(fields) == line + "\n"
    else:  # the common case, 20x faster: no field needs quoting, so csv would split at every comma
        fields = line.split(",")
        canonical = True
    if len(fields) != 3 or not canonical:
        raise _refuse(f"line {number}: {expected}, got {_show(line)}")
    path, digest, size = fields
    hashed = _HASH.fullmatch(digest)
    if not path or hashed is None or _SIZE.fullmatch(size) is None:
        raise _refuse(f"line {number}: {expected}, got {_show(line)}")
    return RecordEntry(path=names.get(path, path), size=int(size), sha256=hashed.group(1))


def record_size_cap(names: Iterable[str]) -> int:
    """The most bytes a RECORD for these entry names can need (every path quoted, every quote doubled)."""
    per_line = len(',"sha256=,"\n') + 64 + 20 + 2
    return len(_SELF_LINE) + 1 + sum(2 * len(name.encode("utf-8")) + per_line for name in names)
