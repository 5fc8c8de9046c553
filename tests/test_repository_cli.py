"""``atomicplug search`` and ``available`` against ``atomicplug serve``'s server over loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from misbehaving_server import build_plugin, make_key

from atomicplug.cli import main
from atomicplug.repository.repo_admin import add_packages, init_repository
from atomicplug.repository.server import make_server


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(config path, repository folder) with crm 1.0.0 + 1.1.0 and email_core 1.0.0 served."""
    pub, key = make_key(tmp_path / "keys", "repo")
    repo = tmp_path / "repo"
    init_repository(repo, key)
    pkgs = tmp_path / "pkgs"
    add_packages(
        repo,
        [
            build_plugin(pkgs, key, "email_core", "1.0.0"),
            build_plugin(pkgs, key, "crm", "1.0.0", requires=["email_core"]),
            build_plugin(pkgs, key, "crm", "1.1.0", requires=["email_core>=1.0"]),
        ],
        key,
    )
    server = make_server(repo, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    config = tmp_path / "site" / "atomicplug.toml"
    config.parent.mkdir()
    config.write_text(f'home = "state"\nrepository = "{server.url}"\ntrusted_keys = ["{pub}"]\ndownload_timeout = 10\n')
    try:
        yield config, repo
    finally:
        server.shutdown()
        server.server_close()


def test_available_lists_newest_versions_and_marks_installed(site: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = site
    state = config.parent / "state"
    state.mkdir()
    (state / "addon_registry.json").write_text(json.dumps({"plugins": {"crm": {"version": "1.0.0", "enabled": True}}}))
    assert main(["--config", str(config), "available"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("crm 1.1.0") and out[0].endswith("[installed 1.0.0]")
    assert out[1].startswith("email_core 1.0.0") and "installed" not in out[1]
    assert main(["--config", str(config), "available", "--all-versions", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["version"], r["installed"]) for r in rows] == [
        ("crm", "1.0.0", "1.0.0"),
        ("crm", "1.1.0", "1.0.0"),
        ("email_core", "1.0.0", None),
    ]


def test_search_matches_id_name_and_description(site: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, _ = site
    assert main(["--config", str(config), "search", "EMAIL"]) == 0
    out = capsys.readouterr().out
    assert "email_core 1.0.0" in out and "crm" not in out
    assert main(["--config", str(config), "search", "no-such-thing"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no plugin matches" in captured.err


def test_search_refuses_tampered_repository_with_exit_3(site: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, repo = site
    manifest = repo / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"crm", b"crx"))
    assert main(["--config", str(config), "search", "crm"]) == 3
    assert "signature" in capsys.readouterr().err


def test_available_without_repository_is_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "atomicplug.toml"
    config.write_text('home = "state"\n')
    assert main(["--config", str(config), "available"]) == 2
    assert "no repository configured" in capsys.readouterr().err


def test_a_repository_folder_served_by_a_plain_static_web_server_installs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/design.md "Repository": a static folder any web server or CDN can serve. Python's own
    file server knows nothing of atomicplug: every URL the manifest names must be a file of the folder."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from atomicplug.registry import Registry
    from atomicplug.testing import make_home

    pub, key = make_key(tmp_path / "keys", "repo")
    repo = tmp_path / "repo"
    init_repository(repo, key)
    pkgs = tmp_path / "pkgs"
    add_packages(repo, [build_plugin(pkgs, key, "email_core", "1.0.0"), build_plugin(pkgs, key, "crm", "1.0.0", requires=["email_core"])], key)
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(repo)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        config = make_home(tmp_path / "site", [pub], repository=f"http://127.0.0.1:{server.server_address[1]}", download_timeout=10)
        assert main(["--config", str(config), "install", "crm"]) == 0, capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
    state = Registry.load(tmp_path / "site" / "state" / "addon_registry.json")
    assert {pid: p.version for pid, p in state.plugins.items()} == {"crm": "1.0.0", "email_core": "1.0.0"}
