"""``atomicplug serve``: routes, Range, and nothing outside the repository reachable."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from atomicplug.repository.server import make_server, parse_range


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    repo = tmp_path / "repo"
    (repo / "plugins" / "crm").mkdir(parents=True)
    (repo / "manifest.json").write_bytes(b'{"schema": 1}')
    (repo / "manifest.json.minisig").write_bytes(b"sig")
    (repo / "plugins" / "crm" / "v1.0.0.zip").write_bytes(bytes(range(256)) * 40)
    (repo / "plugins" / "crm" / "v1.0.0.zip.minisig").write_bytes(b"pkgsig")
    (repo / "keys").mkdir()
    (repo / "keys" / "repo.pub").write_text("public")
    (tmp_path / "secret.txt").write_text("outside")
    server = make_server(repo, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.url, repo
    finally:
        server.shutdown()
        server.server_close()


def _raw_get(url: str, path: str) -> int:
    """GET a path exactly as written (no client-side normalisation of ``..``)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_serves_manifest_signature_and_packages(served: tuple[str, Path]) -> None:
    url, repo = served
    assert requests.get(url + "/manifest.json", timeout=5).content == b'{"schema": 1}'
    assert requests.get(url + "/manifest.json.minisig", timeout=5).content == b"sig"
    response = requests.get(url + "/download/crm/1.0.0", timeout=5)
    assert response.status_code == 200
    assert response.content == (repo / "plugins" / "crm" / "v1.0.0.zip").read_bytes()
    assert response.headers["Content-Length"] == str(256 * 40)
    assert response.headers["Accept-Ranges"] == "bytes"
    assert requests.get(url + "/download/crm/1.0.0.minisig", timeout=5).content == b"pkgsig"


def test_head_has_length_and_no_body(served: tuple[str, Path]) -> None:
    url, _ = served
    response = requests.head(url + "/download/crm/1.0.0", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(256 * 40)
    assert response.content == b""


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=100-", 100, 10239), ("bytes=0-9", 0, 9), ("bytes=-5", 10235, 10239), ("bytes=10000-99999", 10000, 10239)],
)
def test_range_requests_get_206(served: tuple[str, Path], header: str, first: int, last: int) -> None:
    url, repo = served
    data = (repo / "plugins" / "crm" / "v1.0.0.zip").read_bytes()
    response = requests.get(url + "/download/crm/1.0.0", headers={"Range": header}, timeout=5)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert response.content == data[first : last + 1]


def test_unsatisfiable_range_gets_416(served: tuple[str, Path]) -> None:
    url, _ = served
    response = requests.get(url + "/download/crm/1.0.0", headers={"Range": "bytes=999999-"}, timeout=5)
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{256 * 40}"


def test_malformed_range_serves_whole_file(served: tuple[str, Path]) -> None:
    url, _ = served
    response = requests.get(url + "/download/crm/1.0.0", headers={"Range": "bytes=5-2"}, timeout=5)
    assert response.status_code == 200 and len(response.content) == 256 * 40


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/download/../../secret.txt",
        "/download/crm/../../../secret.txt",
        "/download/%2e%2e/%2e%2e/secret.txt",
        "/download/crm/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/download/crm/..%2F..%2Fsecret.txt",
        "/plugins/crm/v1.0.0.zip",
        "/keys/repo.pub",
        "/download/CRM/1.0.0",
        "/download/crm/1.0.0/extra",
        "/download/crm/not-a-version",
        "/download/crm/1.0.0%00",
        "/download/crm/%ff",
        "/manifest.json/..",
        "//etc/passwd",
        "/download/crm/1.0.0.zip",
    ],
)
def test_paths_outside_the_routes_are_refused(served: tuple[str, Path], path: str) -> None:
    url, _ = served
    assert _raw_get(url, path) in (400, 404)


def test_symlink_escaping_the_repository_is_not_served(served: tuple[str, Path]) -> None:
    url, repo = served
    (repo / "plugins" / "crm" / "v2.0.0.zip").symlink_to(repo.parent / "secret.txt")
    assert _raw_get(url, "/download/crm/2.0.0") == 404


def test_parse_range_edge_cases() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=10-", 10) is False
    assert parse_range("bytes=-0", 10) is False
    assert parse_range("bytes=0-1,3-4", 10) is None  # multiple ranges: whole file
    assert parse_range("items=0-1", 10) is None
