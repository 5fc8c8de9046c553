"""``atomicplug serve``: routes, Range, and nothing outside the repository reachable."""

from __future__ import annotations

import http.client
import socket
import subprocess
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
    # The files at their own paths too (what `repo add` names, so a static server serves the same).
    assert requests.get(url + "/plugins/crm/v1.0.0.zip", timeout=5).content == response.content
    assert requests.get(url + "/plugins/crm/v1.0.0.zip.minisig", timeout=5).content == b"pkgsig"


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
        "/plugins/crm/1.0.0.zip",
        "/plugins/crm/v1.0.0",
        "/plugins/crm/v1.0.0.tar",
        "/plugins/crm/v..%2F..%2Fsecret.txt.zip",
        "/plugins/../secret.txt",
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


# -- revalidation (issue 16: a listing revalidates the manifest instead of fetching it) --------


def test_files_carry_etag_and_last_modified(served: tuple[str, Path]) -> None:
    url, _ = served
    for path in ("/manifest.json", "/manifest.json.minisig", "/download/crm/1.0.0"):
        response = requests.get(url + path, timeout=5)
        assert response.headers["ETag"].startswith('"') and response.headers["ETag"].endswith('"')
        assert response.headers["Last-Modified"].endswith(" GMT")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_matching_if_none_match_gets_304_without_a_body(served: tuple[str, Path], method: str) -> None:
    url, _ = served
    etag = requests.get(url + "/manifest.json", timeout=5).headers["ETag"]
    response = requests.request(method, url + "/manifest.json", headers={"If-None-Match": etag}, timeout=5)
    assert response.status_code == 304 and response.content == b""
    assert response.headers["ETag"] == etag
    listed = requests.get(url + "/manifest.json", headers={"If-None-Match": f'"other", {etag}'}, timeout=5)
    assert listed.status_code == 304
    assert requests.get(url + "/manifest.json", headers={"If-None-Match": "*"}, timeout=5).status_code == 304


def test_changed_file_gets_200_and_a_new_etag(served: tuple[str, Path]) -> None:
    url, repo = served
    first = requests.get(url + "/manifest.json", timeout=5)
    (repo / "manifest.json").write_bytes(b'{"schema": 1, "version": 2}')
    again = requests.get(url + "/manifest.json", headers={"If-None-Match": first.headers["ETag"]}, timeout=5)
    assert again.status_code == 200 and again.content == b'{"schema": 1, "version": 2}'
    assert again.headers["ETag"] != first.headers["ETag"]


def test_if_modified_since_is_used_only_without_if_none_match(served: tuple[str, Path]) -> None:
    url, _ = served
    modified = requests.get(url + "/manifest.json", timeout=5).headers["Last-Modified"]
    assert requests.get(url + "/manifest.json", headers={"If-Modified-Since": modified}, timeout=5).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert requests.get(url + "/manifest.json", headers={"If-Modified-Since": old}, timeout=5).status_code == 200
    assert requests.get(url + "/manifest.json", headers={"If-Modified-Since": "yesterday"}, timeout=5).status_code == 200
    both = {"If-None-Match": '"stale"', "If-Modified-Since": modified}
    assert requests.get(url + "/manifest.json", headers=both, timeout=5).status_code == 200


# -- answering promptly (issue 16: backlog of 5, headers and body sent apart) -----------------


def test_listen_backlog_is_well_above_five(served: tuple[str, Path]) -> None:
    url, _ = served
    port = url.rsplit(":", 1)[1]
    listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    backlog = int(listing.split()[2])  # State Recv-Q Send-Q ...: a listener's Send-Q is its backlog
    assert backlog >= 128


def test_each_answer_arrives_whole_in_one_read_on_a_kept_alive_connection(served: tuple[str, Path]) -> None:
    url, _ = served
    host, port = url.removeprefix("http://").split(":")
    request = f"GET /manifest.json HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        for _ in range(20):
            conn.sendall(request)
            first_read = conn.recv(65536)
            head, _, body = first_read.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and body == b'{"schema": 1}', first_read
