"""Hypothesis strategies for hostile packages and metadata; reused by ``fuzz/``.

Why: the safe extractor's promise is about *any* input, so the generators lean
towards the inputs that break naive extractors (``..``, ``\\``, NUL, drive
letters, case and NFC twins, lying sizes, odd flags, modes and methods) while
still producing well-formed packages often enough to exercise the write path.
"""

from __future__ import annotations

import json
import stat
import unicodedata
from typing import Any

from hostile_zips import (
    DIR_MODE,
    FILE_MODE,
    RawEntry,
    build_zip,
    overlapping_zip,
    record_bytes,
    valid_metadata,
    valid_package,
    with_record,
    zip64_extra,
)
from hypothesis import strategies as st

__all__ = [
    "entry_names",
    "raw_entries",
    "benign_entries",
    "safe_names",
    "archives",
    "lying_packages",
    "mutated_zip_bytes",
    "metadata_dicts",
    "json_values",
    "metadata_bytes",
    "record_entries",
    "mutated_record_bytes",
    "recorded_packages",
]

_COMPONENTS = [
    "backend", "frontend", "migrations", "README.md", "LICENSE", "metadata.json", "Backend", "BACKEND",
    "a.py", "A.py", "x", "..", ".", "", "\\", "..\\..", "C:", "c:", "/", "x\x00y", "\x1b[0m", "\u202e",
    unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café"), "ß", "SS", "İ",
    "a" * 256, "setup.py", "con", "evil",
]  # fmt: skip

_MODES = [
    0,
    FILE_MODE,
    DIR_MODE,
    (stat.S_IFLNK | 0o777) << 16,
    (stat.S_IFCHR | 0o600) << 16,
    (stat.S_IFIFO | 0o600) << 16,
    (stat.S_IFSOCK | 0o600) << 16,
    (stat.S_IFREG | stat.S_ISUID | 0o755) << 16,
    (stat.S_IFREG | stat.S_ISGID | 0o755) << 16,
    0x10,
]


@st.composite
def entry_names(draw: st.DrawFn) -> str | bytes:
    """Names mixing the package layout with every trick in the book."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=40))
    if kind == 1:
        return draw(st.text(max_size=40))
    top = draw(st.sampled_from(["backend", "frontend", "migrations", "README.md", "metadata.json", "LICENSE"]))
    rest = draw(st.lists(st.one_of(st.sampled_from(_COMPONENTS), st.text(max_size=8)), max_size=4))
    sep = draw(st.sampled_from(["/", "/", "/", "\\", "//"]))
    name = sep.join([top, *rest])
    if draw(st.booleans()):
        name += "/"
    if draw(st.integers(0, 9)) == 0:
        name = "/" + name
    return name


_SAFE_TEXT = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=12)


@st.composite
def safe_names(draw: st.DrawFn) -> str:
    """An allowed file name under backend/, frontend/ or migrations/."""
    top = draw(st.sampled_from(["backend", "frontend", "migrations"]))
    parts = draw(st.lists(_SAFE_TEXT, min_size=1, max_size=3))
    return "/".join([top, *parts]) + ".x"


@st.composite
def _payload(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    return bytes([draw(st.integers(0, 255))]) * draw(st.integers(0, 300_000))


@st.composite
def raw_entries(
    draw: st.DrawFn, name: st.SearchStrategy[str | bytes] | None = None, aspect: str | None = None
) -> RawEntry:
    """One member that is hostile in one aspect (name, method, flags, mode, a lie) or in all."""
    if aspect is None:
        aspect = draw(st.sampled_from(["name", "method", "flags", "mode", "lie", "lie", "lie", "all"]))
    hostile = aspect == "all"
    names = name if name is not None else (entry_names() if hostile or aspect == "name" else safe_names())
    entry = RawEntry(
        name=draw(names),
        data=draw(_payload()),
        method=draw(st.sampled_from([0, 8, 1, 12, 14, 99] if hostile or aspect == "method" else [0, 8])),
        flags=draw(st.sampled_from([0, 0x1, 0x8, 0x40, 0x800, 0x2000] if hostile or aspect == "flags" else [0, 0x8])),
        external_attr=draw(st.sampled_from(_MODES if hostile or aspect == "mode" else [0, FILE_MODE])),
        create_system=draw(st.sampled_from([3, 0, 19])),
    )
    overrides: dict[str, Any] = {}
    lie = draw(st.integers(1, 11)) if hostile or aspect == "lie" else 0
    if lie == 1:
        overrides["crc"] = draw(st.integers(0, 2**32 - 1))
    elif lie == 2:
        overrides["file_size"] = draw(st.integers(0, 2**32 - 1))
    elif lie == 3:
        overrides["compress_size"] = draw(st.integers(0, 2**20))
    elif lie == 4:
        overrides["local_name"] = draw(st.binary(max_size=20))
    elif lie == 5:
        overrides["local_method"] = draw(st.sampled_from([0, 8, 12]))
    elif lie == 6:
        overrides["compressed"] = draw(st.binary(max_size=200))
    elif lie == 7:
        overrides["local_flags"] = draw(st.integers(0, 0xFFFF))
    elif lie == 8:
        overrides["flags"] = draw(st.integers(0, 0xFFFF))
    elif lie == 9:  # zip64: 0xFFFFFFFF in the central entry, the real value (or a lie) in the extra
        big = st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1])
        values = draw(st.lists(st.one_of(st.integers(0, 2**64 - 1), big), max_size=3))
        overrides["central_extra"] = zip64_extra(*values)
        keys = st.sampled_from(["file_size", "compress_size", "central_offset"])
        for key in draw(st.one_of(st.just(["central_offset"]), st.lists(keys, unique=True))):
            overrides[key] = 0xFFFFFFFF
    elif lie == 10:
        overrides["central_offset"] = draw(st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 2000)))
    elif lie == 11:
        overrides["extra"] = draw(st.binary(max_size=64))
    if overrides:
        entry = RawEntry(**{**entry.__dict__, **overrides})
    return entry


@st.composite
def benign_entries(draw: st.DrawFn) -> RawEntry:
    """A truthful member with an allowed name (not necessarily unique)."""
    return RawEntry(draw(safe_names()), draw(_payload()), method=draw(st.sampled_from([0, 8])))


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    """Whole archives: often a valid package plus hostile members, sometimes pure chaos."""
    base = draw(st.sampled_from(["valid", "valid", "valid", "empty", "metadata_only", "overlap"]))
    if base == "overlap":
        return overlapping_zip(draw(safe_names()), draw(safe_names()))
    if base == "valid":
        entries = valid_package()
    elif base == "metadata_only":
        entries = [RawEntry("metadata.json", json.dumps(valid_metadata()).encode())]
    else:
        entries = []
    members = st.one_of(raw_entries(), benign_entries())
    hostile = draw(st.lists(members, max_size=4, unique_by=lambda e: e.raw_name.lower()))
    entries = entries + hostile
    shuffle = draw(st.booleans())
    if entries and shuffle:
        entries = list(draw(st.permutations(entries)))
    prefix = draw(st.sampled_from([b"", b"", b"", b"#!/bin/sh\nexit 0\n"]))
    return build_zip(entries, prefix=prefix)


@st.composite
def lying_packages(draw: st.DrawFn) -> bytes:
    """A valid package plus members with allowed names whose headers lie (sizes, CRC, offsets, zip64)."""
    liars = draw(st.lists(raw_entries(name=safe_names(), aspect="lie"), min_size=1, max_size=3))
    entries = valid_package() + liars
    return build_zip(list(draw(st.permutations(entries))))


@st.composite
def mutated_zip_bytes(draw: st.DrawFn, base: bytes | None = None) -> bytes:
    """A valid package's bytes (``base``, else the seed package), then flipped, truncated, spliced or extended."""
    data = bytearray(build_zip(valid_package()) if base is None else base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        if op == 0 and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == 1:
            del data[draw(st.integers(0, len(data))) :]
        elif op == 2:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == 3 and data:
            i = draw(st.integers(0, len(data) - 1))
            del data[i : i + draw(st.integers(1, 64))]
        elif op == 4 and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i : i + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]))
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def metadata_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """The seed's metadata with some fields replaced by arbitrary JSON or dropped."""
    data = valid_metadata()
    fields = list(data)
    for key in draw(st.lists(st.sampled_from(fields), max_size=4, unique=True)):
        if draw(st.booleans()):
            del data[key]
        else:
            data[key] = draw(json_values)
    return data


@st.composite
def metadata_bytes(draw: st.DrawFn) -> bytes:
    """Bytes for Metadata.from_json_bytes: serialized dicts, mutated JSON, or noise."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    text = bytearray(json.dumps(draw(metadata_dicts())).encode())
    if kind == 3 and text:
        i = draw(st.integers(0, len(text) - 1))
        text[i] = draw(st.integers(0, 255))
    return bytes(text)


_RECORD_PATHS = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30
).filter(lambda p: p != "RECORD")


@st.composite
def record_entries(draw: st.DrawFn) -> list[Any]:
    """Distinct RECORD lines: any printable path (commas and quotes included), a sha256, a size."""
    from atomicplug.package_record import RecordEntry

    paths = draw(st.lists(_RECORD_PATHS, max_size=12, unique=True))
    return [
        RecordEntry(path, draw(st.integers(0, 2**63)), draw(st.binary(min_size=32, max_size=32)).hex()) for path in paths
    ]


@st.composite
def mutated_record_bytes(draw: st.DrawFn) -> bytes:
    """A canonical RECORD's bytes, then flipped, cut, spliced or with a line doubled."""
    from atomicplug.package_record import PackageRecord

    data = bytearray(PackageRecord.from_entries(draw(record_entries())).to_bytes())
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, len(data) - 1))
        if op == 0:
            data[i] = draw(st.sampled_from(b',"\n\r =0aA\xff'))
        elif op == 1:
            del data[i : i + draw(st.integers(1, 8))]
        elif op == 2:
            data[i:i] = draw(st.sampled_from([b",", b'"', b"\n", b"\r\n", b" ", b"sha256=", b"RECORD,,\n"]))
        else:
            lines = bytes(data).splitlines(keepends=True)
            data = bytearray(b"".join([*lines, lines[draw(st.integers(0, len(lines) - 1))]]))
    return bytes(data)


@st.composite
def recorded_packages(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A valid package with a RECORD: the true one, or one whose lines lie a little (hash, size, missing,
    extra, a member it does not list); returns (zip bytes, whether the RECORD lies)."""
    extra = draw(st.lists(benign_entries(), max_size=4, unique_by=lambda e: e.raw_name.lower()))
    entries = valid_package(*extra)
    lines = record_bytes(entries).decode().splitlines(keepends=True)
    lie = draw(st.sampled_from(["none", "none", "hash", "size", "drop", "add", "liar_entry"]))
    index = draw(st.integers(0, len(lines) - 2))  # never the RECORD,, line
    path, digest, size = lines[index].rstrip("\n").rsplit(",", 2)
    if lie == "hash":
        lines[index] = f"{path},sha256={draw(st.binary(min_size=32, max_size=32)).hex()},{size}\n"
    elif lie == "size":
        lines[index] = f"{path},{digest},{int(size) + draw(st.integers(1, 3))}\n"
    elif lie == "drop":
        del lines[index]
    elif lie == "add":
        lines.insert(index, f"{draw(safe_names())},sha256={'0' * 64},{draw(st.integers(0, 5))}\n")
    record = "".join(lines).encode()
    if lie == "liar_entry":  # a member whose headers lie, listed with its claimed content
        entries = entries + [draw(raw_entries(name=safe_names(), aspect="lie"))]
    return build_zip(list(draw(st.permutations(with_record(entries, record))))), lie != "none"
