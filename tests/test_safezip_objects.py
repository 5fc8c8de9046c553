"""atomicplug.safezip.extract_to_objects: the safe extractor writing into the object store.

The refusal rules are the folder extractor's (test_safezip.py); here: what lands
in the store, what RECORD lets it skip, what a refusal leaves, and the sink.
"""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hostile_zips import RawEntry, build_zip, record_bytes, valid_metadata, valid_package, with_entry, with_record, zero_bomb

from atomicplug.config import ExtractLimits
from atomicplug.errors import PackageError
from atomicplug.objects import ObjectStore
from atomicplug.package_record import RecordEntry
from atomicplug.pycs import PYC_FILENAME, SourceCompiler, build_pyc
from atomicplug.safezip import extract, extract_to_objects, read_metadata


def files_of(entries: list[RawEntry]) -> dict[str, bytes]:
    return {e.name: e.data for e in entries if isinstance(e.name, str) and not e.name.endswith("/")}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = ObjectStore(root / "objects")

    def zip(self, entries: list[RawEntry] | bytes, name: str = "pkg.zip") -> Path:
        path = self.root / name
        path.write_bytes(entries if isinstance(entries, bytes) else build_zip(entries))
        return path

    def objects(self) -> dict[str, bytes]:
        return {s: self.store.read_bytes(s) for s in self.store}

    def temps(self) -> list[Path]:
        return list(self.store.root.glob(".*tmp-atomicplug")) if self.store.root.is_dir() else []

    def assert_refused(self, entries: list[RawEntry] | bytes, fragment: str, limits: ExtractLimits | None = None) -> None:
        """Refused with ``fragment`` in one line; the store holds exactly what it held before, and no temp."""
        before = self.objects()
        with pytest.raises(PackageError) as info:
            extract_to_objects(self.zip(entries), self.store, limits)
        assert fragment in str(info.value) and "\n" not in str(info.value)
        assert self.objects() == before
        assert self.temps() == []


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


# -- what lands in the store ---------------------------------------------------------------


def test_every_file_becomes_an_object_and_the_tree_is_returned(ws: Workspace) -> None:
    entries = valid_package(RawEntry("frontend/assets/", method=0, external_attr=0x41ED0010))
    result = extract_to_objects(ws.zip(entries), ws.store)
    expected = files_of(entries)
    assert result.files == tuple(RecordEntry(p, len(d), sha(d)) for p, d in sorted(expected.items()))
    assert ws.objects() == {sha(d): d for d in expected.values()}
    assert result.folders == ("backend", "frontend/assets")
    assert not result.has_record and result.reused == 0
    assert result.inflated_bytes == sum(len(d) for d in expected.values())
    assert set(result.created) == {sha(d) for d in expected.values()}
    assert result.metadata.id == "ai_chatbot"
    assert ws.temps() == []
    for s in ws.store:
        assert ws.store.has(s, len(ws.store.read_bytes(s)))


def test_a_package_with_record_lists_record_as_a_file_too(ws: Workspace) -> None:
    entries = with_record(valid_package())
    result = extract_to_objects(ws.zip(entries), ws.store)
    assert result.has_record
    assert {f.path for f in result.files} == set(files_of(entries))
    assert ws.store.read_bytes(next(f.sha256 for f in result.files if f.path == "RECORD")) == record_bytes(valid_package())


@pytest.mark.parametrize("fresh", [False, True], ids=["looking-first", "creating-first"])
def test_identical_files_of_two_packages_are_one_object(ws: Workspace, fresh: bool) -> None:
    shared = b"export const shared = 1;\n" * 10
    first = extract_to_objects(ws.zip(with_record(valid_package(RawEntry("frontend/shared.ts", shared))), "a.zip"), ws.store)
    other = valid_package(RawEntry("frontend/lib/same.ts", shared), metadata=valid_metadata(id="other"))
    second = extract_to_objects(ws.zip(with_record(other), "b.zip"), ws.store, fresh=fresh)
    assert sha(shared) in first.created and sha(shared) not in second.created
    made_first = [d for p, d in files_of(with_record(other)).items() if p != "RECORD" and sha(d) in first.created]
    assert second.reused == len(made_first)
    assert second.inflated_bytes == sum(len(d) for d in files_of(with_record(other)).values()) - sum(map(len, made_first))
    assert sum(1 for s in ws.store if s == sha(shared)) == 1
    assert {f.sha256 for f in first.files if f.path == "frontend/shared.ts"} == {f.sha256 for f in second.files if f.path == "frontend/lib/same.ts"}


def test_a_file_object_is_read_and_left_open(ws: Workspace) -> None:
    path = ws.zip(with_record(valid_package()))
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()  # the caller's check of the blob
        assert digest == sha(path.read_bytes())
        result = extract_to_objects(handle, ws.store)
        assert not handle.closed
        assert read_metadata(handle) == result.metadata
        folder = extract(handle, ws.root / "tree")
        assert not handle.closed
    assert {f.path for f in folder.files} == {f.path for f in result.files}


# -- what RECORD lets it skip --------------------------------------------------------------


def test_with_record_an_entry_whose_object_exists_is_not_inflated(ws: Workspace) -> None:
    entries = with_record(valid_package())
    extract_to_objects(ws.zip(entries), ws.store)
    again = extract_to_objects(ws.zip(entries), ws.store)
    assert again.reused == len(files_of(entries)) - 1  # all but RECORD, which has no hash of its own
    assert again.inflated_bytes == len(record_bytes(valid_package()))
    assert again.created == ()


def test_an_upgrade_inflates_only_the_changed_files(ws: Workspace) -> None:
    big = [RawEntry(f"frontend/assets/{i}.bin", os.urandom(20_000), method=0) for i in range(20)]
    v1 = valid_package(*big)
    v2 = with_entry(v1, -1, data=os.urandom(20_000))
    extract_to_objects(ws.zip(with_record(v1), "v1.zip"), ws.store)
    result = extract_to_objects(ws.zip(with_record(v2), "v2.zip"), ws.store)
    assert result.inflated_bytes == 20_000 + len(record_bytes(v2))
    assert result.created == (sha(v2[-1].data), sha(record_bytes(v2)))


@pytest.mark.parametrize("fresh", [False, True], ids=["looking-first", "creating-first"])
def test_a_plugins_first_install_creates_its_objects_without_looking_first(ws: Workspace, monkeypatch: pytest.MonkeyPatch, fresh: bool) -> None:
    """Files most likely new here (``fresh``: no tree of the plugin yet) cost one open each, not an lstat and an open."""
    entries = with_record(valid_package(*[RawEntry(f"frontend/assets/{i}.txt", b"asset %d\n" % i) for i in range(10)]))
    looked: list[str] = []
    real_lstat = os.lstat

    def counting_lstat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.path.dirname(path) == str(ws.store.root) and len(os.path.basename(path)) == 64:  # an object's name
            looked.append(str(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", counting_lstat)
    result = extract_to_objects(ws.zip(entries), ws.store, fresh=fresh)
    monkeypatch.undo()
    assert set(result.created) == {sha(d) for p, d in files_of(entries).items()}
    assert ws.objects() == {sha(d): d for d in files_of(entries).values()}
    # Each file with a RECORD line is looked up first, or not; RECORD, which no line names, is
    # written to a temp and placed after a look at its name either way.
    assert len(looked) == (1 if fresh else len(files_of(entries)))


def test_a_skipped_entry_is_trusted_on_the_signed_records_word(ws: Workspace) -> None:
    """Not inflated means not read: even data that would fail its CRC goes unnoticed when its object exists.
    What gets installed is exactly the content the signed RECORD names (the object is that sha256)."""
    entries = with_record(valid_package())
    extract_to_objects(ws.zip(entries), ws.store)
    index = next(i for i, e in enumerate(entries) if e.name == "backend/routes.py")
    broken = with_entry(entries, index, crc=zlib.crc32(b"other"))
    result = extract_to_objects(ws.zip(broken), ws.store)
    assert next(f for f in result.files if f.path == "backend/routes.py").sha256 == sha(b"router = None\n")
    with pytest.raises(PackageError, match="fails its CRC-32 check"):
        extract_to_objects(ws.zip(broken), ObjectStore(ws.root / "fresh"))


def test_without_record_every_entry_is_inflated_but_existing_objects_are_kept(ws: Workspace) -> None:
    entries = valid_package()
    extract_to_objects(ws.zip(entries), ws.store)
    inodes = {s: ws.store.path(s).stat().st_ino for s in ws.store}
    again = extract_to_objects(ws.zip(entries), ws.store)
    assert again.reused == 0 and again.created == ()
    assert again.inflated_bytes == sum(len(d) for d in files_of(entries).values())
    assert {s: ws.store.path(s).stat().st_ino for s in ws.store} == inodes


@pytest.mark.parametrize("fresh", [False, True], ids=["looking-first", "creating-first"])
def test_a_corrupt_object_is_reinflated_and_repaired_in_place_never_reused(ws: Workspace, fresh: bool) -> None:
    entries = with_record(valid_package())
    extract_to_objects(ws.zip(entries), ws.store)
    routes = sha(b"router = None\n")
    tree_file = ws.root / "tree-routes.py"
    ws.store.link(routes, tree_file)
    inode = tree_file.stat().st_ino
    os.chmod(tree_file, 0o644)
    tree_file.write_bytes(b"router = 666\n")  # same size, written through a tree's link
    assert not ws.store.has(routes, 14)
    result = extract_to_objects(ws.zip(entries), ws.store, fresh=fresh)
    assert result.reused == len(files_of(entries)) - 2  # all but RECORD and the corrupt one
    assert ws.store.has(routes, 14) and ws.store.verify(routes)
    assert ws.store.path(routes).stat().st_ino == inode
    assert tree_file.read_bytes() == b"router = None\n"
    assert ws.store.repaired == [routes]


# -- RECORD refusals, and what a refusal leaves ------------------------------------------------


def test_an_entry_not_matching_its_record_hash_is_refused_and_nothing_stays(ws: Workspace) -> None:
    entries = valid_package()
    lying = record_bytes(with_entry(entries, 3, data=b"router = 1\n\n\n\n"))  # same size, other bytes
    ws.assert_refused(with_record(entries, lying), "package entry 'backend/routes.py' does not match RECORD (expected sha256")


def test_a_record_mismatch_late_in_the_archive_removes_the_objects_this_call_created(ws: Workspace) -> None:
    extract_to_objects(ws.zip(valid_package()), ws.store)  # objects that existed before stay
    entries = valid_package(RawEntry("frontend/new.ts", b"new"), RawEntry("migrations/zz.sql", b"late"))
    lying = record_bytes(with_entry(entries, -1, data=b"LATE"))
    ws.assert_refused(with_record(entries, lying), "'migrations/zz.sql' does not match RECORD")


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        (lambda r: r.replace(b"RECORD,,\n", b""), "does not list itself"),
        (lambda r: r + b"backend/ghost.py,sha256=" + b"0" * 64 + b",1\n", "lists 'backend/ghost.py', which is not in the package"),
        (lambda r: b"\n".join(line for line in r.split(b"\n") if not line.startswith(b"README")), "does not list package entry 'README.md'"),
        (lambda r: r.replace(b",14\n", b",15\n"), "gives 'backend/routes.py' 15 bytes, but the archive says 14"),
        (lambda r: r.replace(b"backend/routes.py", b'"backend/routes.py"'), "line"),
        (lambda r: r + b"backend,sha256=" + b"0" * 64 + b",0\n", "lists 'backend', which is a folder"),
    ],
)
def test_a_record_disagreeing_with_the_zip_is_refused_before_anything_is_written(ws: Workspace, record, fragment: str) -> None:  # type: ignore[no-untyped-def]
    entries = valid_package()
    bad = record(record_bytes(entries))
    for where in ("objects", "folder", "metadata"):
        path = ws.zip(with_record(entries, bad))
        with pytest.raises(PackageError, match=fragment.replace("(", r"\(")) as info:
            if where == "objects":
                extract_to_objects(path, ws.store)
            elif where == "folder":
                extract(path, ws.root / "tree")
            else:
                read_metadata(path)
        assert info.value.exit_code == 3
    assert not ws.store.root.exists()
    assert not (ws.root / "tree").exists()


def test_a_record_larger_than_any_record_of_the_package_is_refused_unread(ws: Workspace) -> None:
    ws.assert_refused(with_record(valid_package(), b"x" * 10_000), "'RECORD' is larger than a RECORD of this package can be")


def test_a_record_inflating_past_its_cap_despite_a_small_header_is_refused(ws: Workspace) -> None:
    bomb, crc = zero_bomb(1024 * 1024)
    ws.assert_refused(valid_package(RawEntry("RECORD", b"", compressed=bomb, crc=crc, file_size=10)), "inflates past the RECORD size limit")


def test_a_crc_refusal_removes_the_objects_this_call_created(ws: Workspace) -> None:
    extract_to_objects(ws.zip(valid_package()), ws.store)
    entries = valid_package(RawEntry("frontend/new.ts", b"brand new"), RawEntry("migrations/zz.sql", b"late", crc=zlib.crc32(b"x")))
    ws.assert_refused(entries, "'migrations/zz.sql' fails its CRC-32 check")


def test_the_caps_count_inflated_bytes_with_bounded_memory(ws: Workspace) -> None:
    bomb, crc = zero_bomb(256 * 1024 * 1024)
    path = ws.zip(valid_package(RawEntry("backend/bomb.bin", b"", compressed=bomb, crc=crc, file_size=10)))
    tracemalloc.start()
    try:
        with pytest.raises(PackageError, match="backend/bomb.bin"):
            extract_to_objects(path, ws.store, ExtractLimits(max_unpacked_bytes=64 * 1024 * 1024))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert ws.objects() == {} and ws.temps() == []


def test_hostile_names_are_refused_before_the_store_is_created(ws: Workspace) -> None:
    ws.assert_refused(valid_package(RawEntry("backend/../../evil.py", b"x")), "escapes the package folder")
    assert not ws.store.root.exists()


# -- the sink (backend sources for the compiler) ----------------------------------------------


class Recorder:
    """A SourceSink that remembers what it was given."""

    def __init__(self, known: set[str] | None = None) -> None:
        self.known_shas = known or set()
        self.taken: list[tuple[str, str, bytes]] = []
        self.expected: list[int] = []

    def wants(self, relative: str) -> bool:
        return relative.startswith("backend/") and relative.endswith(".py")

    def known(self, sha256: str) -> bool:
        return sha256 in self.known_shas

    def expect(self, size: int) -> None:
        assert not self.taken, "told before the first source"
        self.expected.append(size)

    def take(self, relative: str, sha256: str, data: bytes) -> None:
        self.taken.append((relative, sha256, data))


def test_the_sink_gets_each_backend_source_it_does_not_know(ws: Workspace) -> None:
    entries = with_record(valid_package())
    routes, init = b"router = None\n", b"from .routes import router\n" * 20
    sink = Recorder(known={sha(routes)})
    extract_to_objects(ws.zip(entries), ws.store, sink=sink)
    assert sink.taken == [("backend/__init__.py", sha(init), init)]
    assert sink.expected == [len(init)], "told first how many bytes of sources it does not know are coming"


def test_without_record_the_sink_is_told_nothing_in_advance(ws: Workspace) -> None:
    """What it knows shows only once inflated: an upgrade whose sources are all known must not start
    the compile worker (and stop the gate's interpreter) for nothing."""
    routes = b"router = None\n"
    sink = Recorder(known={sha(routes)})
    extract_to_objects(ws.zip(valid_package()), ws.store, sink=sink)
    assert sink.expected == [] and [t[0] for t in sink.taken] == ["backend/__init__.py"]


def test_skipped_sources_are_read_back_from_the_store_only_when_the_sink_needs_them(ws: Workspace) -> None:
    entries = with_record(valid_package())
    extract_to_objects(ws.zip(entries), ws.store)
    sink = Recorder(known={sha(b"router = None\n")})
    result = extract_to_objects(ws.zip(entries), ws.store, sink=sink)
    assert result.inflated_bytes == len(record_bytes(valid_package()))
    assert [t[0] for t in sink.taken] == ["backend/__init__.py"]


def test_the_source_compiler_returns_portable_pycs_by_source_sha(ws: Workspace) -> None:
    entries = with_record(valid_package(RawEntry("backend/copy.py", b"router = None\n")))
    pycs: dict[str, bytes] = {}
    compiler = SourceCompiler(pycs.__setitem__)
    try:
        extract_to_objects(ws.zip(entries), ws.store, sink=compiler)
        compiler.finish()
    finally:
        compiler.close()
    init = b"from .routes import router\n" * 20
    assert pycs == {sha(init): build_pyc(init), sha(b"router = None\n"): build_pyc(b"router = None\n")}
    assert PYC_FILENAME.encode() in pycs[sha(init)]


def test_a_source_that_does_not_compile_refuses_the_package_naming_it(ws: Workspace) -> None:
    entries = valid_package(RawEntry("backend/broken.py", b"def nope(:\n"))
    compiler = SourceCompiler(lambda *_: None)
    try:
        extract_to_objects(ws.zip(entries), ws.store, sink=compiler)
        with pytest.raises(PackageError, match=r"^backend/broken.py does not compile: .*\(line 1\)$"):
            compiler.finish()
    finally:
        compiler.close()


def test_metadata_json_bytes_parse_the_same_from_the_store(ws: Workspace) -> None:
    result = extract_to_objects(ws.zip(valid_package()), ws.store)
    stored = ws.store.read_bytes(next(f.sha256 for f in result.files if f.path == "metadata.json"))
    assert json.loads(stored) == valid_metadata()
