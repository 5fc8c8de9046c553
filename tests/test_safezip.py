"""atomicplug.safezip: one test per refusal rule of docs/design.md "Safe extraction", plus the happy path.

Every refusal test builds its hostile archive here, then checks the error
names the rule, that the target folder is gone and that nothing else in the
test's folder changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tracemalloc
import unicodedata
import zipfile
import zlib
from pathlib import Path

import pytest
from hostile_zips import (
    DIR_MODE,
    FILE_MODE,
    RawEntry,
    build_zip,
    deflate,
    overlapping_zip,
    record_bytes,
    valid_metadata,
    valid_package,
    with_entry,
    with_record,
    zero_bomb,
    zip64_extra,
)

from atomicplug.config import ExtractLimits
from atomicplug.errors import MetadataError, OperationError, PackageError
from atomicplug.safezip import RATIO_FLOOR_BYTES, extract, name_problem, read_metadata


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with file contents (None for folders), symlinks not followed."""
    result: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            result[rel] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return result


class Workspace:
    """A folder holding the zip, a staging parent, and a decoy beside the target."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.zip = root / "pkg.zip"
        self.staging = root / "staging"
        self.staging.mkdir()
        (root / "decoy.txt").write_text("untouched")
        self.target = self.staging / "tx1"

    def write(self, data: bytes | list[RawEntry]) -> Path:
        self.zip.write_bytes(data if isinstance(data, bytes) else build_zip(data))
        return self.zip

    def assert_refused(
        self,
        data: bytes | list[RawEntry],
        fragment: str,
        *,
        limits: ExtractLimits | None = None,
        structural: bool = True,
        error: type[Exception] = PackageError,
    ) -> PackageError:
        """extract() refuses with ``fragment``; nothing is left; read_metadata too when ``structural``."""
        self.write(data)
        before = snapshot(self.root)
        with pytest.raises(error) as info:
            extract(self.zip, self.target, limits)
        assert fragment in str(info.value)
        assert "\n" not in str(info.value)
        assert not self.target.exists()
        assert snapshot(self.root) == before
        if structural:
            with pytest.raises(error) as again:
                read_metadata(self.zip, limits)
            assert fragment in str(again.value)
        # A target that already exists (empty) is emptied again, not removed.
        self.target.mkdir()
        with pytest.raises(error):
            extract(self.zip, self.target, limits)
        assert self.target.is_dir() and not any(self.target.iterdir())
        self.target.rmdir()
        assert isinstance(info.value, PackageError)
        return info.value


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


# -- happy path ---------------------------------------------------------------------


def test_extract_writes_every_file_with_matching_bytes_and_sha256(ws: Workspace) -> None:
    entries = valid_package()
    ws.write(entries)
    result = extract(ws.zip, ws.target)
    expected = {e.name: e.data for e in entries if isinstance(e.name, str) and not e.name.endswith("/")}
    assert {f.path for f in result.files} == set(expected)
    for f in result.files:
        on_disk = (ws.target / f.path).read_bytes()
        assert on_disk == expected[f.path]
        assert f.size == len(on_disk)
        assert f.sha256 == hashlib.sha256(on_disk).hexdigest()
    assert result.unpacked_bytes == sum(len(d) for d in expected.values())
    assert [f.path for f in result.files] == sorted(f.path for f in result.files)
    assert result.metadata.id == "ai_chatbot"
    assert result.metadata.version == "1.0.0"
    assert set(snapshot(ws.target)) == set(expected) | {"backend", "frontend", "migrations"}


def test_read_metadata_parses_without_extracting(ws: Workspace) -> None:
    ws.write(valid_package())
    meta = read_metadata(ws.zip)
    assert meta.name == "AI Chatbot"
    assert [str(r) for r in meta.requires] == ["email_core>=1.2"]
    assert not ws.target.exists()


def test_zip_made_by_zipfile_with_data_descriptors_extracts(ws: Workspace) -> None:
    class Unseekable:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, b: bytes) -> int:
            self.data += b
            return len(b)

        def flush(self) -> None:
            pass

    sink = Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zf:  # type: ignore[call-overload]
        zf.writestr("metadata.json", json.dumps(valid_metadata()))
        with zf.open("backend/big.py", "w") as member:
            member.write(os.urandom(200_000))
    ws.write(bytes(sink.data))
    assert zipfile.ZipFile(ws.zip).getinfo("backend/big.py").flag_bits & 0x08
    result = extract(ws.zip, ws.target)
    assert {f.path for f in result.files} == {"metadata.json", "backend/big.py"}


def test_empty_folder_entries_are_created(ws: Workspace) -> None:
    ws.write(valid_package(RawEntry("frontend/assets/", method=0, external_attr=DIR_MODE)))
    extract(ws.zip, ws.target)
    assert (ws.target / "frontend" / "assets").is_dir()


def test_unicode_names_and_doc_files_are_allowed(ws: Workspace) -> None:
    ws.write(
        valid_package(
            RawEntry("frontend/ünï/çödé.ts", b"x"), RawEntry("LICENSE", b"MIT"), RawEntry("CHANGELOG.md", b"1")
        )
    )
    result = extract(ws.zip, ws.target)
    assert "frontend/ünï/çödé.ts" in {f.path for f in result.files}


def test_existing_empty_target_is_used(ws: Workspace) -> None:
    ws.write(valid_package())
    ws.target.mkdir()
    extract(ws.zip, ws.target)
    assert (ws.target / "metadata.json").is_file()


def test_non_empty_target_is_refused_untouched(ws: Workspace) -> None:
    ws.write(valid_package())
    ws.target.mkdir()
    (ws.target / "keep").write_text("mine")
    with pytest.raises(OperationError, match="not empty"):
        extract(ws.zip, ws.target)
    assert (ws.target / "keep").read_text() == "mine"


def test_target_whose_parent_is_missing_is_refused(ws: Workspace) -> None:
    ws.write(valid_package())
    with pytest.raises(OperationError, match="parent folder does not exist"):
        extract(ws.zip, ws.root / "nope" / "tx")


def test_extract_syncs_the_tree_unless_the_caller_will(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Durable by default (one sync of the whole tree); staging passes durable=False and
    syncs once after adding its pycs and record."""
    import atomicplug.safezip._extract as module

    synced: list[Path] = []
    monkeypatch.setattr(module, "sync_tree", synced.append)
    ws.write(valid_package())
    extract(ws.zip, ws.target)
    assert synced == [Path(os.path.abspath(ws.target))]
    second = Path(str(ws.target) + "-deferred")
    extract(ws.zip, second, durable=False)
    assert synced == [Path(os.path.abspath(ws.target))]
    assert (second / "metadata.json").is_file()


# -- malformed archives ------------------------------------------------------------


def test_non_zip_file_is_refused_with_a_clear_message(ws: Workspace) -> None:
    ws.assert_refused(b"this is not a zip at all" * 10, "is not a readable zip archive")


def test_truncated_archive_is_refused(ws: Workspace) -> None:
    data = build_zip(valid_package())
    ws.assert_refused(data[: len(data) // 2], "is not a readable zip archive")


def test_archive_truncated_inside_member_data_is_refused(ws: Workspace) -> None:
    entries = valid_package(RawEntry("backend/big.bin", os.urandom(5000), method=0))
    entries = with_entry(entries, -1, compressed=os.urandom(100), compress_size=5000, file_size=5000)
    ws.assert_refused(entries, "truncated or runs into the central directory")


def test_missing_package_file_is_refused(ws: Workspace) -> None:
    with pytest.raises(PackageError, match="cannot read package"):
        extract(ws.root / "absent.zip", ws.target)
    assert not ws.target.exists()


# -- names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["backend/../../evil.py", "../evil.py", "backend/x/../../../evil"])
def test_dotdot_component_is_refused(ws: Workspace, name: str) -> None:
    ws.assert_refused(valid_package(RawEntry(name, b"x")), "escapes the package folder")


def test_absolute_path_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry(str(ws.root / "evil.py"), b"x")), "is an absolute path")


def test_backslash_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend\\..\\..\\evil.py", b"x")), "backslash")


@pytest.mark.parametrize("name", ["C:/evil.py", "c:evil.py"])
def test_drive_letter_is_refused(ws: Workspace, name: str) -> None:
    ws.assert_refused(valid_package(RawEntry(name, b"x")), "drive letter")


@pytest.mark.parametrize("name", ["backend//x.py", "./backend/x.py", "backend/./x.py"])
def test_empty_or_dot_component_is_refused(ws: Workspace, name: str) -> None:
    ws.assert_refused(valid_package(RawEntry(name, b"x")), "empty or '.' path component")


def test_nul_byte_in_name_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/x.py\x00.txt", b"x")), "NUL byte")


@pytest.mark.parametrize("char", ["\x1b", "\n", "\x7f", "\x85"])
def test_control_character_in_name_is_refused(ws: Workspace, char: str) -> None:
    ws.assert_refused(valid_package(RawEntry(f"backend/a{char}b.py", b"x")), "control character")


def test_non_utf8_name_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry(b"backend/\xff\xfe.py", b"x")), "not valid UTF-8")


def test_over_long_component_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/" + "a" * 256, b"x")), "name component longer than 255 bytes")


def test_backend_module_whose_pyc_name_would_be_over_long_is_refused(ws: Workspace) -> None:
    """Found from outside: a 248-byte module name passed, and its pyc's name (+ ``.cpython-311.pyc``)
    failed the install with ENAMETOOLONG while staging; a frontend file of that name stays fine."""
    ws.assert_refused(valid_package(RawEntry("backend/" + "m" * 245 + ".py", b"x = 1\n")), "leaves no room for its compiled file's name")
    assert name_problem("frontend/" + "m" * 245 + ".py", ExtractLimits()) is None
    assert name_problem("backend/" + "m" * 200 + ".py", ExtractLimits()) is None


def test_over_long_path_is_refused(ws: Workspace) -> None:
    name = "backend/" + "/".join(["d" * 50] * 25)
    ws.assert_refused(valid_package(RawEntry(name, b"x")), "path longer than 1024 bytes")


@pytest.mark.parametrize("name", ["setup.py", "evil/x.py", "Backend/x.py", "metadata.json/", "README/x"])
def test_unknown_top_level_entry_is_refused(ws: Workspace, name: str) -> None:
    ws.assert_refused(
        valid_package(RawEntry(name, b"" if name.endswith("/") else b"x")), "not allowed at the top level"
    )


def test_top_level_folder_name_as_a_file_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("migrations", b"x")), "must be a folder")


# -- duplicates and collisions --------------------------------------------------------


def test_exact_duplicate_name_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/routes.py", b"evil")), "duplicates entry 'backend/routes.py'")


def test_duplicate_after_case_folding_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/ROUTES.py", b"evil")), "duplicates entry")


def test_duplicate_after_nfc_normalisation_is_refused(ws: Workspace) -> None:
    nfc = unicodedata.normalize("NFC", "backend/café.py")
    nfd = unicodedata.normalize("NFD", "backend/café.py")
    assert nfc != nfd
    ws.assert_refused(valid_package(RawEntry(nfc, b"a"), RawEntry(nfd, b"b")), "duplicates entry")


def test_duplicate_metadata_json_is_refused(ws: Workspace) -> None:
    evil = json.dumps(valid_metadata(id="evil_twin")).encode()
    ws.assert_refused(valid_package(RawEntry("metadata.json", evil)), "duplicates entry 'metadata.json'")


def test_folder_entry_colliding_with_a_file_is_refused(ws: Workspace) -> None:
    ws.assert_refused(
        valid_package(RawEntry("backend/routes.py/", method=0, external_attr=DIR_MODE)), "duplicates entry"
    )


def test_file_used_as_a_folder_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/routes.py/inner.py", b"x")), "which is a file")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("frontend/Pages/a.ts", "frontend/pages/b.ts"),  # folders differing in case
        (unicodedata.normalize("NFC", "frontend/café/x.ts"), unicodedata.normalize("NFD", "frontend/café/y.ts")),
        ("backend/Sub/", "backend/sub/x.py"),  # an explicit folder entry and another folder's file
    ],
)
def test_folders_colliding_after_case_folding_or_nfc_are_refused(ws: Workspace, first: str, second: str) -> None:
    """Two spellings of one folder merge on a case-insensitive or normalising file system (pack refuses them too)."""
    entries = [RawEntry(name, method=0, external_attr=DIR_MODE) if name.endswith("/") else RawEntry(name, b"x") for name in (first, second)]
    ws.assert_refused(valid_package(*entries), "names compared case-folded and NFC")


# -- modes ------------------------------------------------------------------------------


def test_symlink_entry_is_refused(ws: Workspace) -> None:
    link = RawEntry("backend/link", b"/etc/passwd", method=0, external_attr=(stat.S_IFLNK | 0o777) << 16)
    ws.assert_refused(valid_package(link), "is a symlink")


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK])
def test_device_entry_is_refused(ws: Workspace, kind: int) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/dev", b"", external_attr=(kind | 0o600) << 16)), "device file")


def test_fifo_entry_is_refused(ws: Workspace) -> None:
    ws.assert_refused(
        valid_package(RawEntry("backend/fifo", b"", external_attr=(stat.S_IFIFO | 0o600) << 16)), "is a fifo"
    )


def test_socket_entry_is_refused(ws: Workspace) -> None:
    ws.assert_refused(
        valid_package(RawEntry("backend/sock", b"", external_attr=(stat.S_IFSOCK | 0o600) << 16)), "is a socket"
    )


@pytest.mark.parametrize("bit", [stat.S_ISUID, stat.S_ISGID, stat.S_ISVTX])
def test_setuid_setgid_sticky_bits_are_refused(ws: Workspace, bit: int) -> None:
    entry = RawEntry("backend/tool", b"#!/bin/sh\n", external_attr=(stat.S_IFREG | bit | 0o755) << 16)
    ws.assert_refused(valid_package(entry), "setuid, setgid or sticky")


def test_folder_mode_on_a_file_name_is_refused(ws: Workspace) -> None:
    ws.assert_refused(
        valid_package(RawEntry("backend/sub", b"", method=0, external_attr=DIR_MODE)), "marked as a folder"
    )


def test_folder_entry_with_data_is_refused(ws: Workspace) -> None:
    ws.assert_refused(
        valid_package(RawEntry("backend/sub/", b"data", method=0, external_attr=DIR_MODE)), "folder entry with data"
    )


# -- metadata.json ------------------------------------------------------------------------


def test_missing_metadata_json_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package()[1:], "no metadata.json")


def test_metadata_json_in_a_subfolder_does_not_count(ws: Workspace) -> None:
    entries = valid_package()
    entries = with_entry(entries, 0, name="backend/metadata.json")
    ws.assert_refused(entries, "no metadata.json")


def test_metadata_json_declared_larger_than_cap_is_refused(ws: Workspace) -> None:
    big = json.dumps(valid_metadata(description="x" * 20_000)).encode()
    limits = ExtractLimits(max_metadata_bytes=4096)
    ws.assert_refused(
        valid_package(metadata=None)[1:] + [RawEntry("metadata.json", big)], "max_metadata_bytes", limits=limits
    )


def test_metadata_json_inflating_past_cap_despite_small_header_is_refused(ws: Workspace) -> None:
    big = json.dumps(valid_metadata(description="x" * 100_000)).encode()
    entries = [RawEntry("metadata.json", big, file_size=100)] + valid_package()[1:]
    ws.assert_refused(entries, "inflates past max_metadata_bytes", limits=ExtractLimits(max_metadata_bytes=8192))


def test_invalid_metadata_is_refused_as_metadata_error(ws: Workspace) -> None:
    err = ws.assert_refused(
        valid_package(metadata=valid_metadata(version="1.x")),
        "'version' must be PEP 440 (got '1.x')",
        error=MetadataError,
    )
    assert err.exit_code == 3


# -- flags and methods --------------------------------------------------------------------


def test_encrypted_entry_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/secret.py", b"x", flags=0x1)), "is encrypted")


def test_encrypted_flag_only_in_local_header_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/secret.py", b"x", local_flags=0x1)), "is encrypted")


@pytest.mark.parametrize("method", [1, 9, 12, 14, 93, 99])
def test_unknown_compression_method_is_refused(ws: Workspace, method: int) -> None:
    entry = RawEntry("backend/x.py", b"data", method=method, compressed=b"data")
    ws.assert_refused(valid_package(entry), f"unsupported compression method {method}")


def test_compression_method_differing_in_local_header_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/x.py", b"data", local_method=0)), "different compression method")


def test_stored_entry_with_differing_sizes_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/x.py", b"data", method=0, file_size=10)), "sizes differ")


# -- local headers and overlap ----------------------------------------------------------


def test_local_header_name_differing_from_central_directory_is_refused(ws: Workspace) -> None:
    entry = RawEntry("backend/x.py", b"x", local_name=b"../../evil.py")
    ws.assert_refused(valid_package(entry), "different name in its local header")


def test_overlapping_entries_are_refused(ws: Workspace) -> None:
    ws.assert_refused(overlapping_zip(), "overlaps the data of entry 'backend/a.py'")


@pytest.mark.parametrize("offset", [2**40, 2**63 + 5, 2**64 - 1])
def test_zip64_local_header_offset_beyond_the_archive_is_refused(ws: Workspace, offset: int) -> None:
    entry = RawEntry("backend/x.py", b"x", central_offset=0xFFFFFFFF, central_extra=zip64_extra(offset))
    ws.assert_refused(valid_package(entry), "local header offset outside the archive data")


def test_central_entry_pointing_at_another_entrys_header_is_refused(ws: Workspace) -> None:
    entry = RawEntry("backend/x.py", b"x", central_offset=0)  # metadata.json's local header
    ws.assert_refused(valid_package(entry), "different name in its local header")


def test_central_entry_pointing_at_garbage_is_refused(ws: Workspace) -> None:
    data = bytearray(build_zip(valid_package()))
    data[0:4] = b"JUNK"  # metadata.json's local header signature
    ws.assert_refused(bytes(data), "no valid local file header")


# -- caps on what is actually inflated ---------------------------------------------------


def test_more_entries_than_max_entries_is_refused(ws: Workspace) -> None:
    entries = valid_package(*[RawEntry(f"backend/m{i}.py", b"") for i in range(20)])
    ws.assert_refused(entries, "more than max_entries (10)", limits=ExtractLimits(max_entries=10))


def test_declared_unpacked_size_over_cap_is_refused_before_inflating(ws: Workspace) -> None:
    entry = RawEntry("backend/big.bin", b"x", file_size=10**9)
    ws.assert_refused(valid_package(entry), "claims", limits=ExtractLimits(max_unpacked_bytes=10**6))


def test_member_lying_about_its_size_stops_at_unpacked_cap(ws: Workspace) -> None:
    bomb, crc = zero_bomb(64 * 1024 * 1024)
    entry = RawEntry("backend/bomb.bin", b"", compressed=bomb, crc=crc, file_size=10)
    limits = ExtractLimits(max_unpacked_bytes=2 * 1024 * 1024, max_ratio=10_000)
    ws.assert_refused(valid_package(entry), "inflates past max_unpacked_bytes", limits=limits, structural=False)


def test_deflate_bomb_is_refused_with_bounded_memory(ws: Workspace) -> None:
    bomb, crc = zero_bomb(256 * 1024 * 1024)
    entry = RawEntry("backend/bomb.bin", b"", compressed=bomb, crc=crc, file_size=10)
    ws.write(valid_package(entry))
    tracemalloc.start()
    try:
        with pytest.raises(PackageError, match="backend/bomb.bin"):
            extract(ws.zip, ws.target, ExtractLimits(max_unpacked_bytes=64 * 1024 * 1024))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert not ws.target.exists()


def test_compression_ratio_per_entry_is_refused(ws: Workspace) -> None:
    bomb, crc = zero_bomb(16 * 1024 * 1024)
    entry = RawEntry("backend/zeros.bin", b"", compressed=bomb, crc=crc, file_size=16 * 1024 * 1024)
    ws.assert_refused(valid_package(entry), "inflates more than max_ratio (200:1)", structural=False)


def test_compression_ratio_over_whole_package_is_refused(ws: Workspace) -> None:
    bomb, crc = zero_bomb(RATIO_FLOOR_BYTES)  # each entry just at the per-entry floor
    entries = [
        RawEntry(f"backend/z{i}.bin", b"", compressed=bomb, crc=crc, file_size=RATIO_FLOOR_BYTES) for i in range(12)
    ]
    ws.assert_refused(valid_package(*entries), "past max_ratio (200:1) overall", structural=False)


def test_tiny_well_compressed_files_do_not_trip_the_ratio(ws: Workspace) -> None:
    ws.write(valid_package(RawEntry("backend/zeros.bin", bytes(100_000))))
    result = extract(ws.zip, ws.target)
    assert any(f.path == "backend/zeros.bin" and f.size == 100_000 for f in result.files)


def test_crc_mismatch_is_refused(ws: Workspace) -> None:
    entry = RawEntry("backend/x.py", b"print('hello')\n", crc=0xDEADBEEF)
    ws.assert_refused(valid_package(entry), "fails its CRC-32 check", structural=False)


def test_member_inflating_to_fewer_bytes_than_claimed_is_refused(ws: Workspace) -> None:
    entry = RawEntry("backend/x.py", b"short", file_size=500)
    ws.assert_refused(valid_package(entry), "inflates to 5 bytes but the archive claims 500", structural=False)


def test_corrupt_deflate_data_is_refused(ws: Workspace) -> None:
    entry = RawEntry("backend/x.py", b"data", compressed=b"\xff" * 20)
    ws.assert_refused(valid_package(entry), "corrupt compressed data", structural=False)


def test_unterminated_deflate_stream_is_refused(ws: Workspace) -> None:
    data = os.urandom(4000)
    entry = RawEntry("backend/x.py", data, compressed=deflate(data)[:-10])
    ws.assert_refused(valid_package(entry), "deflate stream does not end", structural=False)


def test_data_after_deflate_stream_is_refused(ws: Workspace) -> None:
    entry = RawEntry("backend/x.py", b"data", compressed=deflate(b"data") + b"hidden payload")
    ws.assert_refused(valid_package(entry), "after the end of its deflate stream", structural=False)


def test_metadata_crc_mismatch_is_refused_by_read_metadata(ws: Workspace) -> None:
    entries = with_entry(valid_package(), 0, crc=1)
    ws.assert_refused(entries, "fails its CRC-32 check")


def test_refusal_late_in_the_archive_removes_files_already_written(ws: Workspace) -> None:
    entries = valid_package(RawEntry("migrations/zz.sql", b"late", crc=zlib.crc32(b"other")))
    ws.assert_refused(entries, "'migrations/zz.sql' fails its CRC-32 check", structural=False)


# -- RECORD (its own rules: test_package_record.py; every one before the first write: test_safezip_objects.py) --


def test_a_package_with_a_true_record_extracts(ws: Workspace) -> None:
    ws.write(with_record(valid_package()))
    result = extract(ws.zip, ws.target)
    assert (ws.target / "RECORD").read_bytes() == record_bytes(valid_package())
    assert "RECORD" in {f.path for f in result.files}


def test_entry_not_matching_its_record_hash_is_refused(ws: Workspace) -> None:
    entries = valid_package()
    lying = record_bytes(with_entry(entries, -1, data="# AI Chatbot – ünïcodE\n".encode()))
    ws.assert_refused(with_record(entries, lying), "'README.md' does not match RECORD (expected sha256", structural=False)


def test_malformed_record_is_refused_by_read_metadata_too(ws: Workspace) -> None:
    ws.assert_refused(with_record(valid_package(), b"RECORD,,\r\n"), "package RECORD line 1: expected")


def test_record_as_a_folder_is_refused(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("RECORD/", method=0, external_attr=DIR_MODE)), "not allowed at the top level")


def test_raw_builder_and_zipfile_agree_on_a_valid_package(tmp_path: Path) -> None:
    path = tmp_path / "p.zip"
    path.write_bytes(build_zip(valid_package()))
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert zf.getinfo("backend/").external_attr == DIR_MODE
        assert zf.getinfo("backend/routes.py").external_attr == FILE_MODE
