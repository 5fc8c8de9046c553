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
)
def test_malformed_manifest_is_refused(doc: bytes, rule: str) -> None:
    with pytest.raises(TrustError, match=rule):
        Manifest.from_json_bytes(doc)


def test_trust_state_records_per_repository(tmp_path: Path) -> None:
    path = tmp_path / "state" / "repository_state.json"
    data = _doc(_entry())
    manifest = Manifest.from_json_bytes(data)
    TrustedState.load(path).accept("http://a", manifest, data)
    state = TrustedState.load(path)
    assert state.repositories["http://a"]["version"] == 3
    state.check("http://b", Manifest.from_json_bytes(_doc(version=1)), _doc(version=1))  # other repository: fine
    with pytest.raises(TrustError, match="rollback"):
        state.check("http://a", Manifest.from_json_bytes(_doc(version=2)), _doc(version=2))


def test_unreadable_trust_state_is_refused_not_reset(tmp_path: Path) -> None:
    path = tmp_path / "repository_state.json"
    path.write_text("{not json")
    with pytest.raises(TrustError, match="unreadable"):
        TrustedState.load(path)
