"""A store tree's file record, ``.atomicplug-record.json`` (docs/design.md "The tree record").

Why compact: the package's own RECORD is a file of every tree (an object, signed
inside the zip), and it already gives the path, size and sha256 of every file the
package ships. Repeating it as indented JSON cost ~0.9 MB per tree of the large
bench plugin, most of what ten 1 %-different versions add on disk. The record
therefore names RECORD (path, size, sha256) and lists only what RECORD does not
cover: the pycs staging adds (each with the sha256 of its source, so an upgrade
finds the pycs it can reuse without reading RECORD), and any other file that
differs from RECORD's line (a shipped pyc replaced by ours).

Format 2, UTF-8, one JSON value per line, no indentation, written entry by entry:

- line 1: ``{"format":2,"package_record":["RECORD",<size>,"<sha256>"]}``, or
  ``{"format":2}`` for a package without RECORD (then every file is listed);
- then one line per listed file, sorted by path: ``["<path>",<size>,"<sha256>"]``,
  or ``["<path>",<size>,"<sha256>","<sha256 of its source>"]`` for a pyc staging built.

Format 1 (atomicplug before this record) is one indented JSON document,
``{"files": [{"path": …, "size": …, "sha256": …}, …]}`` listing every file; it is
still read (its first line is ``{``). :func:`read_record` gives the complete
list either way, and trusts RECORD only once its size and sha256 match the record.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from atomicplug.errors import PackageError
from atomicplug.layout import RECORD_NAME as PACKAGE_RECORD_NAME
from atomicplug.package_record import PackageRecord, RecordEntry

__all__ = ["RECORD_NAME", "TreeRecord", "TreeRecordError", "write_record", "record_lines", "read_record", "read_pyc_index"]

RECORD_NAME = ".atomicplug-record.json"
FORMAT = 2
_SHA256 = re.compile(r"[0-9a-f]{64}")


class TreeRecordError(ValueError):
    """A tree's file list cannot be trusted: ``path`` (relative to the tree) is damaged or unreadable.

    ``trusted``: the entries the tree record still vouches for itself (the package
    RECORD's own entry and the files it lists), so ``verify`` can show the damage
    and a reinstall can repair RECORD from the package.
    """

    def __init__(self, path: str, message: str, trusted: tuple[RecordEntry, ...] = ()) -> None:
        super().__init__(message)
        self.path = path
        self.trusted = trusted


@attrs.frozen
class TreeRecord:
    """A tree record as written: the package RECORD it names, the files it lists, their pycs' sources.

    ``package_record`` is None when ``listed`` is every file (a package without
    RECORD, or format 1). ``sources`` maps a listed pyc's path to its source's sha256.
    """

    package_record: RecordEntry | None
    listed: tuple[RecordEntry, ...]
    sources: Mapping[str, str]

    @classmethod
    def read(cls, tree: Path) -> TreeRecord:
        """Parse ``tree``'s record (RECORD is not read); TreeRecordError when it is malformed or missing
        from a tree that is there (removed by hand: its files are unknown, not none), OSError when
        unreadable (FileNotFoundError: the tree itself is gone)."""
        try:
            text = (tree / RECORD_NAME).read_bytes()
        except FileNotFoundError:
            if not tree.is_dir():
                raise
            raise TreeRecordError(RECORD_NAME, f"{tree / RECORD_NAME} is missing") from None
        try:
            first, _, rest = text.decode("utf-8").partition("\n")
            if first == "{":
                return cls._from_format1(json.loads(text))
            return cls._from_lines(json.loads(first), rest)
        except (ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise TreeRecordError(RECORD_NAME, f"{tree / RECORD_NAME}: expected a tree record, got {exc}") from None

    @classmethod
    def _from_format1(cls, data: dict[str, Any]) -> TreeRecord:
        from atomicplug.pycs import pyc_sources

        listed = tuple(RecordEntry(path=str(e["path"]), size=int(e["size"]), sha256=str(e["sha256"])) for e in data["files"])
        return cls(package_record=None, listed=listed, sources=pyc_sources(listed))

    @classmethod
    def _from_lines(cls, header: dict[str, Any], rest: str) -> TreeRecord:
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"format {FORMAT} on the first line, got {str(header)[:80]!r}")
        named = header.get("package_record")
        package_record = _entry(named) if named is not None else None
        if package_record is not None and package_record.path != PACKAGE_RECORD_NAME:
            raise ValueError(f"the package record at {PACKAGE_RECORD_NAME!r}, got {package_record.path!r}")
        if rest and not rest.endswith("\n"):
            raise ValueError("a newline at the end")
        listed, sources = [], {}
        for line in rest[:-1].split("\n") if rest else ():
            fields = json.loads(line)
            listed.append(_entry(fields[:3]))
            if len(fields) == 4:
                sources[fields[0]] = _sha256(fields[3])
            elif len(fields) != 3:
                raise ValueError(f"[path, size, sha256] or [path, size, sha256, source sha256], got {line[:120]!r}")
        return cls(package_record=package_record, listed=tuple(listed), sources=sources)

    def files(self, tree: Path) -> list[RecordEntry]:
        """Every file of ``tree``, sorted by path: RECORD's lines (once RECORD matches this record) and the listed ones.

        Raises TreeRecordError when RECORD is missing or differs from what this record names.
        """
        named = self.package_record
        if named is None:
            return sorted(self.listed, key=lambda f: f.path)
        trusted = (named, *self.listed)
        try:
            data = (tree / named.path).read_bytes()
        except OSError as exc:  # gone, or no longer a file
            raise TreeRecordError(named.path, f"{tree / named.path}: {exc.strerror or exc}", trusted) from None
        digest = hashlib.sha256(data).hexdigest()
        if (len(data), digest) != (named.size, named.sha256):
            raise TreeRecordError(
                named.path,
                f"{tree / named.path}: expected {named.size} bytes with sha256 {named.sha256}, got {len(data)} with {digest}",
                trusted,
            )
        try:
            by_path = dict(PackageRecord.from_bytes(data).files)
        except PackageError as exc:  # pragma: no cover - it was parsed before this record named its sha256
            raise TreeRecordError(named.path, f"{tree / named.path}: {exc}", trusted) from None
        # Beside a signed RECORD, staging lists only the pycs it built, each of a source RECORD lists,
        # with that source's sha256: any other line (four fields make no pyc) was written by hand, and
        # must not vouch for a file the package does not ship.
        foreign = [f for f in self.listed if not self._built_pyc(f.path, by_path)]
        if foreign:
            pycs = tuple(f for f in self.listed if f not in foreign)
            message = f"{tree / RECORD_NAME}: lists {foreign[0].path!r} beside the package RECORD (only the pycs staging built may be)"
            raise TreeRecordError(RECORD_NAME, message, (named, *pycs))
        by_path.update((f.path, f) for f in trusted)  # a listed file differs from its RECORD line (a replaced pyc)
        return sorted(by_path.values(), key=lambda f: f.path)

    def _built_pyc(self, path: str, package: Mapping[str, RecordEntry]) -> bool:
        """``path`` is this interpreter's pyc of a backend source ``package`` (RECORD) lists with the
        sha256 this record gives for it."""
        from atomicplug.pycs import wants_source

        if path not in self.sources:
            return False
        try:
            source = importlib.util.source_from_cache(path)
        except ValueError:  # not a pyc path of this interpreter
            return False
        listed = package.get(source)
        return wants_source(source) and listed is not None and listed.sha256 == self.sources[path]

    def pyc_index(self) -> dict[str, RecordEntry]:
        """Source sha256 → the entry of the pyc staging built for it (RECORD is not read): only this
        interpreter's level-0 pycs, which a new tree may reuse (not an ``.opt-1`` one, nor another
        Python's)."""
        from atomicplug.pycs import is_plain_pyc

        return {self.sources[f.path]: f for f in self.listed if f.path in self.sources and is_plain_pyc(f.path)}


def _sha256(value: object) -> str:
    if not isinstance(value, str) or _SHA256.fullmatch(value) is None:
        raise ValueError(f"a sha256 of 64 lowercase hex digits, got {str(value)[:80]!r}")
    return value


def _entry(fields: object) -> RecordEntry:
    if not (isinstance(fields, list) and len(fields) == 3 and isinstance(fields[0], str) and type(fields[1]) is int):
        raise ValueError(f"[path, size, sha256], got {str(fields)[:120]!r}")
    return RecordEntry(path=fields[0], size=fields[1], sha256=_sha256(fields[2]))


def write_record(tree: Path, files: Iterable[RecordEntry], package: Iterable[RecordEntry] | None = None) -> None:
    """Write ``tree``'s record for ``files``, every file of the tree (the caller fsyncs the tree).

    ``package``: the package's own file entries when it has a RECORD (RECORD's
    included); the files equal to one of them are not repeated. Written line by
    line: the whole record at once was ~5 MiB for the large bench plugin, the
    peak of its install (issue 14, memory).
    """
    with open(tree / RECORD_NAME, "w", encoding="utf-8") as handle:
        handle.writelines(record_lines(files, package))


def record_lines(files: Iterable[RecordEntry], package: Iterable[RecordEntry] | None = None) -> Iterator[str]:
    """The lines of the record :func:`write_record` writes (for a repair that replaces one whole)."""
    from atomicplug.pycs import pyc_sources

    files = sorted(files, key=lambda f: f.path)
    covered: dict[str, RecordEntry] = {f.path: f for f in package} if package is not None else {}
    named = covered.get(PACKAGE_RECORD_NAME)
    if package is not None and named is None:
        raise ValueError(f"expected {PACKAGE_RECORD_NAME!r} among the package's files, got none")
    paths = {f.path for f in files}
    if not paths.issuperset(covered):
        raise ValueError(f"expected every package file in the tree, got {sorted(set(covered) - paths)[:3]} missing")
    sources = pyc_sources(files)
    header: dict[str, Any] = {"format": FORMAT}
    if named is not None:
        header["package_record"] = [named.path, named.size, named.sha256]
    yield json.dumps(header, separators=(",", ":")) + "\n"
    for f in files:
        if covered.get(f.path) == f:
            continue
        source = sources.get(f.path)
        yield f'[{json.dumps(f.path)},{int(f.size)},"{f.sha256}"' + (f',"{source}"]\n' if source else "]\n")


def read_record(tree: Path) -> list[RecordEntry]:
    """Every file of ``tree`` with size and sha256, sorted by path.

    Raises TreeRecordError when the record is malformed or the package RECORD it
    names is missing or differs; OSError when the record cannot be read.
    """
    return TreeRecord.read(tree).files(tree)


def read_pyc_index(tree: Path) -> dict[str, RecordEntry]:
    """Source sha256 → pyc entry, from ``tree``'s record alone (a format-2 record's pyc lines; RECORD is not read)."""
    return TreeRecord.read(tree).pyc_index()
