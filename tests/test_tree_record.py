"""The tree record (atomicplug.tree_record): compact, complete on reading, RECORD trusted only when it matches.

A tree here is a folder holding a RECORD and the record: reading never opens
the other files, so they need not exist.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import attrs
import pytest

from atomicplug.package_record import PackageRecord, RecordEntry
from atomicplug.pycs import pyc_name
from atomicplug.tree_record import RECORD_NAME, TreeRecordError, read_pyc_index, read_record, write_record


def entry(path: str, content: bytes) -> RecordEntry:
    return RecordEntry(path=path, size=len(content), sha256=hashlib.sha256(content).hexdigest())


SOURCE, OTHER = b"X = 1\n", b"Y = 2\n"
PACKAGE_FILES = (
    entry("backend/__init__.py", b""),
    entry("backend/a.py", SOURCE),
    entry("frontend/a,b \"quoted\" é.ts", b"export {}\n"),  # csv-quoted in RECORD, JSON-escaped in the record
    entry(pyc_name("backend/a.py"), b"a shipped pyc, replaced by ours"),
    entry("metadata.json", b"{}"),
)
OURS = (
    entry(pyc_name("backend/__init__.py"), b"pyc of __init__"),
    entry(pyc_name("backend/a.py"), b"pyc of a"),
)


def make_tree(tmp_path: Path, package_files: tuple[RecordEntry, ...] = PACKAGE_FILES) -> tuple[Path, list[RecordEntry], RecordEntry]:
    """A staged tree: RECORD written, the package's files plus our pycs (one replacing the shipped one)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    data = PackageRecord.from_entries(package_files).to_bytes()
    (tree / "RECORD").write_bytes(data)
    record = entry("RECORD", data)
    files = {f.path: f for f in (*package_files, record)}
    files.update((f.path, f) for f in OURS)
    return tree, sorted(files.values(), key=lambda f: f.path), record


def test_the_record_names_record_and_lists_only_what_it_does_not_cover(tmp_path: Path) -> None:
    tree, files, record = make_tree(tmp_path)
    write_record(tree, files, (*PACKAGE_FILES, record))
    lines = (tree / RECORD_NAME).read_text().splitlines()
    assert json.loads(lines[0]) == {"format": 2, "package_record": ["RECORD", record.size, record.sha256]}
    init_pyc, a_pyc = OURS
    assert [json.loads(line) for line in lines[1:]] == [
        [init_pyc.path, init_pyc.size, init_pyc.sha256, PACKAGE_FILES[0].sha256],
        [a_pyc.path, a_pyc.size, a_pyc.sha256, PACKAGE_FILES[1].sha256],
    ]
    assert all(not line.startswith(" ") for line in lines)


def test_the_record_round_trips_the_full_list(tmp_path: Path) -> None:
    tree, files, record = make_tree(tmp_path)
    write_record(tree, reversed(files), (*PACKAGE_FILES, record))
    assert read_record(tree) == files
    assert read_pyc_index(tree) == {PACKAGE_FILES[0].sha256: OURS[0], PACKAGE_FILES[1].sha256: OURS[1]}


def test_a_package_without_record_lists_every_file(tmp_path: Path) -> None:
    tree, files, _ = make_tree(tmp_path)
    (tree / "RECORD").unlink()
    files = [f for f in files if f.path != "RECORD"]
    write_record(tree, files)
    lines = (tree / RECORD_NAME).read_text().splitlines()
    assert json.loads(lines[0]) == {"format": 2} and len(lines) == 1 + len(files)
    assert read_record(tree) == files
    assert read_pyc_index(tree) == {PACKAGE_FILES[0].sha256: OURS[0], PACKAGE_FILES[1].sha256: OURS[1]}


def test_the_pyc_index_does_not_read_record(tmp_path: Path) -> None:
    tree, files, record = make_tree(tmp_path)
    write_record(tree, files, (*PACKAGE_FILES, record))
    (tree / "RECORD").unlink()
    assert set(read_pyc_index(tree).values()) == set(OURS)


@pytest.mark.parametrize(
    "forged",
    [
        ["frontend/a,b \"quoted\" é.ts", 5, "1" * 64, PACKAGE_FILES[0].sha256],  # not a pyc: a shipped file's line, replaced
        ["backend/evil.py", 5, "1" * 64, PACKAGE_FILES[0].sha256],  # not a pyc: a file added
        [pyc_name("backend/evil.py"), 5, "1" * 64, PACKAGE_FILES[0].sha256],  # the pyc of a source RECORD does not list
        [pyc_name("backend/a.py"), 5, "1" * 64, "2" * 64],  # a pyc for a source RECORD gives another sha256
    ],
)
def test_a_line_posing_as_a_pyc_staging_built_does_not_vouch_for_a_file(tmp_path: Path, forged: list[object]) -> None:
    """Found from outside: any four-field line counted as a pyc staging built, and overrode RECORD's
    signed line for its path, so a replaced frontend file passed `verify` and `verify --deep`."""
    tree, files, record = make_tree(tmp_path)
    write_record(tree, files, (*PACKAGE_FILES, record))
    head, *lines = (tree / RECORD_NAME).read_text().splitlines()
    lines = [line for line in lines if json.loads(line)[0] != forged[0]] + [json.dumps(forged, separators=(",", ":"))]
    (tree / RECORD_NAME).write_text("\n".join([head, *sorted(lines)]) + "\n")
    with pytest.raises(TreeRecordError, match="beside the package RECORD") as info:
        read_record(tree)
    assert forged[0] not in {f.path for f in info.value.trusted}


def test_a_record_of_the_previous_format_still_reads(tmp_path: Path) -> None:
    """Format 1, one indented JSON document listing every file: trees of a home upgraded from before."""
    tree, files, _ = make_tree(tmp_path)
    (tree / RECORD_NAME).write_text(json.dumps({"files": [attrs.asdict(f) for f in files]}, indent=1) + "\n")
    assert read_record(tree) == files
    assert read_pyc_index(tree) == {PACKAGE_FILES[0].sha256: OURS[0], PACKAGE_FILES[1].sha256: OURS[1]}


def test_a_flipped_byte_in_record_is_an_error_naming_it_with_what_the_record_still_vouches_for(tmp_path: Path) -> None:
    tree, files, record = make_tree(tmp_path)
    write_record(tree, files, (*PACKAGE_FILES, record))
    data = bytearray((tree / "RECORD").read_bytes())
    data[70] ^= 0x01  # inside a sha256: it still parses, naming a file that is not there
    (tree / "RECORD").write_bytes(bytes(data))
    with pytest.raises(TreeRecordError, match=r"RECORD: expected \d+ bytes with sha256 [0-9a-f]{64}, got") as info:
        read_record(tree)
    assert info.value.path == "RECORD" and info.value.trusted == (record, *OURS)


def test_a_missing_record_is_an_error_naming_it(tmp_path: Path) -> None:
    tree, files, record = make_tree(tmp_path)
    write_record(tree, files, (*PACKAGE_FILES, record))
    (tree / "RECORD").unlink()
    with pytest.raises(TreeRecordError, match="RECORD: No such file or directory") as info:
        read_record(tree)
    assert info.value.path == "RECORD"


@pytest.mark.parametrize(
    "text",
    [
        "garbage\n",
        '{"format":3}\n',
        '{"format":2}\n["a",1]\n',
        '{"format":2}\n["a","1","' + "0" * 64 + '"]\n',
        '{"format":2}\n["a",1,"' + "0" * 63 + '"]\n',
        '{"format":2}\n["a",1,"' + "0" * 64 + '","not a sha"]\n',
        '{"format":2}\n["a",1,"' + "0" * 64 + '"]',
        '{"format":2,"package_record":["../RECORD",1,"' + "0" * 64 + '"]}\n',
        '{\n "files": [{"path": "a"}]\n}\n',
        "\udcff\n",
    ],
)
def test_a_malformed_record_is_an_error_naming_the_record(tmp_path: Path, text: str) -> None:
    (tmp_path / RECORD_NAME).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(TreeRecordError, match=r"expected a tree record, got") as info:
        read_record(tmp_path)
    assert info.value.path == RECORD_NAME and info.value.trusted == ()


def test_writing_refuses_a_package_list_the_tree_does_not_match(tmp_path: Path) -> None:
    """Caller bugs, not data: a package list without its RECORD, or a package file left out of the tree."""
    tree, files, record = make_tree(tmp_path)
    with pytest.raises(ValueError, match="expected 'RECORD' among the package's files"):
        write_record(tree, files, PACKAGE_FILES)
    with pytest.raises(ValueError, match="expected every package file in the tree"):
        write_record(tree, [f for f in files if f.path != "metadata.json"], (*PACKAGE_FILES, record))


def test_only_this_interpreters_pycs_of_backend_sources_carry_a_source(tmp_path: Path) -> None:
    other_tag = entry("backend/__pycache__/a.cpython-0.pyc", b"another interpreter's")
    frontend = (entry("frontend/x.py", OTHER), entry(pyc_name("frontend/x.py"), b"a frontend pyc"))
    tree = tmp_path
    files = sorted((PACKAGE_FILES[1], OURS[1], other_tag, *frontend), key=lambda f: f.path)
    write_record(tree, files)
    with_source = [json.loads(line) for line in (tree / RECORD_NAME).read_text().splitlines()[1:] if len(json.loads(line)) == 4]
    assert with_source == [[OURS[1].path, OURS[1].size, OURS[1].sha256, PACKAGE_FILES[1].sha256]]
    assert sys.implementation.cache_tag in OURS[1].path
