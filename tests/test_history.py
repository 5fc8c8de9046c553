"""history.jsonl read back: whole, or only its newest entries from the end of the file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from atomicplug import history
from atomicplug.history import FILE_NAME, append_history, entries_of, read_history


def _entry(n: int, outcome: str = "done") -> dict[str, object]:
    return {"txid": f"20261130T{n:012d}-abcdef", "operation": "install", "outcome": outcome, "steps": []}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """40 transactions; the 38th's line written twice (a crash before its journal's last record,
    then recovery), the second time with another outcome; a torn line at the end."""
    for n in range(40):
        append_history(tmp_path, _entry(n))
        if n == 37:
            append_history(tmp_path, _entry(n, outcome="done again"))
    with open(tmp_path / FILE_NAME, "ab") as handle:
        handle.write(b'{"txid": "20261130T9999')
    return tmp_path


@pytest.mark.parametrize("newest", [0, 1, 2, 3, 5, 39, 40, 41, 100])
def test_the_newest_entries_are_the_tail_of_the_whole_read(home: Path, newest: int) -> None:
    whole = read_history(home)
    assert len(whole) == 40 and whole[37]["outcome"] == "done again"
    assert read_history(home, newest=newest) == (whole[-newest:] if newest else [])


def test_the_newest_entries_are_read_from_the_end_of_the_file(home: Path) -> None:
    """A page of history costs what it shows, not the home's whole history (gc never trims it)."""
    data = (home / FILE_NAME).read_bytes()
    source = _Counting(b"\n" * (4 << 20) + data)  # years of history before these lines
    lines = history._lines_from_end(source, block=4096)
    assert [next(lines) for _ in range(3)] == data.splitlines()[::-1][:3]  # the torn line first, then the whole ones
    assert source.bytes_read <= 2 * 4096, f"read {source.bytes_read} bytes for three lines"


class _Counting(io.BytesIO):
    """A file that counts the bytes read from it."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_no_history_file_is_no_entries(tmp_path: Path) -> None:
    assert read_history(tmp_path) == [] and read_history(tmp_path, newest=3) == []


@pytest.mark.parametrize("asked", [[], [39], [37, 39], [0], [0, 20, 39], [5, 12]])
def test_the_entries_of_some_txids_are_those_of_the_whole_read(home: Path, asked: list[int]) -> None:
    whole = {e["txid"]: e for e in read_history(home)}
    txids = [_entry(n)["txid"] for n in asked]
    assert entries_of(home, [*txids, "20261130T000000000040-gone00"]) == {t: whole[t] for t in txids}  # one without a line


def test_the_entries_of_recent_txids_are_read_from_the_end_only(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``atomicplug generations`` describes the kept generations: it no longer reads the whole history."""
    seen: list[str] = []
    real = history._entry

    def counting(line: bytes) -> dict[str, object] | None:
        entry = real(line)
        seen.append(entry["txid"] if entry else "torn")
        return entry

    monkeypatch.setattr(history, "_entry", counting)
    assert set(entries_of(home, [_entry(38)["txid"], _entry(36)["txid"]])) == {_entry(38)["txid"], _entry(36)["txid"]}
    assert len(seen) == 6, seen  # the torn line, 39, 38, 37 (twice), 36
    seen.clear()
    assert entries_of(home, ["20261130T000000000036-nope00"]) == {}  # no line: stops at the first older txid
    assert len(seen) <= 6, seen
