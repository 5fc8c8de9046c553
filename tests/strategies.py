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

from hostile_zips import DIR_MODE, FILE_MODE, RawEntry, build_zip, valid_metadata, valid_package
from hypothesis import strategies as st

__all__ = [
    "entry_names",
    "raw_entries",
    "archives",
    "mutated_zip_bytes",
    "metadata_dicts",
    "json_values",
    "metadata_bytes",
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


@st.composite
def _payload(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    return bytes([draw(st.integers(0, 255))]) * draw(st.integers(0, 300_000))


@st.composite
def raw_entries(draw: st.DrawFn, name: st.SearchStrategy[str | bytes] | None = None) -> RawEntry:
    """One member whose headers may lie about anything."""
    data = draw(_payload())
    entry = RawEntry(
        name=draw(name if name is not None else entry_names()),
        data=data,
        method=draw(st.sampled_from([0, 8, 8, 8, 1, 12, 14, 99])),
        flags=draw(st.sampled_from([0, 0, 0, 0x1, 0x8, 0x40, 0x800, 0x2000])) | draw(st.sampled_from([0, 0, 0x8])),
        external_attr=draw(st.sampled_from(_MODES)),
        create_system=draw(st.sampled_from([3, 3, 0, 19])),
    )
    lie = draw(st.integers(0, 12))
    overrides: dict[str, Any] = {}
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
    if overrides:
        entry = RawEntry(**{**entry.__dict__, **overrides})
    return entry


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    """Whole archives: often a valid package plus hostile members, sometimes pure chaos."""
    base = draw(st.sampled_from(["valid", "valid", "empty", "metadata_only"]))
    if base == "valid":
        entries = valid_package()
    elif base == "metadata_only":
        entries = [RawEntry("metadata.json", json.dumps(valid_metadata()).encode())]
    else:
        entries = []
    hostile = draw(st.lists(raw_entries(), max_size=4))
    entries = entries + hostile
    if entries and draw(st.booleans()):
        entries = draw(st.permutations(entries))
    prefix = draw(st.sampled_from([b"", b"", b"", b"#!/bin/sh\nexit 0\n"]))
    return build_zip(entries, prefix=prefix)


@st.composite
def mutated_zip_bytes(draw: st.DrawFn) -> bytes:
    """A valid package's bytes, then flipped, truncated, spliced or extended."""
    data = bytearray(build_zip(valid_package()))
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
