"""Reading journals back: tolerate a torn last record, refuse any other damage."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from atomicplug.errors import JournalCorruptError
from atomicplug.journal.records import RecordDecodeError, RecordType, decode

__all__ = ["FINISHED", "JournalState", "read_journal", "look", "pending_journals", "all_journals", "intact_length"]

#: The subfolder of the journal folder a journal moves to once its last record is written
#: (docs/design.md "Journal records and crash points"): writers look for unfinished work only
#: in the folder itself.
FINISHED = "finished"


@attrs.frozen
class JournalState:
    """What one journal file says about its transaction."""

    path: Path
    txid: str
    records: tuple[dict[str, Any], ...]

    @property
    def begin(self) -> dict[str, Any] | None:
        return self._first(RecordType.BEGIN)

    @property
    def types(self) -> frozenset[RecordType]:
        return frozenset(r["type"] for r in self.records)

    @property
    def finished(self) -> bool:
        return bool(self.types & {RecordType.DONE, RecordType.ABORTED})

    @property
    def outcome(self) -> str:
        if RecordType.DONE in self.types:
            return "done"
        if RecordType.ABORTED in self.types:
            return "aborted"
        return "pending"

    def _first(self, record_type: RecordType) -> dict[str, Any] | None:
        return next((r for r in self.records if r["type"] is record_type), None)


def read_journal(path: Path) -> JournalState:
    """All intact records of ``path``; a torn final line is dropped.

    Raises JournalCorruptError naming the file when any earlier line is bad.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JournalCorruptError(f"cannot read journal {path}: {exc}") from exc
    lines = data.split(b"\n")
    # A complete file ends with "\n", so the last element is b"" unless torn.
    records = []
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines) or (number == len(lines) - 1 and lines[-1] == b"")
        if not line and number == len(lines):
            continue
        try:
            records.append(decode(line))
        except RecordDecodeError as exc:
            if is_last:
                break  # torn tail: the append it belonged to never completed
            raise JournalCorruptError(f"journal {path} is corrupt at line {number}: {exc}") from exc
    return JournalState(path=path, txid=path.stem, records=tuple(records))


def intact_length(data: bytes) -> int:
    """How many leading bytes of a journal are whole records (the rest is a torn tail).

    Only the last line may be torn; damage earlier is left for :func:`read_journal`
    to report, so this never hides corruption by cutting it off.
    """
    end = data.rfind(b"\n", 0, len(data) - 1 if data.endswith(b"\n") else len(data)) + 1
    last = data[end:]
    if not last:
        return len(data)
    if last.endswith(b"\n"):
        try:
            decode(last[:-1])
            return len(data)
        except RecordDecodeError:
            return end
    return end


def all_journals(journal_dir: Path) -> list[JournalState]:
    """Every journal, finished or not, oldest first (txids sort by time)."""
    paths = [*journal_dir.glob("*.jsonl"), *(journal_dir / FINISHED).glob("*.jsonl")]
    return [read_journal(p) for p in sorted(paths, key=lambda p: p.name)]


def pending_journals(journal_dir: Path) -> list[JournalState]:
    """Journals without ``done`` or ``aborted``: the work recovery must finish (see :func:`look`)."""
    return look(journal_dir)[0]


def look(journal_dir: Path) -> tuple[list[JournalState], list[Path]]:
    """The unfinished journals, and the finished ones still in the folder itself.

    Every writer looks first. A finished journal has moved to ``finished/``
    (:meth:`Journal.finish`), so the look costs the unfinished work, not the
    home's history. One still here (a crash between its last record and that
    move, or a home from before journals moved) is recognised from its tail
    without reading or checking the rest; the writer then moves it too.
    """
    if not journal_dir.is_dir():
        return [], []
    pending, finished = [], []
    for path in sorted(journal_dir.glob("*.jsonl")):
        if _ends_finished(path):
            finished.append(path)
            continue
        try:
            state = read_journal(path)
        except JournalCorruptError:
            if not os.path.lexists(path):
                continue  # finished and moved away (or removed by gc) since the listing: a reader without the lock
            raise
        if state.finished:
            finished.append(path)
        else:
            pending.append(state)
    return pending, finished


_TAIL_BYTES = 4096


def _ends_finished(path: Path) -> bool:
    """True when the last complete record is an intact ``done`` or ``aborted`` (nothing follows those)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return False
    if not tail.endswith(b"\n"):
        return False
    last = tail[:-1].rsplit(b"\n", 1)[-1]
    try:
        record = decode(last)
    except RecordDecodeError:
        return False
    return record["type"] in (RecordType.DONE, RecordType.ABORTED)
