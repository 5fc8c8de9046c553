"""The manifest model (one test per refusal rule) and the recorded trust state."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from atomicplug.errors import TrustError
from atomicplug.repository.manifest import Manifest, TrustedState

FUTURE = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(**changes: Any) -> dict[str, Any]:
    entry = {"id": "crm", "version": "1.0.0", "download_url": "/download/crm/1.0.0", "sha256": "a" * 64, "size": 10,
             "requires": ["email_core>=1.2"], "name": "CRM", "description": "", "category": "", "price": 0}
    entry.update(changes)
    return entry


def _doc(*entries: dict[str, Any], **changes: Any) -> bytes:
    doc: dict[str, Any] = {"schema": 1, "version": 3, "expires": FUTURE, "plugins": list(entries)}
    doc.update(changes)
    return json.dumps(doc).encode()


def test_round_trip() -> None:
    manifest = Manifest.from_json_bytes(_doc(_entry(), _entry(version="1.1.0", download_url="/download/crm/1.1.0")))
    again = Manifest.from_json_bytes(manifest.to_json_bytes())
    assert again == manifest
    assert [e.version for e in manifest.versions_of("crm")] == ["1.0.0", "1.1.0"]
    assert [e.version for e in manifest.latest()] == ["1.1.0"]


@pytest.mark.parametrize(
    ("doc", "rule"),
    [
        (_doc(schema=2), "schema"),
        (_doc(version=0), "'version' must be a positive integer"),
        (_doc(version="3"), "'version' must be a positive integer"),
        (_doc(expires="tomorrow"), "expires"),
        (_doc(expires="2030-01-01T00:00:00"), "time zone"),
        (_doc(plugins={}), "'plugins' must be a list"),
        (_doc(_entry(id="../evil")), "'id'"),
        (_doc(_entry(version="1.0/../../x")), "'version'"),
        (_doc(_entry(version="1.x")), "'version'"),
        (_doc(_entry(sha256="A" * 64)), "'sha256'"),
        (_doc(_entry(size=-1)), "'size'"),
        (_doc(_entry(size=True)), "'size'"),
        (_doc(_entry(download_url="file:///etc/passwd")), "'download_url'"),
        (_doc(_entry(requires=["Email Core!"])), "requirement"),
        (_doc(_entry(requires="email_core")), "'requires'"),
        (_doc(_entry(), _entry(version="1.0")), "twice"),
        (b"\xff", "UTF-8"),
        (b"[]", "JSON object"),
    ],
    ids=lambda value: value if isinstance(value, str) else "doc",  # stable ids: the docs hold a timestamp
)
def test_malformed_manifest_is_refused(doc: bytes, rule: str) -> None:
    with pytest.raises(TrustError, match=rule):
        Manifest.from_json_bytes(doc)


def _accept(path: Path, url: str, version: int, state: TrustedState | None = None) -> TrustedState:
    data = _doc(version=version)
    return (state or TrustedState.load(path)).accept(url, Manifest.from_json_bytes(data), data)


def test_trust_state_records_per_repository(tmp_path: Path) -> None:
    path = tmp_path / "state" / "repository_state.json"
    data = _doc(_entry())
    manifest = Manifest.from_json_bytes(data)
    written = TrustedState.load(path).accept("http://a", manifest, data)
    state = TrustedState.load(path)
    assert written == state
    assert state.repositories["http://a"]["version"] == 3
    state.check("http://b", Manifest.from_json_bytes(_doc(version=1)), _doc(version=1))  # other repository: fine
    with pytest.raises(TrustError, match="rollback"):
        state.check("http://a", Manifest.from_json_bytes(_doc(version=2)), _doc(version=2))


def test_unreadable_trust_state_is_refused_not_reset(tmp_path: Path) -> None:
    path = tmp_path / "repository_state.json"
    path.write_text("{not json")
    with pytest.raises(TrustError, match="unreadable"):
        TrustedState.load(path)


def test_accept_compares_with_the_file_not_with_a_stale_value(tmp_path: Path) -> None:
    path = tmp_path / "repository_state.json"
    stale = TrustedState.load(path)  # read before another process recorded version 5
    _accept(path, "http://a", 5)
    with pytest.raises(TrustError, match="rollback"):
        _accept(path, "http://a", 3, state=stale)
    assert TrustedState.load(path).repositories["http://a"]["version"] == 5
    assert _accept(path, "http://b", 1, state=stale).repositories["http://a"]["version"] == 5  # kept, not overwritten


def test_accepting_the_recorded_manifest_again_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "repository_state.json"
    _accept(path, "http://a", 4)
    before = path.stat().st_mtime_ns, path.stat().st_ino
    _accept(path, "http://a", 4)
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before


def test_state_lock_is_its_own_file_not_the_writer_lock(tmp_path: Path) -> None:
    state = TrustedState.load(tmp_path / "repository_state.json")
    assert state.lock_path == tmp_path / "repository_state.lock"
    _accept(state.path, "http://a", 1)
    assert state.lock_path.exists() and not (tmp_path / "lock").exists()


def test_state_held_locked_by_another_process_is_lock_busy(tmp_path: Path) -> None:
    import filelock

    from atomicplug.errors import LockBusyError

    path = tmp_path / "repository_state.json"
    data = _doc(version=2)
    with filelock.FileLock(str(TrustedState.load(path).lock_path)):
        # filelock instances of one process exclude each other (one fd each), as two processes do
        with pytest.raises(LockBusyError):
            TrustedState.load(path).accept("http://a", Manifest.from_json_bytes(data), data, lock_timeout=0.05)
    assert not path.exists()


def test_tampered_manifest_message_names_the_manifest_not_a_temp_file(tmp_path: Path) -> None:
    from atomicplug.minisign import SecretKey, sign_file
    from atomicplug.repository.manifest import verify_manifest

    key = SecretKey.generate()
    data = _doc(_entry())
    (tmp_path / "m.json").write_bytes(data)
    signature = sign_file(tmp_path / "m.json", key)
    with pytest.raises(TrustError) as info:
        verify_manifest(data.replace(b'"size": 10', b'"size": 11'), signature, [key.public_key])
    assert "manifest.json" in str(info.value) and "atomicplug-verify" not in str(info.value)
