"""history.jsonl: one line per finished transaction, for ``atomicplug history``.

Appended (and fsync'd) just before the journal's final record, so a crash
in between can write the line twice; readers keep the last line per txid.
Journals can then be garbage-collected without losing the history.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atomicplug.fsutil import append_line

__all__ = ["append_history", "read_history", "finished_now", "shown_time"]

FILE_NAME = "history.jsonl"


def finished_now() -> str:
    """An entry's ``finished`` time, to the microsecond: a panel merging these with its own
    entries (which have microseconds) orders two made within one second as they happened."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def shown_time(finished: str) -> str:
    """``finished`` to the second, as ``atomicplug history`` prints it (older entries have no fraction)."""
    whole, dot, _fraction = finished.partition(".")
    return f"{whole}Z" if dot else finished


def append_history(home: Path, entry: dict[str, Any]) -> None:
    append_line(home / FILE_NAME, (json.dumps(entry, sort_keys=True) + "\n").encode(), create=True)


def read_history(home: Path) -> list[dict[str, Any]]:
    """Entries oldest first, one per txid; a torn last line is skipped."""
    path = home / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    by_txid: dict[str, dict[str, Any]] = {}
    for line in raw.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "txid" in entry:
            by_txid[entry["txid"]] = entry
    return sorted(by_txid.values(), key=lambda e: e["txid"])
