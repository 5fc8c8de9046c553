"""The client against a misbehaving loopback server: each case recovers or is refused cleanly.

"Cleanly" means: the right error class (DownloadError exit 1, TrustError exit 3),
nothing in the download cache, and the recorded trust state unchanged.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from misbehaving_server import (
    BadRangeStart,
    Drop,
    Endless,
    Extra,
    IgnoreRange,
    MisbehavingServer,
    Redirect,
    Stall,
    Status,
    Wrong,
    build_plugin,
    make_key,
    manifest_bytes,
    publish_repo_folder,
    sign_bytes,
)

from atomicplug.config import Config
from atomicplug.errors import DownloadError, RepositoryUnreachableError, TrustError
from atomicplug.minisign import SecretKey
from atomicplug.intake import blob_path, signature_path_for
from atomicplug.repository import remote
from atomicplug.repository.fetcher import Fetcher, Timeouts
from atomicplug.repository.repo_admin import add_packages, init_repository

CRM = "/plugins/crm/v1.0.0.zip"
CORE = "/plugins/email_core/v1.0.0.zip"
FAST = Timeouts(connect=2.0, read=0.5, deadline=10.0, attempts=3, backoff=0.01, max_backoff=0.05)


@attrs.frozen
class Env:
    server: MisbehavingServer
    config: Config
    fetcher: Fetcher
    key: SecretKey
    other_key: SecretKey
    repo: Path
    tmp: Path

    def cache_files(self) -> list[str]:
        folder = self.config.downloads_dir
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def state(self) -> bytes | None:
        path = remote.state_path(self.config)
        return path.read_bytes() if path.exists() else None

    def entries(self) -> list[dict[str, object]]:
        return json.loads((self.repo / "manifest.json").read_bytes())["plugins"]

    def serve_manifest(self, data: bytes, key: SecretKey | None = None) -> None:
        self.server.put("/manifest.json", data)
        self.server.put("/manifest.json.minisig", sign_bytes(data, key or self.key, self.tmp).encode())


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    pub, key = make_key(tmp_path / "keys", "repo")
    _, other = make_key(tmp_path / "keys", "other")
    repo = tmp_path / "repo"
    init_repository(repo, key)
    packages = [
        build_plugin(tmp_path / "pkgs", key, "email_core", "1.0.0", filler=200_000),
        build_plugin(tmp_path / "pkgs", key, "crm", "1.0.0", requires=["email_core>=1.0"], filler=300_000),
    ]
    add_packages(repo, packages, key)
    with MisbehavingServer() as server:
        publish_repo_folder(server, repo)
        config = Config.for_directory(tmp_path / "site", repository=server.url, trusted_keys=[str(pub)], download_timeout=10)
        yield Env(server, config, Fetcher(server.url, FAST), key, other, repo, tmp_path)


def _crm_entry(env: Env):  # noqa: ANN202
    manifest = remote.load_manifest(env.config, fetcher=env.fetcher)
    entry = manifest.find("crm", "1.0.0")
    assert entry is not None
    return entry


# -- the happy path -----------------------------------------------------------------


def test_plan_remote_fetches_dependencies_first_and_caches(env: Env) -> None:
    fetched = remote.plan_remote(env.config, ["crm"], {}, fetcher=env.fetcher)
    assert [(f.metadata.id, f.metadata.version) for f in fetched] == [("email_core", "1.0.0"), ("crm", "1.0.0")]
    for f in fetched:
        blob = blob_path(env.config, f.sha256)
        assert blob.read_bytes() == (env.repo / "plugins" / f.metadata.id / "v1.0.0.zip").read_bytes()
        assert signature_path_for(blob).is_file()
    state = json.loads(env.state() or b"{}")
    assert state["repositories"][env.server.url]["version"] == 2


def test_cached_package_is_not_downloaded_again(env: Env) -> None:
    entry = _crm_entry(env)
    remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert len(env.server.requests_for(CRM)) == 1


def test_damaged_cache_entry_is_downloaded_again(env: Env) -> None:
    entry = _crm_entry(env)
    first = remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    blob = blob_path(env.config, first.sha256)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF  # same size, other bytes
    blob.write_bytes(bytes(data))
    again = remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert blob_path(env.config, again.sha256).read_bytes() == (env.repo / "plugins" / "crm" / "v1.0.0.zip").read_bytes()
    assert len(env.server.requests_for(CRM)) == 2


# -- recoverable misbehaviour ---------------------------------------------------------


def test_dropped_connection_resumes_with_range(env: Env) -> None:
    entry = _crm_entry(env)
    env.server.queue(CRM, Drop(after=70_000))
    fetched = remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert blob_path(env.config, fetched.sha256).stat().st_size == entry.size
    first, resumed = env.server.requests_for(CRM)
    assert first is None and resumed is not None
    start = int(resumed.removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 70_000  # resumed from what had arrived, not from scratch


def test_500_then_200_is_retried(env: Env) -> None:
    entry = _crm_entry(env)
    env.server.queue(CRM, Status(500), Status(503))
    remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert len(env.server.requests_for(CRM)) == 3


def test_manifest_500_then_200_is_retried(env: Env) -> None:
    env.server.queue("/manifest.json", Status(502))
    assert remote.load_manifest(env.config, fetcher=env.fetcher).version == 2


def test_stall_once_then_resume(env: Env) -> None:
    entry = _crm_entry(env)
    env.server.queue(CRM, Stall(seconds=2.0, after=50_000))
    fetched = remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert blob_path(env.config, fetched.sha256).stat().st_size == entry.size
    assert (env.server.requests_for(CRM)[1] or "").startswith("bytes=")


def test_server_ignoring_range_is_read_from_the_start(env: Env) -> None:
    entry = _crm_entry(env)
    env.server.queue(CRM, Drop(after=30_000), IgnoreRange())
    fetched = remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert blob_path(env.config, fetched.sha256).read_bytes() == (env.repo / "plugins" / "crm" / "v1.0.0.zip").read_bytes()


def test_206_with_wrong_start_is_not_spliced(env: Env) -> None:
    entry = _crm_entry(env)
    env.server.queue(CRM, Drop(after=30_000), BadRangeStart())
    fetched = remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert blob_path(env.config, fetched.sha256).read_bytes() == (env.repo / "plugins" / "crm" / "v1.0.0.zip").read_bytes()
    assert len(env.server.requests_for(CRM)) == 3


# -- refusals: network ------------------------------------------------------------------


def test_persistent_500_is_download_error(env: Env) -> None:
    entry = _crm_entry(env)
    env.server.always(CRM, Status(500))
    with pytest.raises(DownloadError, match="after 3 attempts") as info:
        remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert info.value.exit_code == 1
    assert env.cache_files() == []


def test_persistent_stall_is_download_error(env: Env) -> None:
    entry = _crm_entry(env)
    env.server.always(CRM, Stall(seconds=3.0, after=10))
    with pytest.raises(DownloadError):
        remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert env.cache_files() == []


def test_total_deadline_bounds_retries(env: Env) -> None:
    entry = _crm_entry(env)
    env.server.always(CRM, Stall(seconds=3.0, after=10))
    slow = Fetcher(env.server.url, attrs.evolve(FAST, read=0.4, deadline=0.6, attempts=10))
    with pytest.raises(DownloadError, match="deadline"):
        remote.fetch_package(env.config, entry, fetcher=slow)
    assert env.cache_files() == []


def test_missing_package_is_download_error(env: Env) -> None:
    entry = _crm_entry(env)
    del env.server.files[CRM]
    with pytest.raises(DownloadError, match="404"):
        remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert env.cache_files() == []


@pytest.mark.parametrize("endless", [False, True])
def test_a_redirect_is_refused_not_followed(env: Env, endless: bool) -> None:
    """Found from outside: requests followed any redirect (another origin, 30 hops of a loop, each
    retried, reported as 'cannot connect'), and read a redirect's whole body first: an endless one
    took the memory. A redirect is refused in one line, without retries, its body never read."""
    entry = _crm_entry(env)
    elsewhere = env.server.url + "/elsewhere/crm.zip"
    env.server.always(CRM, Redirect(elsewhere, endless=endless))
    with pytest.raises(DownloadError, match=f"redirects \\(HTTP 302 to {elsewhere}\\); atomicplug does not follow redirects") as info:
        remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert not isinstance(info.value, RepositoryUnreachableError)
    assert len(env.server.requests_for(CRM)) == 1 and not env.server.requests_for("/elsewhere/crm.zip")
    assert env.cache_files() == []


def test_unreachable_repository_is_download_error(env: Env) -> None:
    dead = Fetcher("http://127.0.0.1:9", FAST)
    with pytest.raises(DownloadError):
        remote.load_manifest(env.config, fetcher=dead)
    assert env.state() is None


# -- refusals: integrity (exit 3) -------------------------------------------------------


@pytest.mark.parametrize("fault", [Extra(5000, announce=True), Extra(5000, announce=False), Endless()])
def test_more_bytes_than_the_manifest_size_is_refused(env: Env, fault: object) -> None:
    entry = _crm_entry(env)
    env.server.always(CRM, fault)  # type: ignore[arg-type]
    with pytest.raises(TrustError, match="more than|announces") as info:
        remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert info.value.exit_code == 3
    assert env.cache_files() == []
    assert len(env.server.requests_for(CRM)) == 1  # an attack is not retried


def test_endless_manifest_is_refused(env: Env) -> None:
    env.server.always("/manifest.json", Endless())
    with pytest.raises(TrustError, match="more than the 100000 bytes"):
        env.fetcher.fetch_bytes("/manifest.json", 100_000)


def test_wrong_bytes_are_refused_as_mix_and_match(env: Env) -> None:
    entry = _crm_entry(env)
    env.server.always(CRM, Wrong())
    with pytest.raises(TrustError, match="mix-and-match"):
        remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert env.cache_files() == []


def test_package_from_another_entry_is_refused(env: Env) -> None:
    entry = _crm_entry(env)
    env.server.put(CRM, env.server.files[CORE])  # same server, wrong package
    with pytest.raises(TrustError, match="announces"):
        remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert env.cache_files() == []


def test_package_signed_by_untrusted_key_is_refused(env: Env) -> None:
    entry = _crm_entry(env)
    zip_path = env.repo / "plugins" / "crm" / "v1.0.0.zip"
    from atomicplug.minisign import sign_file

    env.server.put(CRM + ".minisig", sign_file(zip_path, env.other_key).encode())
    with pytest.raises(TrustError, match="signature"):
        remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert env.cache_files() == []


def test_unsigned_package_is_refused_unless_allowed(env: Env) -> None:
    entry = _crm_entry(env)
    del env.server.files[CRM + ".minisig"]
    with pytest.raises(TrustError, match="no signature"):
        remote.fetch_package(env.config, entry, fetcher=env.fetcher)
    assert env.cache_files() == []
    lenient = attrs.evolve(env.config, allow_unsigned=True)
    fetched = remote.fetch_package(lenient, entry, fetcher=env.fetcher)
    assert fetched.signed_by is None and blob_path(env.config, fetched.sha256).is_file()


# -- refusals: manifest trust ---------------------------------------------------------


def test_manifest_signed_by_another_key_is_refused(env: Env) -> None:
    env.serve_manifest(manifest_bytes(env.entries(), version=9), key=env.other_key)
    with pytest.raises(TrustError, match="signature"):
        remote.load_manifest(env.config, fetcher=env.fetcher)
    assert env.state() is None


def test_tampered_manifest_is_refused(env: Env) -> None:
    data = env.server.files["/manifest.json"]
    env.server.put("/manifest.json", data.replace(b'"size": ', b'"size": 1'))
    with pytest.raises(TrustError):
        remote.load_manifest(env.config, fetcher=env.fetcher)
    assert env.state() is None


def test_unsigned_manifest_is_refused(env: Env) -> None:
    del env.server.files["/manifest.json.minisig"]
    with pytest.raises(TrustError, match="unsigned"):
        remote.load_manifest(env.config, fetcher=env.fetcher)


def test_expired_manifest_is_refused_as_freeze_attack(env: Env) -> None:
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    env.serve_manifest(manifest_bytes(env.entries(), version=5, expires=past))
    with pytest.raises(TrustError, match="freeze attack"):
        remote.load_manifest(env.config, fetcher=env.fetcher)
    assert env.state() is None


def test_older_manifest_is_refused_as_rollback_attack(env: Env) -> None:
    env.serve_manifest(manifest_bytes(env.entries(), version=7))
    assert remote.load_manifest(env.config, fetcher=env.fetcher).version == 7
    recorded = env.state()
    env.serve_manifest(manifest_bytes(env.entries(), version=6))
    with pytest.raises(TrustError, match="rollback attack"):
        remote.load_manifest(env.config, fetcher=env.fetcher)
    assert env.state() == recorded
    # The same or a newer version is fine again.
    env.serve_manifest(manifest_bytes(env.entries(), version=8))
    assert remote.load_manifest(env.config, fetcher=env.fetcher).version == 8


def test_same_version_with_other_content_is_refused(env: Env) -> None:
    env.serve_manifest(manifest_bytes(env.entries(), version=7))
    remote.load_manifest(env.config, fetcher=env.fetcher)
    env.serve_manifest(manifest_bytes(env.entries()[:1], version=7))
    with pytest.raises(TrustError, match="different content"):
        remote.load_manifest(env.config, fetcher=env.fetcher)


def test_manifest_with_path_like_sha256_is_refused(env: Env) -> None:
    entries = env.entries()
    entries[0]["sha256"] = "../../etc/passwd"
    env.serve_manifest(manifest_bytes(entries, version=9))
    with pytest.raises(TrustError, match="sha256"):
        remote.load_manifest(env.config, fetcher=env.fetcher)


def test_no_trusted_keys_is_refused(env: Env) -> None:
    with pytest.raises(TrustError, match="no trusted_keys"):
        remote.load_manifest(attrs.evolve(env.config, trusted_keys=()), fetcher=env.fetcher)


# -- progress bar -------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_only_on_a_terminal(env: Env, tty: bool, tmp_path: Path) -> None:
    entry = _crm_entry(env)
    stream = _Terminal(tty)
    fetcher = Fetcher(env.server.url, FAST, progress_stream=stream)
    fetcher.download(entry.download_url, tmp_path / "out.zip", entry.size, label="crm 1.0.0")
    if tty:
        assert "crm 1.0.0" in stream.getvalue() and "100%" in stream.getvalue()
    else:
        assert stream.getvalue() == ""


# -- progress callback (issue 16: the marketplace shows download bytes) --------------------


def test_progress_callback_gets_bytes_received_and_total_across_a_resume(env: Env, tmp_path: Path) -> None:
    entry = _crm_entry(env)
    seen: list[tuple[int, int]] = []
    fetcher = Fetcher(env.server.url, FAST, progress=lambda done, total: seen.append((done, total)))
    env.server.queue(CRM, Drop(after=70_000))
    fetcher.download(entry.download_url, tmp_path / "out.zip", entry.size)
    assert seen[-1] == (entry.size, entry.size)
    assert {total for _, total in seen} == {entry.size}
    received = [done for done, _ in seen]
    assert received == sorted(received) and len(received) > 2  # resumed from the offset, not from 0


def test_progress_callback_per_call_replaces_the_fetchers(env: Env, tmp_path: Path) -> None:
    entry = _crm_entry(env)
    default: list[int] = []
    mine: list[int] = []
    fetcher = Fetcher(env.server.url, FAST, progress=lambda done, total: default.append(done))
    fetcher.download(entry.download_url, tmp_path / "out.zip", entry.size, progress=lambda done, total: mine.append(done))
    assert mine[-1] == entry.size and default == []
    fetcher.fetch_bytes("/manifest.json", 1 << 20)  # small files report nothing
    assert default == []
