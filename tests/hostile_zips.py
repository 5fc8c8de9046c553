"""Builders of zip archives byte by byte, hostile ones included.

Why: ``zipfile`` refuses to write most of what an attacker can (symlink modes
are fine, but not lying sizes, mismatched local headers or overlapping data),
so tests and fuzzers build archives with ``struct`` here. Reused by
``tests/strategies.py`` and ``fuzz/``.
"""

from __future__ import annotations

import hashlib
import json
import stat
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "RawEntry",
    "build_zip",
    "deflate",
    "zero_bomb",
    "local_header",
    "central_header",
    "end_record",
    "overlapping_zip",
    "valid_metadata",
    "valid_package",
    "with_entry",
    "with_record",
    "record_bytes",
    "zip64_extra",
    "FILE_MODE",
    "DIR_MODE",
]

FILE_MODE = (stat.S_IFREG | 0o644) << 16
DIR_MODE = (stat.S_IFDIR | 0o755) << 16 | 0x10
_FLAG_UTF8 = 0x800


def deflate(data: bytes, level: int = 9) -> bytes:
    """Raw deflate (no zlib header), as zip stores it."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


_BOMBS: dict[int, tuple[bytes, int]] = {}


def zero_bomb(unpacked: int) -> tuple[bytes, int]:
    """Raw deflate of ``unpacked`` zero bytes, built in 1 MiB steps; returns (data, crc)."""
    if unpacked not in _BOMBS:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        block = bytes(1024 * 1024)
        parts, crc, left = [], 0, unpacked
        while left:
            piece = block[: min(left, len(block))]
            parts.append(compressor.compress(piece))
            crc = zlib.crc32(piece, crc)
            left -= len(piece)
        parts.append(compressor.flush())
        _BOMBS[unpacked] = (b"".join(parts), crc)
    return _BOMBS[unpacked]


@dataclass(frozen=True)
class RawEntry:
    """One member as written; every ``None`` override means "tell the truth"."""

    name: str | bytes
    data: bytes = b""
    method: int = 8
    flags: int = 0
    external_attr: int = FILE_MODE
    create_system: int = 3
    compressed: bytes | None = None  # data as stored (defaults to ``data`` compressed by ``method``)
    crc: int | None = None
    file_size: int | None = None
    compress_size: int | None = None
    local_name: bytes | None = None
    local_method: int | None = None
    local_flags: int | None = None
    extra: bytes = b""  # local header extra field
    central_extra: bytes = b""
    central_offset: int | None = None  # lie about where the local header is

    @property
    def raw_name(self) -> bytes:
        return self.name.encode("utf-8") if isinstance(self.name, str) else self.name

    @property
    def name_flags(self) -> int:
        utf8 = isinstance(self.name, str) and not self.name.isascii()
        return self.flags | (_FLAG_UTF8 if utf8 else 0)

    def stored_bytes(self) -> bytes:
        if self.compressed is not None:
            return self.compressed
        return deflate(self.data) if self.method == 8 else self.data


def local_header(
    name: bytes, *, method: int, flags: int, crc: int, csize: int, usize: int, extra: bytes = b""
) -> bytes:
    return (
        struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, method, 0, 0x21, crc, csize, usize, len(name), len(extra))
        + name
        + extra
    )


def central_header(
    name: bytes,
    *,
    method: int,
    flags: int,
    crc: int,
    csize: int,
    usize: int,
    offset: int,
    external_attr: int = FILE_MODE,
    create_system: int = 3,
    extra: bytes = b"",
) -> bytes:
    return (
        struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            (create_system << 8) | 20,
            20,
            flags,
            method,
            0,
            0x21,
            crc,
            csize,
            usize,
            len(name),
            len(extra),
            0,
            0,
            0,
            external_attr & 0xFFFFFFFF,
            offset,
        )
        + name
        + extra
    )


def end_record(count: int, cd_size: int, cd_offset: int, comment: bytes = b"") -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, len(comment)) + comment


def build_zip(entries: list[RawEntry] | tuple[RawEntry, ...], *, prefix: bytes = b"") -> bytes:
    """Lay out ``entries`` as local headers + data, then the central directory."""
    body = bytearray(prefix)
    central = bytearray()
    for entry in entries:
        stored = entry.stored_bytes()
        crc = zlib.crc32(entry.data) if entry.crc is None else entry.crc
        usize = len(entry.data) if entry.file_size is None else entry.file_size
        csize = len(stored) if entry.compress_size is None else entry.compress_size
        flags = entry.name_flags
        offset = len(body)
        body += local_header(
            entry.raw_name if entry.local_name is None else entry.local_name,
            method=entry.method if entry.local_method is None else entry.local_method,
            flags=flags if entry.local_flags is None else entry.local_flags,
            crc=crc,
            csize=csize,
            usize=usize,
            extra=entry.extra,
        )
        body += stored
        central += central_header(
            entry.raw_name,
            method=entry.method,
            flags=flags,
            crc=crc,
            csize=csize,
            usize=usize,
            offset=offset - len(prefix) if entry.central_offset is None else entry.central_offset,
            external_attr=entry.external_attr,
            create_system=entry.create_system,
            extra=entry.central_extra,
        )
    return bytes(body) + bytes(central) + end_record(len(entries), len(central), len(body) - len(prefix))


def zip64_extra(*values: int) -> bytes:
    """A zip64 extended-information extra field (id 1) holding 64-bit ``values``."""
    return struct.pack("<HH", 1, 8 * len(values)) + b"".join(struct.pack("<Q", v) for v in values)


def valid_metadata(**overrides: Any) -> dict[str, Any]:
    """A metadata.json in the seed's shape, every field present."""
    data: dict[str, Any] = {
        "id": "ai_chatbot",
        "name": "AI Chatbot",
        "version": "1.0.0",
        "author": "NextPanel",
        "description": "Answers customer questions.\nUses an LLM.",
        "category": "support",
        "price": 0,
        "requires": ["email_core>=1.2"],
        "backend": {
            "models": ["ChatSession"],
            "routes": ["/api/addons/ai_chatbot"],
            "dependencies": ["httpx>=0.24"],
        },
        "frontend": {
            "routes": [{"path": "/chatbot", "component": "ChatbotPage"}],
            "components": ["ChatWidget"],
            "dependencies": {"marked": "^9.0.0"},
        },
        "permissions": ["database.create_tables", "api.routes"],
    }
    data.update(overrides)
    return data


def valid_package(*extra: RawEntry, metadata: dict[str, Any] | None = None) -> list[RawEntry]:
    """The entries of a small well-formed package, plus ``extra`` ones."""
    meta = json.dumps(valid_metadata() if metadata is None else metadata).encode()
    return [
        RawEntry("metadata.json", meta),
        RawEntry("backend/", method=0, external_attr=DIR_MODE),
        RawEntry("backend/__init__.py", b"from .routes import router\n" * 20),
        RawEntry("backend/routes.py", b"router = None\n"),
        RawEntry("frontend/index.ts", b"export default {}\n", method=0),
        RawEntry("migrations/up.sql", b"CREATE TABLE chat (id INTEGER PRIMARY KEY);\n"),
        RawEntry("migrations/down.sql", b"DROP TABLE chat;\n"),
        RawEntry("README.md", "# AI Chatbot – ünïcode\n".encode()),
        *extra,
    ]


def overlapping_zip(inner_name: str = "backend/b.py", outer_name: str = "backend/a.py") -> bytes:
    """Two members whose spans overlap: the outer one's stored data *is* the inner's local header + data.

    Each local header matches its central entry, so only the overlap check can
    catch it (the building block of Fifield's non-recursive zip bomb).
    """
    meta = json.dumps(valid_metadata()).encode()
    meta_stored = deflate(meta)
    inner_data = b"print('inner')\n"
    inner_crc = zlib.crc32(inner_data)
    inner_raw = inner_name.encode()
    inner_local = (
        local_header(inner_raw, method=0, flags=0, crc=inner_crc, csize=len(inner_data), usize=len(inner_data))
        + inner_data
    )
    outer_raw = outer_name.encode()
    outer_crc = zlib.crc32(inner_local)

    body = bytearray()
    cd = bytearray()
    meta_off = len(body)
    body += local_header(
        b"metadata.json", method=8, flags=0, crc=zlib.crc32(meta), csize=len(meta_stored), usize=len(meta)
    )
    body += meta_stored
    outer_off = len(body)
    body += local_header(outer_raw, method=0, flags=0, crc=outer_crc, csize=len(inner_local), usize=len(inner_local))
    inner_off = len(body)
    body += inner_local
    cd += central_header(
        b"metadata.json",
        method=8,
        flags=0,
        crc=zlib.crc32(meta),
        csize=len(meta_stored),
        usize=len(meta),
        offset=meta_off,
    )
    cd += central_header(
        outer_raw, method=0, flags=0, crc=outer_crc, csize=len(inner_local), usize=len(inner_local), offset=outer_off
    )
    cd += central_header(
        inner_raw, method=0, flags=0, crc=inner_crc, csize=len(inner_data), usize=len(inner_data), offset=inner_off
    )
    return bytes(body) + bytes(cd) + end_record(3, len(cd), len(body))


def with_entry(entries: list[RawEntry], index: int, **changes: Any) -> list[RawEntry]:
    """A copy of ``entries`` with one entry changed."""
    result = list(entries)
    result[index] = replace(result[index], **changes)
    return result


def record_bytes(entries: list[RawEntry] | tuple[RawEntry, ...]) -> bytes:
    """The canonical RECORD (atomicplug.package_record's format) of the file entries' true contents."""
    lines = []
    for entry in sorted(entries, key=lambda e: e.raw_name):
        name = entry.name if isinstance(entry.name, str) else entry.name.decode("utf-8", "replace")
        if name.endswith("/"):
            continue
        field = f'"{name.replace(chr(34), chr(34) * 2)}"' if any(c in name for c in ',"') else name
        lines.append(f"{field},sha256={hashlib.sha256(entry.data).hexdigest()},{len(entry.data)}\n")
    return ("".join(lines) + "RECORD,,\n").encode()


def with_record(entries: list[RawEntry], record: bytes | None = None) -> list[RawEntry]:
    """``entries`` plus a RECORD entry (the true one unless ``record`` is given), last like ``pack`` puts it."""
    return [*entries, RawEntry("RECORD", record_bytes(entries) if record is None else record)]
