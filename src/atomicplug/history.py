"""history.jsonl: one line per finished transaction, for ``atomicplug history``.

Appended (and fsync'd) just before the journal's final record, so a crash
in between can write the line twice; readers keep the last line per txid.
Journals can then be garbage-collected without losing the history.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from atomicplug.fsutil import append_line

__all__ = ["append_history", "entries_of", "last_txid", "read_history", "finished_now", "shown_time"]

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


def read_history(home: Path, newest: int | None = None) -> list[dict[str, Any]]:
    """Entries oldest first, one per txid (its last line); a torn last line is skipped.

    ``newest``: only the newest N, read from the end of the file, so a page of history
    costs what it shows however long the home has lived (gc never trims this file). Lines
    are appended under the writer lock, the txid made under it too: the file's order is
    the txids' order.
    """
    by_txid: dict[str, dict[str, Any]] = {}
    if newest is None:
        try:
            data = (home / FILE_NAME).read_bytes()
        except FileNotFoundError:
            return []
        for entry in filter(None, map(_entry, data.splitlines())):
            by_txid[entry["txid"]] = entry  # the last line of a txid wins
    else:
        for entry in _entries_from_end(home):
            if len(by_txid) >= newest:
                break
            by_txid.setdefault(entry["txid"], entry)  # read backwards: the first seen is the last
    return sorted(by_txid.values(), key=lambda e: e["txid"])


def entries_of(home: Path, txids: Collection[str]) -> dict[str, dict[str, Any]]:
    """The entries of ``txids`` that have a line, by txid: read from the end of the file and no
    further back than the oldest of them (the file's order is the txids'), so describing the
    kept generations costs what they are, not the home's whole history."""
    wanted = set(txids)
    found: dict[str, dict[str, Any]] = {}
    if not wanted:
        return found
    oldest = min(wanted)
    for entry in _entries_from_end(home):
        txid = entry["txid"]
        if txid < oldest:
            break
        if txid in wanted:
            found.setdefault(txid, entry)  # read backwards: the first seen is the last
            if len(found) == len(wanted):
                break
    return found


def last_txid(home: Path) -> str:
    """The txid of the history's last entry ("" without one): what the next txid must follow."""
    entry = next(_entries_from_end(home, block=4096), None)
    return str(entry["txid"]) if entry is not None else ""


def _entries_from_end(home: Path, block: int = 64 * 1024) -> Iterator[dict[str, Any]]:
    """The file's entries, last first (none when there is no file; a torn line skipped)."""
    try:
        handle = open(home / FILE_NAME, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with handle:
        yield from filter(None, map(_entry, _lines_from_end(handle, block)))


def _entry(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None  # a torn line
    return entry if isinstance(entry, dict) and "txid" in entry else None


def _lines_from_end(handle: BinaryIO, block: int = 64 * 1024) -> Iterator[bytes]:
    """The file's lines, last first, reading it backwards ``block`` bytes at a time."""
    end = handle.seek(0, os.SEEK_END)
    partial = b""
    while end > 0:
        start = max(0, end - block)
        handle.seek(start)
        lines = (handle.read(end - start) + partial).split(b"\n")
        partial = lines.pop(0)  # the start of a line the block before holds the rest of
        end = start
        yield from reversed(lines)
    yield partial
