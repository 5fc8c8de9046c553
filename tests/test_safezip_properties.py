"""Properties: any archive is extracted wholly inside the target (or the object store) or refused with PackageError."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hostile_zips import RawEntry, build_zip, valid_package, with_record
from hypothesis import strategies as st
from strategies import archives, lying_packages, mutated_zip_bytes, recorded_packages

from atomicplug.config import ExtractLimits
from atomicplug.errors import PackageError
from atomicplug.objects import ObjectStore
from atomicplug.safezip import extract, extract_to_objects, read_metadata

_LIMITS = ExtractLimits(max_unpacked_bytes=4 * 1024 * 1024, max_entries=50)


def _tree(root: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.add(Path(dirpath, name).relative_to(root).as_posix())
    return found


_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@_SETTINGS
@given(archives())
def test_any_archive_is_extracted_inside_the_target_or_refused(data: bytes) -> None:
    _check_extracted_inside_or_refused(data)


@_SETTINGS
@given(lying_packages())
def test_members_with_lying_headers_are_extracted_inside_the_target_or_refused(data: bytes) -> None:
    _check_extracted_inside_or_refused(data)


def _check_extracted_inside_or_refused(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "outside").mkdir()
        zip_path = root / "outside" / "pkg.zip"
        zip_path.write_bytes(data)
        target = root / "outside" / "staging" / "tx"
        target.parent.mkdir()
        before = _tree(root) - {"outside/staging"}

        try:
            result = extract(zip_path, target, _LIMITS)
        except PackageError as exc:
            event(f"refused: {type(exc).__name__}")
            assert not target.exists()
            assert _tree(root) - {"outside/staging"} == before
            return
        event("extracted")
        # Extracted: every file is inside the target and matches what was reported.
        outside = {p for p in _tree(root) if not p.startswith("outside/staging/tx")} - {"outside/staging"}
        assert outside == before
        on_disk = {p for p in _tree(target) if (target / p).is_file()}
        assert on_disk == {f.path for f in result.files}
        for f in result.files:
            path = target / f.path
            assert not path.is_symlink()
            assert path.resolve().is_relative_to(target.resolve())
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
        assert read_metadata(zip_path, _LIMITS) == result.metadata


@_SETTINGS
@given(archives())
def test_any_archive_is_stored_as_objects_or_refused_leaving_none(data: bytes) -> None:
    _check_stored_or_refused(data)


@_SETTINGS
@given(recorded_packages())
def test_a_package_whose_record_lies_is_refused(package: tuple[bytes, bool]) -> None:
    data, lies = package
    stored = _check_stored_or_refused(data)
    assert not (lies and stored)


def _check_stored_or_refused(data: bytes) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        zip_path = root / "pkg.zip"
        zip_path.write_bytes(data)
        store = ObjectStore(root / "objects")
        store.put_bytes(b"present before")
        try:
            result = extract_to_objects(zip_path, store, _LIMITS)
        except PackageError as exc:
            event(f"refused: {type(exc).__name__}")
            with pytest.raises(PackageError):  # the same verdict as the folder extractor's
                extract(zip_path, root / "tree", _LIMITS)
            assert list(store) == [hashlib.sha256(b"present before").hexdigest()]
            assert _tree(root) == {"pkg.zip", "objects", *(f"objects/{p}" for p in _tree(root / "objects"))}
            assert not list((root / "objects").glob(".*"))
            return False
        event(f"stored, RECORD: {result.has_record}")
        assert _tree(root) - {p for p in _tree(root) if p.startswith("objects")} == {"pkg.zip"}
        assert not list((root / "objects").glob(".*"))
        for f in result.files:
            assert store.has(f.sha256, f.size) and store.verify(f.sha256)
        assert read_metadata(zip_path, _LIMITS) == result.metadata
        folder = extract(zip_path, root / "tree", _LIMITS)
        assert folder.files == result.files
        return True


#: A package with a RECORD and a few files, whose objects a store already holds (an upgrade's case).
_BASE_ENTRIES = with_record(valid_package(RawEntry("backend/util.py", b"X = 1\n" * 40), RawEntry("frontend/app.css", b"a{}\n" * 30)))
_BASE = build_zip(_BASE_ENTRIES)


@_SETTINGS
@given(st.one_of(mutated_zip_bytes(_BASE), st.just(_BASE)), st.data())
def test_over_a_store_holding_its_objects_a_package_links_only_sound_objects_or_is_refused(data: bytes, draw: st.DataObject) -> None:
    """The upgrade's path: entries whose objects exist are not inflated. Whatever the bytes, and with
    some of those objects visibly damaged (written through a tree's link), what is accepted names
    only objects that hash to their names, and a refusal adds nothing (an object it rewrote is repaired)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "base.zip").write_bytes(_BASE)
        store = ObjectStore(root / "objects")
        base = extract_to_objects(root / "base.zip", store, _LIMITS)
        damaged = draw.draw(st.sets(st.sampled_from([f.sha256 for f in base.files])), label="damaged objects")
        for sha in damaged:
            path = store.path(sha)
            os.chmod(path, 0o644)
            with open(path, "r+b") as handle:
                first = handle.read(1)
                handle.seek(0)
                handle.write(bytes([(first[0] if first else 0) ^ 1]))
        zip_path = root / "pkg.zip"
        zip_path.write_bytes(data)
        before = {s: store.path(s).read_bytes() for s in store}
        try:
            result = extract_to_objects(zip_path, store, _LIMITS)
        except PackageError as exc:
            event(f"refused: {type(exc).__name__}")
            assert set(store) == set(before)  # nothing added; an object rewritten before the refusal was repaired
            assert all(store.path(s).read_bytes() == old or store.verify(s) for s, old in before.items())
            assert not list((root / "objects").glob(".*"))
            return
        event(f"stored: {result.reused} reused, {len(damaged)} damaged")
        assert not list((root / "objects").glob(".*"))
        for f in result.files:
            assert store.has(f.sha256, f.size) and store.verify(f.sha256), f"{f.path} links a damaged object"
