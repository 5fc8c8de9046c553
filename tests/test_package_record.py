"""RECORD (atomicplug.package_record): one test per refusal rule of the format and of the zip cross-check,
plus round-trip properties. The extractors' use of it is tested in test_safezip*.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from strategies import mutated_record_bytes, record_entries

from atomicplug.errors import PackageError
from atomicplug.package_record import PackageRecord, RecordEntry, record_size_cap

A = "a" * 64
B = "b" * 64


def parse(text: str | bytes) -> PackageRecord:
    return PackageRecord.from_bytes(text.encode() if isinstance(text, str) else text)


def refused(text: str | bytes, fragment: str) -> PackageError:
    with pytest.raises(PackageError) as info:
        parse(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value) and str(info.value).startswith("package RECORD ")
    assert info.value.exit_code == 3
    return info.value


# -- the format ---------------------------------------------------------------------


def test_a_canonical_record_parses_in_order() -> None:
    record = parse(f"backend/a.py,sha256={A},12\n\"frontend/a,b.ts\",sha256={B},0\nRECORD,,\n")
    assert list(record.files.values()) == [RecordEntry("backend/a.py", 12, A), RecordEntry("frontend/a,b.ts", 0, B)]


def test_record_may_list_itself_anywhere() -> None:
    assert set(parse(f"RECORD,,\nbackend/a.py,sha256={A},12\n").files) == {"backend/a.py"}


def test_to_bytes_sorts_by_path_and_ends_with_itself() -> None:
    record = PackageRecord.from_entries([RecordEntry("b", 1, B), RecordEntry("a", 2, A)])
    assert record.to_bytes() == f"a,sha256={A},2\nb,sha256={B},1\nRECORD,,\n".encode()


def test_not_utf8_is_refused() -> None:
    refused(b"backend/\xff.py,sha256=" + A.encode() + b",1\nRECORD,,\n", "is not UTF-8")


def test_missing_final_newline_is_refused() -> None:
    refused(f"backend/a.py,sha256={A},1\nRECORD,,", "must end with a newline")


def test_blank_line_is_refused() -> None:
    refused(f"backend/a.py,sha256={A},1\n\nRECORD,,\n", "line 2: expected")


def test_crlf_line_ending_is_refused() -> None:
    refused(f"backend/a.py,sha256={A},1\r\nRECORD,,\n", "line 1: expected")


@pytest.mark.parametrize("line", ["backend/a.py,sha256={A}", "backend/a.py,sha256={A},1,extra", "backend/a.py"])
def test_wrong_number_of_fields_is_refused(line: str) -> None:
    refused(line.format(A=A) + "\nRECORD,,\n", "line 1: expected 'path,sha256=<64 hex digits>,<size>'")


@pytest.mark.parametrize("line", ['"backend/a.py",sha256={A},1', "backend/a.py, sha256={A},1", 'back"end.py,sha256={A},1', '"a,b",sha256={A},1 '])
def test_anything_but_minimal_csv_quoting_is_refused(line: str) -> None:
    refused(line.format(A=A) + "\nRECORD,,\n", "line 1: expected")


@pytest.mark.parametrize(
    "digest",
    [f"sha256={A.upper()}", f"sha256={A[:-1]}", f"sha256={A}0", f"sha256={'g' * 64}", f"sha512={A}", f"SHA256={A}", A, f"sha256:{A}"],
)
def test_hash_other_than_sha256_lowercase_hex_is_refused(digest: str) -> None:
    refused(f"backend/a.py,{digest},1\nRECORD,,\n", "line 1: expected")


@pytest.mark.parametrize("size", ["-1", "01", "1.0", " 1", "", "0x10", "1e3", "１", "123456789012345678901"])
def test_size_other_than_plain_decimal_is_refused(size: str) -> None:
    refused(f"backend/a.py,sha256={A},{size}\nRECORD,,\n", "line 1: expected")


def test_empty_path_is_refused() -> None:
    refused(f",sha256={A},1\nRECORD,,\n", "line 1: expected")


def test_duplicate_path_is_refused() -> None:
    refused(f"backend/a.py,sha256={A},1\nbackend/a.py,sha256={B},2\nRECORD,,\n", "line 2 lists 'backend/a.py' a second time")


def test_record_listed_twice_is_refused() -> None:
    refused("RECORD,,\nRECORD,,\n", "line 2 lists RECORD a second time")


def test_record_not_listing_itself_is_refused() -> None:
    refused(f"backend/a.py,sha256={A},1\n", "does not list itself")


def test_record_listing_itself_with_a_hash_is_refused() -> None:
    refused(f"RECORD,sha256={A},9\nRECORD,,\n", "line 1 gives RECORD a hash or size")


def test_empty_record_is_refused() -> None:
    refused(b"", "must end with a newline")


# -- against the zip's central directory --------------------------------------------

RECORD = parse(f"backend/a.py,sha256={A},12\nfrontend/b.ts,sha256={B},3\nRECORD,,\n")


def test_matching_central_directory_passes() -> None:
    RECORD.check_against({"backend/a.py": 12, "frontend/b.ts": 3, "RECORD": 99}, {"backend", "frontend"})


def test_path_not_in_the_zip_is_refused() -> None:
    with pytest.raises(PackageError, match="lists 'frontend/b.ts', which is not in the package"):
        RECORD.check_against({"backend/a.py": 12, "RECORD": 99})


def test_path_that_is_a_folder_in_the_zip_is_refused() -> None:
    with pytest.raises(PackageError, match="lists 'frontend/b.ts', which is a folder in the package"):
        RECORD.check_against({"backend/a.py": 12, "RECORD": 99}, {"frontend/b.ts"})


def test_zip_entry_missing_from_record_is_refused() -> None:
    with pytest.raises(PackageError, match="does not list package entry 'migrations/up.sql'"):
        RECORD.check_against({"backend/a.py": 12, "frontend/b.ts": 3, "migrations/up.sql": 1, "RECORD": 99})


def test_size_differing_from_the_central_directory_is_refused() -> None:
    with pytest.raises(PackageError, match="gives 'backend/a.py' 12 bytes, but the archive says 13"):
        RECORD.check_against({"backend/a.py": 13, "frontend/b.ts": 3, "RECORD": 99})


def test_size_cap_fits_the_worst_case_quoting() -> None:
    names = ['"' * 40, "a,b" * 10, "x"]
    record = PackageRecord.from_entries(RecordEntry(n, 2**64 - 1, A) for n in names)
    assert len(record.to_bytes()) <= record_size_cap([*names, "RECORD"])


# -- properties ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(record_entries())
def test_round_trip_of_any_entries(entries: list[RecordEntry]) -> None:
    record = PackageRecord.from_entries(entries)
    data = record.to_bytes()
    again = PackageRecord.from_bytes(data)
    assert again == record
    assert again.to_bytes() == data
    assert len(data) <= record_size_cap([e.path for e in entries] + ["RECORD"])


@settings(max_examples=500, deadline=None)
@given(mutated_record_bytes())
def test_any_mutation_parses_canonically_or_is_refused_in_one_line(data: bytes) -> None:
    try:
        record = PackageRecord.from_bytes(data)
    except PackageError as exc:
        assert "\n" not in str(exc)
        return
    assert PackageRecord.from_bytes(record.to_bytes()) == record
    assert sorted(record.to_bytes().splitlines()) == sorted(data.splitlines())


def test_a_path_the_archive_names_is_kept_once_not_copied() -> None:
    """With the archive's names given, each parsed path is that very string (memory: 5000 paths of a large plugin)."""
    name = "".join(["backend/", "shop.py"])  # built at run time: not the literal below
    record = PackageRecord.from_bytes(f"backend/shop.py,sha256={'a' * 64},3\nother.txt,sha256={'b' * 64},1\nRECORD,,\n".encode(), {name: name})
    assert record.files["backend/shop.py"].path is name
    assert record.files["other.txt"].path == "other.txt"
