"""Bounded fuzzing CI runs: mutated zips and random JSON raise only PackageError/MetadataError.

The unbounded versions live in ``fuzz/`` (atheris); these use the same
strategies with a fixed budget so they finish in seconds.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import metadata_bytes, metadata_dicts, mutated_zip_bytes

from atomicplug.config import ExtractLimits
from atomicplug.errors import MetadataError, PackageError
from atomicplug.metadata import Metadata
from atomicplug.safezip import extract, read_metadata

_LIMITS = ExtractLimits(max_unpacked_bytes=1024 * 1024)
_FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feed(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp, "pkg.zip")
        zip_path.write_bytes(data)
        with contextlib.suppress(PackageError):
            read_metadata(zip_path, _LIMITS)
        target = Path(tmp, "out")
        try:
            extract(zip_path, target, _LIMITS)
        except PackageError:
            assert not target.exists()
        assert {p.name for p in Path(tmp).iterdir()} <= {"pkg.zip", "out"}


@_FAST
@given(mutated_zip_bytes())
def test_mutated_zips_raise_only_package_error(data: bytes) -> None:
    _feed(data)


@_FAST
@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_package_error(data: bytes) -> None:
    _feed(data)


@_FAST
@given(st.binary(max_size=200))
def test_random_bytes_after_a_zip_signature_raise_only_package_error(tail: bytes) -> None:
    _feed(b"PK\x03\x04" + tail + b"PK\x05\x06" + tail[:18])


@_FAST
@given(metadata_bytes())
def test_metadata_bytes_raise_only_metadata_error(data: bytes) -> None:
    try:
        meta = Metadata.from_json_bytes(data)
    except MetadataError:
        return
    assert Metadata.from_dict(meta.to_dict()) == meta


@_FAST
@given(metadata_dicts())
def test_metadata_dicts_raise_only_metadata_error(data: dict[str, object]) -> None:
    try:
        meta = Metadata.from_dict(data)
    except MetadataError as exc:
        assert exc.problems  # type: ignore[attr-defined]
        return
    assert Metadata.from_dict(meta.to_dict()) == meta
