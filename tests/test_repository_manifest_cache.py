"""Issue 16 seams: the read-only manifest load and the verified, revalidated manifest cache.

Against ``atomicplug serve``'s real server over loopback, whose handler logs
each request (path, status, If-None-Match). A listing must not fetch the
manifest on every call, must never write the trust state, and must never
trust a cached copy beyond its max age, its expiry, a newer accepted version,
or its own signature.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from misbehaving_server import MisbehavingServer, make_key, publish_repo_folder

from atomicplug.config import Config
from atomicplug.errors import TrustError
from atomicplug.minisign import SecretKey
from atomicplug.repository import cached_manifest, load_manifest
from atomicplug.repository.manifest_cache import cache_path, state_path
from atomicplug.repository.repo_admin import init_repository, resign_repository
from atomicplug.repository.server import RepositoryServer, make_server


@attrs.frozen
class Site:
    config: Config
    repo: Path
    key: SecretKey
    log: list[tuple[str, int, str | None]]

    def manifest_requests(self) -> list[tuple[int, str | None]]:
        return [(status, etag) for path, status, etag in self.log if path == "/manifest.json"]

    def signature_requests(self) -> int:
        return sum(1 for path, _, _ in self.log if path == "/manifest.json.minisig")

    def state(self) -> dict[str, object] | None:
        path = state_path(self.config)
        return json.loads(path.read_text()) if path.exists() else None


def _logging(server: RepositoryServer, log: list[tuple[str, int, str | None]]) -> None:
    class Logged(server.RequestHandlerClass):  # type: ignore[misc, name-defined]
        def log_request(self, code: object = "-", size: object = "-") -> None:
            log.append((self.path, int(code), self.headers.get("If-None-Match")))  # type: ignore[call-overload]

    server.RequestHandlerClass = Logged


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    pub, key = make_key(tmp_path / "keys", "repo")
    repo = tmp_path / "repo"
    init_repository(repo, key)
    server = make_server(repo, "127.0.0.1", 0, quiet=True)
    log: list[tuple[str, int, str | None]] = []
    _logging(server, log)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    config = Config.for_directory(tmp_path / "site", repository=server.url, trusted_keys=[str(pub)], download_timeout=10)
    try:
        yield Site(config, repo, key, log)
    finally:
        server.shutdown()
        server.server_close()


def test_a_listing_within_max_age_asks_the_repository_once(site: Site) -> None:
    first = cached_manifest(site.config, max_age=3600)
    for _ in range(5):
        assert cached_manifest(site.config, max_age=3600) == first
    assert site.manifest_requests() == [(200, None)]


def test_after_max_age_the_copy_is_revalidated_and_a_304_costs_no_signature(site: Site) -> None:
    first = cached_manifest(site.config, max_age=0)
    again = cached_manifest(site.config, max_age=0)
    assert again == first
    (status_1, _), (status_2, etag_sent) = site.manifest_requests()
    assert (status_1, status_2) == (200, 304) and etag_sent
    assert site.signature_requests() == 1


def test_max_age_defaults_to_the_config_key(site: Site) -> None:
    cached_manifest(site.config)  # manifest_max_age defaults to 60 s
    cached_manifest(site.config)
    assert len(site.manifest_requests()) == 1
    no_cache = attrs.evolve(site.config, manifest_max_age=0)
    cached_manifest(no_cache)
    assert len(site.manifest_requests()) == 2


def test_a_new_manifest_replaces_the_copy_after_max_age(site: Site) -> None:
    assert cached_manifest(site.config, max_age=0).version == 1
    resign_repository(site.repo, site.key)
    assert cached_manifest(site.config, max_age=3600).version == 1  # still young: not asked
    assert cached_manifest(site.config, max_age=0).version == 2
    assert [status for status, _ in site.manifest_requests()] == [200, 200]


def test_listings_never_write_the_trust_state(site: Site) -> None:
    cached_manifest(site.config, max_age=0)
    cached_manifest(site.config, max_age=0)
    load_manifest(site.config, record=False)
    assert site.state() is None
    load_manifest(site.config)
    assert site.state() is not None


def test_read_only_load_still_refuses_a_rollback(site: Site) -> None:
    resign_repository(site.repo, site.key)
    resign_repository(site.repo, site.key)
    assert load_manifest(site.config).version == 3  # recorded
    recorded = state_path(site.config).read_bytes()
    init_repository(site.repo.parent / "old", site.key)  # a validly signed version 1, replayed
    for name in ("manifest.json", "manifest.json.minisig"):
        (site.repo / name).write_bytes((site.repo.parent / "old" / name).read_bytes())
    for load in (lambda: load_manifest(site.config, record=False), lambda: cached_manifest(site.config, max_age=0)):
        with pytest.raises(TrustError, match="rollback"):
            load()
    assert state_path(site.config).read_bytes() == recorded


def test_a_cached_copy_is_never_trusted_past_its_expiry(site: Site) -> None:
    manifest = cached_manifest(site.config, max_age=3600)
    later = manifest.expires + dt.timedelta(seconds=1)
    with pytest.raises(TrustError, match="freeze attack"):  # the server still has the same expired manifest
        cached_manifest(site.config, max_age=3600, now=later)
    assert site.manifest_requests() == [(200, None), (200, None)]  # asked afresh, without validators


def test_a_copy_older_than_a_version_accepted_since_is_not_used(site: Site) -> None:
    assert cached_manifest(site.config, max_age=3600).version == 1
    resign_repository(site.repo, site.key)
    assert load_manifest(site.config).version == 2  # an install accepted version 2
    assert cached_manifest(site.config, max_age=3600).version == 2


def test_a_tampered_cache_is_not_trusted_even_when_the_server_says_304(site: Site) -> None:
    genuine = cached_manifest(site.config, max_age=3600)
    path = cache_path(site.config, site.config.repository or "")
    cached = json.loads(path.read_text())
    forged = genuine.to_json_bytes().replace(b'"version": 1', b'"version": 99')
    cached["manifest"] = base64.b64encode(forged).decode()
    path.write_text(json.dumps(cached))
    assert cached_manifest(site.config, max_age=3600) == genuine
    assert site.manifest_requests()[-1] == (200, None)  # no validators offered for a copy that does not verify


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"url": "http://elsewhere"}'])
def test_an_unreadable_cache_is_fetched_again(site: Site, content: bytes) -> None:
    genuine = cached_manifest(site.config, max_age=3600)
    cache_path(site.config, site.config.repository or "").write_bytes(content)
    assert cached_manifest(site.config, max_age=3600) == genuine
    assert len(site.manifest_requests()) == 2


def test_install_loads_revalidate_too(site: Site) -> None:
    load_manifest(site.config)
    load_manifest(site.config)
    assert [status for status, _ in site.manifest_requests()] == [200, 304]
    assert site.signature_requests() == 1


def test_a_server_without_validators_is_simply_asked_again(tmp_path: Path) -> None:
    pub, key = make_key(tmp_path / "keys", "repo")
    repo = tmp_path / "repo"
    init_repository(repo, key)
    with MisbehavingServer() as server:
        publish_repo_folder(server, repo)
        config = Config.for_directory(tmp_path / "site", repository=server.url, trusted_keys=[str(pub)], download_timeout=10)
        assert cached_manifest(config, max_age=0).version == 1
        assert cached_manifest(config, max_age=0).version == 1
        assert server.requests_for("/manifest.json") == [None, None]
