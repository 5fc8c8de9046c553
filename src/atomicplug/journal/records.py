"""Encoding of one journal record: a JSON object on one line with its own checksum.

Why a checksum per line: a crash can tear the last append; the reader must
tell a torn tail (ignored) from damage elsewhere (an error), and a line that
parses as JSON is not proof that it was written whole.
"""

from __future__ import annotations

import enum
import hashlib
import json
from typing import Any

__all__ = ["RecordType", "encode", "decode", "RecordDecodeError"]


class RecordType(str, enum.Enum):
    BEGIN = "begin"
    STAGED = "staged"
    COMMITTING = "committing"  # {"xid": int | None}: COMMIT may be sent from here on
    COMMITTED = "committed"
    DONE = "done"
    ABORTED = "aborted"


class RecordDecodeError(ValueError):
    """A line is not a whole, intact record."""


def _checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode(record_type: RecordType, **fields: Any) -> bytes:
    """One record as a newline-terminated line."""
    body = {"type": record_type.value, **fields}
    body["sum"] = _checksum(body)
    return (json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


def decode(line: bytes) -> dict[str, Any]:
    """Parse and check one line (without its newline)."""
    try:
        body = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordDecodeError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict) or "sum" not in body or "type" not in body:
        raise RecordDecodeError("expected an object with 'type' and 'sum'")
    stated = body.pop("sum")
    if stated != _checksum(body):
        raise RecordDecodeError("checksum mismatch")
    try:
        body["type"] = RecordType(body["type"])
    except ValueError as exc:
        raise RecordDecodeError(f"unknown record type {body['type']!r}") from exc
    return body
