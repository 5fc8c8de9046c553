"""The write-ahead journal: checksummed records, torn tails, corruption."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomicplug.errors import JournalCorruptError
from atomicplug.journal import Journal, RecordType, pending_journals, read_journal
from atomicplug.journal.reader import FINISHED, all_journals


def _journal(tmp_path: Path, txid: str = "20260101T000000000000-aaaaaa") -> Journal:
    return Journal.begin(tmp_path / "journal", txid, plan={"operation": "install", "steps": []})


def test_records_round_trip_in_order(tmp_path):
    journal = _journal(tmp_path)
    journal.append(RecordType.STAGED)
    journal.append(RecordType.DONE)
    state = read_journal(journal.path)
    assert [r["type"] for r in state.records] == [RecordType.BEGIN, RecordType.STAGED, RecordType.DONE]
    assert state.begin["plan"]["operation"] == "install"
    assert state.outcome == "done"


def test_a_torn_last_record_is_ignored(tmp_path):
    journal = _journal(tmp_path)
    journal.append(RecordType.STAGED)
    data = journal.path.read_bytes()
    journal.path.write_bytes(data[:-15])  # the STAGED append never completed
    state = read_journal(journal.path)
    assert [r["type"] for r in state.records] == [RecordType.BEGIN]
    assert pending_journals(journal.path.parent) == [state]


def test_corruption_before_the_last_record_names_the_file(tmp_path):
    journal = _journal(tmp_path)
    journal.append(RecordType.STAGED)
    lines = journal.path.read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b"install", b"uninstall")  # checksum no longer matches
    journal.path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalCorruptError, match=rf"{journal.path.name}.*line 1.*checksum"):
        read_journal(journal.path)


def test_a_same_length_change_is_caught_by_the_checksum(tmp_path):
    journal = _journal(tmp_path)
    journal.append(RecordType.STAGED)
    data = journal.path.read_bytes().replace(b'"install"', b'"instal!"', 1)
    journal.path.write_bytes(data)
    with pytest.raises(JournalCorruptError):
        read_journal(journal.path)


def _done_aborted_open(tmp_path: Path, *, moved: bool) -> tuple[Journal, Journal, Journal]:
    """Three journals: done, aborted, unfinished; the first two ended by ``finish`` (``moved``) or by
    appending their last record only (left in place, as by a crash before the move)."""
    done = _journal(tmp_path, "20260101T000000000000-aaaaaa")
    aborted = _journal(tmp_path, "20260101T000000000001-bbbbbb")
    (done.finish if moved else done.append)(RecordType.DONE)
    (aborted.finish if moved else aborted.append)(RecordType.ABORTED, reason="test")
    open_one = _journal(tmp_path, "20260101T000000000002-cccccc")
    open_one.append(RecordType.STAGED)
    return done, aborted, open_one


@pytest.mark.parametrize("moved", [True, False])
def test_pending_journals_are_those_without_done_or_aborted(tmp_path, moved):
    _, _, open_one = _done_aborted_open(tmp_path, moved=moved)
    assert [j.txid for j in pending_journals(tmp_path / "journal")] == [open_one.txid]


def test_a_forged_done_tail_does_not_hide_a_pending_journal(tmp_path):
    journal = _journal(tmp_path)
    with open(journal.path, "ab") as handle:
        handle.write(b'{"type":"done","sum":"0000000000000000"}\n')
    assert [j.txid for j in pending_journals(tmp_path / "journal")] == [journal.txid]


def test_a_torn_tail_is_cut_off_before_the_next_append(tmp_path):
    """Issue 13 item 5: appending onto a torn line made it read as torn again (and 'corrupt' once more followed)."""
    journal = _journal(tmp_path)
    journal.append(RecordType.STAGED)
    good = journal.path.read_bytes()
    journal.path.write_bytes(good + b'{"type":"commi')  # a crash tore this append
    reopened = Journal.reopen(journal.path)
    reopened.append(RecordType.ABORTED, reason="rolled back by recovery")
    assert journal.path.read_bytes().startswith(good)
    state = read_journal(journal.path)
    assert [r["type"] for r in state.records] == [RecordType.BEGIN, RecordType.STAGED, RecordType.ABORTED]
    assert state.finished
    reopened.append(RecordType.DONE)  # and the file stays readable after more appends
    assert read_journal(journal.path).records[-1]["type"] is RecordType.DONE


def test_a_finished_journal_leaves_the_folder_writers_scan(tmp_path):
    """Every writer looks for unfinished journals first; finished ones piling up there until
    ``gc`` made every change slower the longer a home lived (1000 of them: ~17 ms per look)."""
    done, aborted, open_one = _done_aborted_open(tmp_path, moved=True)
    folder = tmp_path / "journal"
    assert [p.name for p in folder.glob("*.jsonl")] == [open_one.path.name]
    assert done.path == folder / FINISHED / "20260101T000000000000-aaaaaa.jsonl"
    assert read_journal(done.path).outcome == "done" and read_journal(aborted.path).outcome == "aborted"
    assert [(j.txid, j.outcome) for j in all_journals(folder)] == [
        (done.txid, "done"), (aborted.txid, "aborted"), (open_one.txid, "pending"),
    ]  # fmt: skip


def test_a_journal_finished_but_not_moved_yet_is_still_found_by_gc(tmp_path):
    """A crash between the last record and the move leaves it where writers look (not pending:
    read from its tail, above); gc, which reads both folders, still finds it to remove."""
    _done_aborted_open(tmp_path, moved=False)
    assert [j.outcome for j in all_journals(tmp_path / "journal")] == ["done", "aborted", "pending"]


def test_a_journal_moved_away_while_it_is_looked_at_is_not_pending(tmp_path, monkeypatch):
    """doctor looks without the writer lock: a transaction finishing meanwhile moves its journal
    to finished/ between the listing of the folder and the read of the file."""
    from atomicplug.journal import reader

    journal = _journal(tmp_path)
    journal.append(RecordType.DONE)  # the last record written, the move not yet made
    real = reader._ends_finished

    def moved_first(path):
        path.rename(path.parent / FINISHED / path.name)  # the finishing writer's move
        return real(path)

    monkeypatch.setattr(reader, "_ends_finished", moved_first)
    assert pending_journals(tmp_path / "journal") == []
