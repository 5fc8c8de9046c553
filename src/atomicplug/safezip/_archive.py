"""Read a zip's structure and stream its members under caps (docs/design.md "Safe extraction").

Why: ``zipfile`` trusts sizes the archive claims and (in Python 3.11) does not
notice members whose data overlap. Here the central directory is parsed by
``zipfile`` only for its fields; every local header is read and compared, the
spans of all members are checked for overlap, and data is inflated by hand in
64 KiB chunks, counting the bytes that actually come out.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

import attrs

from atomicplug.config import ExtractLimits
from atomicplug.errors import PackageError
from atomicplug.layout import RECORD_NAME
from atomicplug.package_record import record_size_cap
from atomicplug.safezip._names import (
    METADATA_NAME,
    check_mode,
    check_name,
    collision_key,
    decode_name,
    refuse,
    show,
)

__all__ = ["CHUNK", "RATIO_FLOOR_BYTES", "PackageSource", "Entry", "Archive", "Budget"]

CHUNK = 64 * 1024
#: Below this many unpacked bytes the ratio cap does not apply (tiny files compress well).
RATIO_FLOOR_BYTES = 1024 * 1024

_LOCAL_HEADER = b"PK\x03\x04"
_LOCAL_HEADER_SIZE = 30
_FLAG_ENCRYPTED = 0x0001
_FLAG_STRONG_ENCRYPTION = 0x0040
_FLAG_UTF8 = 0x0800
_FLAG_MASKED_HEADERS = 0x2000
_SUPPORTED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}

#: A zip's path, or an open binary file holding it (seekable).
PackageSource = str | os.PathLike[str] | BinaryIO
_T = TypeVar("_T")


@attrs.frozen
class Entry:
    """One validated member: its checked name and where its data lies."""

    name: str  # posix relative path, no trailing '/'
    is_dir: bool
    method: int
    crc: int
    compress_size: int
    file_size: int
    header_offset: int
    data_offset: int = -1

    @property
    def parts(self) -> tuple[str, ...]:
        """The name's checked components (not kept: 5000 entries' tuples were ~1.4 MiB of a large install's peak)."""
        return tuple(self.name.split("/"))


class Budget:
    """Running totals of bytes actually inflated, against the caps."""

    def __init__(self, limits: ExtractLimits, total_compressed: int, cap: tuple[str, int] | None = None) -> None:
        self.limits = limits
        self.cap_name, self.cap = cap or ("max_unpacked_bytes", limits.max_unpacked_bytes)
        self.total_out = 0
        self.total_cap = max(RATIO_FLOOR_BYTES, limits.max_ratio * total_compressed)

    def take(self, entry: Entry, entry_out: int, n: int) -> None:
        self.total_out += n
        if self.total_out > self.cap:
            raise refuse(entry.name, f"inflates past {self.cap_name} ({self.cap} bytes)")
        if entry_out > max(RATIO_FLOOR_BYTES, self.limits.max_ratio * entry.compress_size):
            raise refuse(entry.name, f"inflates more than max_ratio ({self.limits.max_ratio}:1)")
        if self.total_out > self.total_cap:
            raise refuse(entry.name, f"takes the package past max_ratio ({self.limits.max_ratio}:1) overall")


class Archive:
    """An opened, fully validated archive; use as a context manager.

    Opening checks everything that needs no decompression; :meth:`stream`
    checks the rest while inflating.
    """

    def __init__(self, fp: BinaryIO, entries: tuple[Entry, ...], limits: ExtractLimits, sha256: str | None = None) -> None:
        self._fp = fp
        self.entries = entries
        self.limits = limits
        self.sha256 = sha256

    @classmethod
    def open(cls, source: PackageSource, limits: ExtractLimits, *, sha256: str | None = None) -> Archive:
        """Open and validate a zip: a path, or a seekable binary file object the caller keeps open
        (read from any position, never closed: the caller may have hashed it and extract from the
        very same open file); PackageError only.

        ``sha256``: the caller has just hashed ``source``'s bytes to it. The same bytes
        validate the same way, so an archive of that sha256 validated earlier in this
        process (intake's check, then the extraction) is not validated again.
        """
        if hasattr(source, "read"):
            fp = _Borrowed(source)  # type: ignore[arg-type]
        else:
            try:
                fp = open(source, "rb")  # type: ignore[arg-type]  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise PackageError(f"cannot read package {os.fspath(source)}: {exc.strerror or exc}") from exc  # type: ignore[arg-type]
        try:
            entries = _remembered(sha256, limits, "entries", lambda: _validate(fp, limits))
            return cls(fp, entries, limits, sha256)
        except BaseException:
            fp.close()
            raise

    def close(self) -> None:
        self._fp.close()

    def remembered(self, what: str, compute: Callable[[], _T]) -> _T:
        """``compute()`` about this archive, once per process per sha256 (see :func:`_remembered`)."""
        return _remembered(self.sha256, self.limits, what, compute)

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def total_compressed(self) -> int:
        return sum(e.compress_size for e in self.entries)

    def metadata_entry(self) -> Entry:
        for entry in self.entries:
            if entry.name == METADATA_NAME:
                return entry
        raise PackageError("package has no metadata.json at its top level")  # pragma: no cover - checked in _validate

    def record_entry(self) -> Entry | None:
        """The top-level RECORD file, if the package has one."""
        return next((e for e in self.entries if e.name == RECORD_NAME and not e.is_dir), None)

    def record_cap(self) -> tuple[str, int]:
        """What a RECORD may inflate to: enough for every entry's line, quoted (see package_record)."""
        return ("the RECORD size limit", record_size_cap(e.name for e in self.entries))

    def read_small(self, entry: Entry, cap: tuple[str, int]) -> bytes:
        """Inflate one small member (metadata.json) into memory, at most ``cap`` bytes."""
        budget = Budget(self.limits, entry.compress_size, cap)
        return b"".join(self.stream(entry, budget))

    def stream(self, entry: Entry, budget: Budget) -> Iterator[bytes]:
        """Yield the member's bytes in chunks of at most 64 KiB, checking caps and CRC."""
        crc = 0
        out = 0
        try:
            for chunk in self._inflate(entry):
                out += len(chunk)
                budget.take(entry, out, len(chunk))
                crc = zlib.crc32(chunk, crc)
                yield chunk
        except zlib.error as exc:
            raise refuse(entry.name, f"has corrupt compressed data ({exc})") from exc
        except OSError as exc:
            raise refuse(entry.name, f"cannot be read ({exc.strerror or exc})") from exc
        if out != entry.file_size:
            raise refuse(entry.name, f"inflates to {out} bytes but the archive claims {entry.file_size}")
        if crc != entry.crc:
            raise refuse(entry.name, f"fails its CRC-32 check (got {crc:08x}, archive says {entry.crc:08x})")

    def _read_compressed(self, entry: Entry) -> Iterator[bytes]:
        self._fp.seek(entry.data_offset)
        remaining = entry.compress_size
        while remaining:
            data = self._fp.read(min(CHUNK, remaining))
            if not data:
                raise refuse(entry.name, "is truncated (the archive ends inside its data)")
            remaining -= len(data)
            yield data

    def _inflate(self, entry: Entry) -> Iterator[bytes]:
        if entry.method == zipfile.ZIP_STORED:
            yield from self._read_compressed(entry)
            return
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        for data in self._read_compressed(entry):
            if inflater.eof:
                raise refuse(entry.name, "has data after the end of its deflate stream")
            chunk = inflater.decompress(data, CHUNK)
            while chunk:
                yield chunk
                chunk = inflater.decompress(inflater.unconsumed_tail, CHUNK)
        if not inflater.eof:
            raise refuse(entry.name, "is truncated (its deflate stream does not end)")
        if inflater.unused_data or inflater.unconsumed_tail:
            raise refuse(entry.name, "has data after the end of its deflate stream")


class _Borrowed:
    """A caller's open file object: read and seek through it, but closing is the caller's."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp

    def __getattr__(self, name: str) -> object:
        return getattr(self._fp, name)

    def close(self) -> None:
        pass


#: How many answers about archives (by sha256, limits and what was asked) this process remembers:
#: intake's validation of a package and its parsed RECORD then serve the extraction that follows
#: (for the 5000-entry bench plugin ~0.17 s and ~0.05 s of each install and upgrade,
#: bench/README.md). Refusals are not kept.
_REMEMBERED = 8
_remembered_answers: OrderedDict[tuple[str, ExtractLimits, str], object] = OrderedDict()
_remembering = threading.Lock()


def _remembered(sha256: str | None, limits: ExtractLimits, what: str, compute: Callable[[], _T]) -> _T:
    """``compute()``, or its answer for the same bytes (``sha256``, which the caller has just hashed) and limits."""
    if sha256 is None:
        return compute()
    key = (sha256, limits, what)
    with _remembering:
        if key in _remembered_answers:
            _remembered_answers.move_to_end(key)
            return _remembered_answers[key]  # type: ignore[return-value]
    answer = compute()
    with _remembering:
        _remembered_answers[key] = answer
        while len(_remembered_answers) > _REMEMBERED:
            _remembered_answers.popitem(last=False)
    return answer


def _validate(fp: BinaryIO, limits: ExtractLimits) -> tuple[Entry, ...]:
    """Every check that needs no decompression, over the whole archive."""
    try:
        with zipfile.ZipFile(fp) as zf:  # parses the central directory only
            infos = zf.infolist()
            cd_start = int(getattr(zf, "start_dir", 0))
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise PackageError(f"package is not a readable zip archive ({exc})") from exc
    except Exception as exc:  # struct.error, NotImplementedError, UnicodeDecodeError, OSError ...
        raise PackageError(f"package is not a readable zip archive ({type(exc).__name__}: {exc})") from exc
    del zf  # its name index holds every ZipInfo too
    if len(infos) > limits.max_entries:
        raise PackageError(f"package has {len(infos)} entries, more than max_entries ({limits.max_entries})")
    # Each ZipInfo freed as its entry is made, in order: never both of every entry at once
    # (~2 MiB at the large bench plugin's 5025 entries, the top of an install's memory, issue 14).
    infos.reverse()
    entries = []
    while infos:
        entries.append(_check_info(infos.pop(), limits))
    _check_collisions(entries)
    _check_declared_sizes(entries, limits)
    fp.seek(0, io.SEEK_END)
    end = min(cd_start, fp.tell())
    try:
        return _check_local_headers(fp, entries, end)
    except (OSError, ValueError, OverflowError) as exc:
        raise PackageError(f"package cannot be read ({type(exc).__name__}: {exc})") from exc


def _check_info(info: zipfile.ZipInfo, limits: ExtractLimits) -> Entry:
    utf8 = bool(info.flag_bits & _FLAG_UTF8)
    try:
        raw = info.orig_filename.encode("utf-8" if utf8 else "cp437")
    except UnicodeEncodeError:  # pragma: no cover - zipfile decoded it from these bytes
        raw = info.orig_filename.encode("utf-8", "surrogateescape")
    name = decode_name(raw, utf8)
    if info.flag_bits & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION | _FLAG_MASKED_HEADERS):
        raise refuse(name, "is encrypted (encrypted entries are not allowed)")
    if info.compress_type not in _SUPPORTED_METHODS:
        raise refuse(name, f"uses unsupported compression method {info.compress_type} (only stored and deflated)")
    parts, is_dir = check_name(name, limits)
    check_mode(name, info.external_attr)
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise refuse(name, "is stored but its compressed and uncompressed sizes differ")
    if is_dir and info.file_size:
        raise refuse(name, "is a folder entry with data")
    if info.header_offset < 0:
        raise refuse(name, "has a negative local header offset")
    return Entry(
        name="/".join(parts),
        is_dir=is_dir,
        method=info.compress_type,
        crc=info.CRC,
        compress_size=info.compress_size,
        file_size=info.file_size,
        header_offset=info.header_offset,
    )


def _check_collisions(entries: list[Entry]) -> None:
    """Duplicates (after case-folding and NFC), and a file used as a folder."""
    seen: dict[str, Entry] = {}
    for entry in entries:
        key = collision_key(entry.parts)
        if key in seen:
            raise refuse(entry.name, f"duplicates entry {show(seen[key].name)} (names compared case-folded and NFC)")
        seen[key] = entry
    files = {k for k, e in seen.items() if not e.is_dir}
    folder_keys: dict[tuple[str, ...], str] = {}  # thousands of entries share a few folders: each folder's key once
    spellings: dict[str, tuple[str, ...]] = {}  # a folder's key -> its first spelling: two would merge on disk
    for entry in entries:
        parts = entry.parts
        for depth in range(1, len(parts) + entry.is_dir):  # a folder entry is a folder itself
            folder = parts[:depth]
            parent = folder_keys.get(folder)
            if parent is None:
                parent = folder_keys[folder] = collision_key(folder)
                first = spellings.setdefault(parent, folder)
                if first != folder:
                    raise refuse(
                        entry.name,
                        f"lies in folder {show('/'.join(folder))}, the same folder as {show('/'.join(first))} "
                        "(names compared case-folded and NFC)",
                    )
            if parent in files:
                raise refuse(entry.name, f"lies inside {show(seen[parent].name)}, which is a file")
    if collision_key((METADATA_NAME,)) not in files or METADATA_NAME not in {e.name for e in entries}:
        raise PackageError("package has no metadata.json at its top level")


def _check_declared_sizes(entries: list[Entry], limits: ExtractLimits) -> None:
    """Cheap early refusals on claimed sizes; the real caps count streamed bytes."""
    record_cap = record_size_cap(e.name for e in entries)
    for entry in entries:
        if entry.name == METADATA_NAME and entry.file_size > limits.max_metadata_bytes:
            raise refuse(entry.name, f"is larger than max_metadata_bytes ({limits.max_metadata_bytes})")
        if entry.name == RECORD_NAME and entry.file_size > record_cap:
            raise refuse(entry.name, f"is larger than a RECORD of this package can be ({record_cap} bytes)")
    claimed = sum(e.file_size for e in entries)
    if claimed > limits.max_unpacked_bytes:
        raise PackageError(
            f"package claims {claimed} unpacked bytes, more than max_unpacked_bytes ({limits.max_unpacked_bytes})"
        )


def _check_local_headers(fp: BinaryIO, entries: list[Entry], end: int) -> tuple[Entry, ...]:
    """Compare each local header with the central directory; refuse overlapping spans."""
    read_at = _reader_at(fp)
    placed: list[Entry] = []
    for entry in entries:
        if entry.header_offset + _LOCAL_HEADER_SIZE > end:
            raise refuse(entry.name, "has a local header offset outside the archive data")
        central = entry.name + ("/" if entry.is_dir else "")
        expected_name = central.encode("utf-8", "surrogateescape")
        block = read_at(entry.header_offset, _LOCAL_HEADER_SIZE + len(expected_name))  # header and name: one read
        header = block[:_LOCAL_HEADER_SIZE]
        if len(header) < _LOCAL_HEADER_SIZE or header[:4] != _LOCAL_HEADER:
            raise refuse(entry.name, "has no valid local file header at its offset")
        flags = int.from_bytes(header[6:8], "little")
        method = int.from_bytes(header[8:10], "little")
        name_len = int.from_bytes(header[26:28], "little")
        extra_len = int.from_bytes(header[28:30], "little")
        raw_name = block[_LOCAL_HEADER_SIZE:] if name_len == len(expected_name) else read_at(entry.header_offset + _LOCAL_HEADER_SIZE, name_len)
        if len(raw_name) < name_len:
            raise refuse(entry.name, "is truncated (the archive ends inside its local header)")
        try:
            local_name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            local_name = raw_name.decode("utf-8", "backslashreplace")
        if local_name != central:
            raise refuse(central, f"has a different name in its local header ({show(local_name)})")
        if flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
            raise refuse(entry.name, "is encrypted (encrypted entries are not allowed)")
        if method != entry.method:
            raise refuse(entry.name, "has a different compression method in its local header")
        data_offset = entry.header_offset + _LOCAL_HEADER_SIZE + name_len + extra_len
        if data_offset + entry.compress_size > end:
            raise refuse(entry.name, "is truncated or runs into the central directory")
        placed.append(_placed(entry, data_offset))
    ordered = sorted(placed, key=lambda e: e.header_offset)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.header_offset < before.data_offset + before.compress_size:
            raise refuse(after.name, f"overlaps the data of entry {show(before.name)}")
    return tuple(placed)


def _placed(entry: Entry, data_offset: int) -> Entry:
    """``entry`` with its data offset (what ``attrs.evolve`` does, at a third of its cost per entry)."""
    return Entry(
        entry.name, entry.is_dir, entry.method, entry.crc, entry.compress_size, entry.file_size, entry.header_offset, data_offset
    )


def _reader_at(fp: BinaryIO) -> Callable[[int, int], bytes]:
    """``read_at(offset, n)``: one ``pread`` for a real file (no seek, no buffer refill), else seek + read."""
    try:
        fd = fp.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):

        def seek_read(offset: int, n: int) -> bytes:
            fp.seek(offset)
            return fp.read(n)

        return seek_read
    return lambda offset, n: os.pread(fd, n, offset)
