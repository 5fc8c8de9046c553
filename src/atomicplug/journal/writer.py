"""Appending records durably: write, fsync the file (and the folder when new).

A record is on disk before the step it announces starts; that ordering is
what lets recovery decide forward or back (docs/design.md "One transaction").
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from atomicplug.faults import crash_point
from atomicplug.fsutil import append_line, fsync_dir, make_dirs
from atomicplug.history import last_txid
from atomicplug.ioerrors import doing
from atomicplug.journal.reader import FINISHED, intact_length
from atomicplug.journal.records import RecordType, encode

__all__ = ["Journal", "new_txid", "put_aside"]


def new_txid(home: Path | None = None) -> str:
    """Time-ordered and unique: journals sort oldest first by name, and readers take the txids'
    order for the order of the transactions (``history``; ``generations``, which reads history
    from its end no further back than the oldest txid it asks for).

    ``home``: the txid comes after the last one its history holds, also when the clock was set
    back since (an NTP step): then it is that one's time and a microsecond. Made under the
    writer lock, like the history line that follows.
    """
    stamp = datetime.now(timezone.utc).strftime(_STAMP)
    last = last_txid(home)[: len(stamp)] if home is not None else ""
    if last >= stamp:
        try:
            stamp = (datetime.strptime(last, _STAMP) + timedelta(microseconds=1)).strftime(_STAMP)
        except ValueError:  # not a txid of ours (a hand edit): the clock's is taken
            pass
    return f"{stamp}-{secrets.token_hex(3)}"


_STAMP = "%Y%m%dT%H%M%S%f"


class Journal:
    """The open journal of one transaction."""

    def __init__(self, path: Path, txid: str) -> None:
        self.path = path
        self.txid = txid

    @classmethod
    def begin(cls, journal_dir: Path, txid: str, **plan: Any) -> Journal:
        """Create ``<txid>.jsonl`` with its ``begin`` record, durably (and ``finished/``, for :meth:`finish`)."""
        make_dirs(journal_dir / FINISHED)
        path = journal_dir / f"{txid}.jsonl"
        with doing("create", path):
            crash_point()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            os.close(fd)
        fsync_dir(journal_dir)
        journal = cls(path, txid)
        journal.append(RecordType.BEGIN, **plan)
        return journal

    @classmethod
    def reopen(cls, path: Path) -> Journal:
        """Continue a journal found by recovery, first cutting off a torn last record.

        Appending onto a torn line would glue the new record to it: the file would
        read as torn there again (the record lost) or, once more followed, as
        corrupt (issue 13 item 5). So the tail is truncated to the end of the last
        intact record and the truncation fsync'd before anything is appended, as
        SQLite discards a torn WAL frame.
        """
        intact = intact_length(path.read_bytes())
        if intact != path.stat().st_size:
            with doing("cut the torn record off", path):
                crash_point()
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, intact)
                    crash_point()
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return cls(path, path.stem)

    def append(self, record_type: RecordType, **fields: Any) -> None:
        """Append one record and fsync it."""
        append_line(self.path, encode(record_type, txid=self.txid, **fields))

    def finish(self, record_type: RecordType, **fields: Any) -> None:
        """Append the last record (``done`` or ``aborted``), then move the journal to ``finished/``.

        The move is only an index for the next writer's look for unfinished work: a
        crash or a failing disk before it leaves a finished journal where it was,
        which that look recognises from its tail, so its failure is not the
        transaction's. No fsync: a move lost with the power is the same case.
        """
        self.append(record_type, **fields)
        self.path = _move_to_finished(self.path)


def put_aside(journal_dir: Path, finished: list[Path]) -> None:
    """Move finished journals found where writers look into ``finished/`` (under the writer lock).

    Best effort, like the move in :meth:`Journal.finish`: one that stays is recognised
    from its tail again by the next writer.
    """
    try:
        make_dirs(journal_dir / FINISHED)  # a home from before journals moved has none
    except OSError:
        return
    for path in finished:
        _move_to_finished(path)


def _move_to_finished(path: Path) -> Path:
    """``path`` moved into ``finished/`` beside it: where it is now (where it was, if the move failed)."""
    moved = path.parent / FINISHED / path.name
    try:
        crash_point()
        os.rename(path, moved)
    except OSError:
        return path
    return moved
