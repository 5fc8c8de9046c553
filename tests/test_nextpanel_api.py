"""The NextPanel example backend: marketplace over HTTP, real packages, repository and SQLite home."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import filelock
import httpx
import pytest
from conftest import Home
from fastapi.testclient import TestClient
from test_loader import forget_addons, router_backend  # noqa: F401 - autouse fixture shared with the loader tests

from atomicplug.repository.repo_admin import add_packages, init_repository, package_path
from atomicplug.repository.server import make_server
from atomicplug.testing import KeyPair, PluginSpec, build_package, table_names

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `examples` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from examples.nextpanel.app import create_app

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTACTS = {"0001_contacts": ("CREATE TABLE crm_contacts (id INTEGER PRIMARY KEY);", "DROP TABLE crm_contacts;")}
MARKET = "/api/v1/marketplace"


@attrs.frozen
class Site:
    home: Home
    repo: Path
    served: _Served

    def client(self) -> TestClient:
        """A client whose `with` block runs the app's startup (recovery + loading)."""
        return TestClient(create_app(self.home.config_path, TOKEN, lock_timeout=0.5), headers=AUTH)

    def installed(self) -> dict[str, tuple[str, bool]]:
        return {p["id"]: (p["version"], p["enabled"]) for p in self.home.installer.list()}


def _crm(version: str) -> PluginSpec:
    return PluginSpec(id="crm", version=version, migrations=CONTACTS, files=router_backend("crm", version))


class _Served:
    """The repository on loopback; ``stop()`` takes it down mid-test (a repository that went away)."""

    def __init__(self, repo: Path) -> None:
        self.server = make_server(repo, "127.0.0.1", 0, quiet=True)
        self.url = self.server.url
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.server.shutdown()
            self.server.server_close()


BOT_SETTINGS = {
    "properties": {
        "api_key": {"type": "string", "title": "API key", "secret": True},
        "model": {"type": "string", "enum": ["small", "large"], "default": "small"},
    },
    "required": ["api_key"],
}
#: A backend that keeps what the loader hands its configure() and says it (the key only as set or not).
BOT_BACKEND = {
    "backend/__init__.py": (
        "from fastapi import APIRouter\n"
        "SETTINGS = {}\n"
        "def configure(settings):\n"
        "    SETTINGS.clear()\n"
        "    SETTINGS.update(settings)\n"
        'router = APIRouter(prefix="/api/v1/bot")\n'
        '@router.get("/settings")\n'
        "def seen() -> dict:\n"
        '    return {"key_set": bool(SETTINGS.get("api_key")), "key_length": len(SETTINGS.get("api_key", "")), "model": SETTINGS.get("model")}\n'
    ),
}

README = (
    "# Reports\n\nMonthly **reports**.\n\n<script>alert('x')</script>\n\n"
    "[safe](https://example.org/docs) [evil](javascript:alert(1))\n"
)


@pytest.fixture
def site(tmp_path: Path, publisher: KeyPair, home_factory: Callable[..., Home]) -> Iterator[Site]:
    """crm 1.0.0 + 2.0.0 (routes and a table), quiet 1.0.0 and broken 1.0.0 in a served, signed repository."""
    repo = tmp_path / "repo"
    init_repository(repo, publisher.secret)
    specs = [
        _crm("1.0.0"),
        _crm("2.0.0"),
        PluginSpec(id="quiet"),
        PluginSpec(id="broken", files={"backend/__init__.py": "import does_not_exist\n"}),
        PluginSpec(
            id="reports",
            requires=("crm>=1.0",),
            permissions=("api.routes", "network.outbound"),
            files={"README.md": README, "CHANGELOG.md": "## 1.0.0\n\n* first\n"},
            metadata_extra={"name": "Reports", "description": "Monthly reports", "category": "analytics", "price": 9.5},
        ),
        PluginSpec(id="bot", files=BOT_BACKEND, metadata_extra={"name": "Bot", "settings": BOT_SETTINGS}),
    ]
    add_packages(repo, [build_package(s, tmp_path / "pkgs", publisher.secret) for s in specs], publisher.secret)
    served = _Served(repo)
    try:
        yield Site(home=home_factory(repository=served.url, download_timeout=3), repo=repo, served=served)
    finally:
        served.stop()


def _install(client: TestClient, addon_id: str, version: str | None = None) -> dict[str, Any]:
    response = client.post(f"{MARKET}/install-remote", json={"addon_id": addon_id, **({"version": version} if version else {})})
    assert response.status_code == 200, response.text
    return response.json()


def _paths(client: TestClient) -> set[str]:
    return set(client.get("/openapi.json").json()["paths"])


def test_marketplace_needs_the_admin_token(site: Site) -> None:
    with site.client() as client:
        bare = {"Authorization": ""}
        missing = client.get(f"{MARKET}/plugins", headers=bare)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        assert client.get(f"{MARKET}/plugins", headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert client.get(f"{MARKET}/plugins", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        refused = client.post(f"{MARKET}/install-remote", json={"addon_id": "crm"}, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 403
        assert client.get("/api/v1/health", headers=bare).json() == {"status": "ok", "addons": {"loaded": [], "failed": []}}
    assert site.installed() == {}


def test_catalogue_lists_repository_versions_with_installed_state(site: Site) -> None:
    with site.client() as client:
        _install(client, "crm", "1.0.0")
        listing = client.get(f"{MARKET}/plugins").json()
    cards = {c["id"]: c for c in listing["plugins"]}
    assert listing["repository"]["state"] == "ok" and listing["repository"]["plugin_count"] == 5
    assert listing["updates"] == 1 and listing["categories"] == ["analytics", "testing"]
    assert sorted(cards) == ["bot", "broken", "crm", "quiet", "reports"]
    crm = cards["crm"]
    assert (crm["latest_version"], crm["versions"], crm["installed_version"]) == ("2.0.0", ["1.0.0", "2.0.0"], "1.0.0")
    assert crm["enabled"] and crm["update_available"] and crm["load_error"] is None
    assert cards["quiet"]["installed_version"] is None and not cards["quiet"]["enabled"]


def test_catalogue_without_repository_lists_installed_plugins(home: Home) -> None:
    home.installer.install_file(home.package("quiet"))
    with TestClient(create_app(home.config_path, TOKEN), headers=AUTH) as client:
        listing = client.get(f"{MARKET}/plugins").json()
    assert listing["repository"] == {"url": None, "state": "none", "checked_at": None, "plugin_count": 0, "error": None}
    assert [(c["id"], c["installed_version"], c["latest_version"]) for c in listing["plugins"]] == [("quiet", "1.0.0", None)]


def test_install_remote_mounts_the_addon_route_and_openapi_follows(site: Site) -> None:
    with site.client() as client:
        assert client.get("/api/v1/crm/ping").status_code == 404
        body = _install(client, "crm")
        assert body["status"] == "done" and body["changes"] == ["install crm 2.0.0"]
        assert body["plugin"]["version"] == "2.0.0" and body["load_error"] is None
        assert client.get("/api/v1/crm/ping").json() == {"plugin": "crm", "version": "2.0.0"}
        assert "/api/v1/crm/ping" in _paths(client)
        operation = client.get(f"{MARKET}/operations/{body['id']}").json()
        assert operation["status"] == "done" and operation["plugin_id"] == "crm" and operation["kind"] == "install"
        assert any("health check" in m for m in operation["messages"])
        assert "Checking that crm starts" in operation["stages"] and "Updating the database (all changes or none)" in operation["stages"]
        assert client.get(f"{MARKET}/operations").json()["current"] is None
    assert site.installed() == {"crm": ("2.0.0", True)}
    assert table_names(site.home.config.database_url) == {"crm_contacts"}


def test_upgrade_then_rollback_switch_the_served_code(site: Site) -> None:
    with site.client() as client:
        _install(client, "crm", "1.0.0")
        assert client.get("/api/v1/crm/ping").json()["version"] == "1.0.0"
        upgraded = _install(client, "crm")  # installed, no version: upgrade to the newest
        assert upgraded["changes"] == ["upgrade crm 1.0.0 -> 2.0.0"]
        assert client.get("/api/v1/crm/ping").json()["version"] == "2.0.0"
        assert _install(client, "crm")["changed"] is False  # already the newest
        rolled = client.post(f"{MARKET}/crm/rollback")
        assert rolled.status_code == 200 and rolled.json()["plugin"]["version"] == "1.0.0"
        assert client.get("/api/v1/crm/ping").json()["version"] == "1.0.0"


def test_uninstall_removes_route_openapi_entry_and_tables(site: Site) -> None:
    with site.client() as client:
        _install(client, "crm")
        response = client.post(f"{MARKET}/crm/uninstall")
        assert response.status_code == 200 and response.json()["changes"] == ["uninstall crm 2.0.0"]
        assert client.get("/api/v1/crm/ping").status_code == 404
        assert "/api/v1/crm/ping" not in _paths(client)
    assert site.installed() == {}
    assert table_names(site.home.config.database_url) == set()


def test_uninstall_keep_data_keeps_tables(site: Site) -> None:
    with site.client() as client:
        _install(client, "crm")
        assert client.post(f"{MARKET}/crm/uninstall", json={"keep_data": True}).status_code == 200
    assert table_names(site.home.config.database_url) == {"crm_contacts"}


def test_disable_and_enable_unmount_and_mount(site: Site) -> None:
    with site.client() as client:
        _install(client, "crm")
        assert client.post(f"{MARKET}/crm/disable").status_code == 200
        assert client.get("/api/v1/crm/ping").status_code == 404
        assert "/api/v1/crm/ping" not in _paths(client)
        assert site.installed() == {"crm": ("2.0.0", False)}
        assert client.post(f"{MARKET}/crm/enable").status_code == 200
        assert client.get("/api/v1/crm/ping").status_code == 200
        assert "/api/v1/crm/ping" in _paths(client)


def test_busy_lock_is_409_and_nothing_changes(site: Site) -> None:
    with site.client() as client, filelock.FileLock(str(site.home.config.lock_path)):
        response = client.post(f"{MARKET}/install-remote", json={"addon_id": "crm"})
        assert response.status_code == 409
        body = response.json()
        assert body["exit_code"] == 75 and body["title"] == "Another operation is running" and response.headers["Retry-After"] == "2"
        assert body["retry_after"] == 2 and "holds" in body["raw"]
        operation = client.get(f"{MARKET}/operations/{body['operation_id']}").json()
        assert operation["status"] == "failed" and operation["error"]["exit_code"] == 75
        history = client.get(f"{MARKET}/history").json()["history"]
        assert [(h["operation"], h["outcome"], h["plugins"][0]["id"]) for h in history] == [("install", "busy", "crm")]
    assert site.installed() == {}


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", f"{MARKET}/install-remote", {"addon_id": "Bad-Id"}),
        ("post", f"{MARKET}/install-remote", {"addon_id": "crm", "version": "1.0; rm -rf /"}),
        ("post", f"{MARKET}/install-remote", {"addon_id": "crm", "version": "abc"}),  # PEP 440's characters, no version
        ("post", f"{MARKET}/preview", {"operation": "install", "addon_id": "crm", "version": "1..0"}),
        ("get", f"{MARKET}/plugins/crm?version=abc", None),
        ("post", f"{MARKET}/install-remote", {"addon_id": "crm", "surprise": 1}),
        ("post", f"{MARKET}/install-remote", {}),
        ("post", f"{MARKET}/Not_Valid/enable", None),
        ("post", f"{MARKET}/crm/uninstall", {"keep_data": "maybe"}),
    ],
)
def test_bad_input_is_422(site: Site, method: str, path: str, payload: dict[str, Any] | None) -> None:
    with site.client() as client:
        response = client.get(path) if method == "get" else getattr(client, method)(path, json=payload)
        assert response.status_code == 422, response.text
    assert site.installed() == {}


def test_tampered_package_is_403_with_one_line_reason_and_nothing_changes(site: Site) -> None:
    target = package_path(site.repo, "crm", "2.0.0")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with site.client() as client:
        response = client.post(f"{MARKET}/install-remote", json={"addon_id": "crm"})
        assert response.status_code == 403
        body = response.json()
        assert body["exit_code"] == 3 and body["error"] == "TrustError" and "sha256" in body["raw"] and "\n" not in body["detail"]
        assert client.get("/api/v1/crm/ping").status_code == 404
    assert site.installed() == {}
    assert table_names(site.home.config.database_url) == set()


def test_refusals_are_400_with_the_reason(site: Site) -> None:
    with site.client() as client:
        missing = client.post(f"{MARKET}/nothing_here/enable")
        assert missing.status_code == 400
        assert {k: missing.json()[k] for k in ("title", "detail", "error", "exit_code")} == {
            "title": "Plugin not installed", "detail": "nothing_here is not installed", "error": "NotInstalledError", "exit_code": 1,
        }
        gate = client.post(f"{MARKET}/install-remote", json={"addon_id": "broken"})
        assert gate.status_code == 400
        assert gate.json()["raw"] == "broken 1.0.0: backend does not import: ModuleNotFoundError: No module named 'does_not_exist'"
        unknown = client.post(f"{MARKET}/install-remote", json={"addon_id": "crm", "version": "9.9.9"})
        assert unknown.status_code == 400 and unknown.json()["exit_code"] == 1
        assert client.post(f"{MARKET}/quiet/rollback").status_code == 400
    assert site.installed() == {}


def test_history_lists_operations_newest_first(site: Site) -> None:
    with site.client() as client:
        _install(client, "crm", "1.0.0")
        _install(client, "crm")
        client.post(f"{MARKET}/crm/disable")
        client.post(f"{MARKET}/install-remote", json={"addon_id": "broken"})
        history = client.get(f"{MARKET}/history").json()["history"]
    rows = [(h["operation"], h["outcome"], [(p["id"], p["from_version"], p["to_version"]) for p in h["plugins"]]) for h in history]
    assert rows == [
        ("install", "failed", [("broken", None, None)]),  # refused by the health gate: the transaction rolled back
        ("disable", "done", [("crm", "2.0.0", "2.0.0")]),
        ("upgrade", "done", [("crm", "1.0.0", "2.0.0")]),
        ("install", "done", [("crm", None, "1.0.0")]),
    ]
    assert all(h["who"] == "admin (testclient)" for h in history)
    assert history[0]["title"] == "Operation failed" and history[0]["txid"]  # the aborted transaction, not listed twice


def test_addon_failing_at_load_is_reported_and_skipped(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = PluginSpec(
        id="flaky",
        files={"backend/__init__.py": 'import os\nif os.environ.get("FLAKY_BREAK"):\n    raise RuntimeError("flaky needs its licence file")\n'},
    )
    site.home.installer.install_file(build_package(flaky, site.home.root / "pkgs", site.home.publisher.secret))
    with site.client() as client:
        _install(client, "crm")
    monkeypatch.setenv("FLAKY_BREAK", "1")  # the environment changed after installation
    with site.client() as client:
        assert client.get("/api/v1/health").json() == {"status": "degraded", "addons": {"loaded": ["crm"], "failed": ["flaky"]}}
        cards = {c["id"]: c for c in client.get(f"{MARKET}/plugins").json()["plugins"]}
        assert cards["flaky"]["load_error"] == "RuntimeError: flaky needs its licence file"
        assert client.get("/api/v1/crm/ping").status_code == 200


def test_create_app_without_token_is_a_config_error(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    from atomicplug.errors import ConfigError

    monkeypatch.delenv("NEXTPANEL_ADMIN_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="NEXTPANEL_ADMIN_TOKEN"):
        create_app(home.config_path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first_answer(server: subprocess.Popen[bytes], ask: Callable[[], httpx.Response]) -> httpx.Response:
    """``ask()``'s answer once the backend ``server`` listens (it must not exit first; 30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return ask()
        except httpx.TransportError:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "the backend exited"
            assert time.monotonic() < deadline, "the backend did not start within 30s"
            time.sleep(0.1)


def test_backend_serves_for_real_under_uvicorn(site: Site) -> None:
    site.home.installer.install_file(build_package(_crm("1.0.0"), site.home.root / "pkgs", site.home.publisher.secret))
    port = _free_port()
    env = dict(os.environ, ATOMICPLUG_CONFIG=str(site.home.config_path), NEXTPANEL_ADMIN_TOKEN=TOKEN)
    command = [sys.executable, "-m", "uvicorn", "examples.nextpanel.app:app", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        response = _first_answer(server, lambda: httpx.get(f"{base}{MARKET}/plugins", headers=AUTH, timeout=5))
        assert response.status_code == 200
        assert {c["id"]: c["installed_version"] for c in response.json()["plugins"]}["crm"] == "1.0.0"
        assert httpx.get(f"{base}/api/v1/crm/ping", timeout=5).json() == {"plugin": "crm", "version": "1.0.0"}
        # The quickstart's printed curl lines work when pasted into a shell (token and Content-Type included).
        from examples.quickstart import curl_line

        line = curl_line("POST", f"{base}{MARKET}/crm/disable", {}, TOKEN)
        pasted = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=60)
        assert pasted.returncode == 0 and json.loads(pasted.stdout)["plugin"]["enabled"] is False, pasted.stdout + pasted.stderr
        assert site.installed() == {"crm": ("1.0.0", False)}
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_config_given_to_the_backend_is_the_one_its_addons_use(home: Home, tmp_path: Path) -> None:
    """examples/nextpanel README: `python -m examples.nextpanel --config X`; the addons find the database
    through the same config, so a --config outside the working folder must reach them too."""
    from atomicplug.packing import pack

    chatbot = pack(ROOT / "examples" / "plugins" / "ai_chatbot" / "1.0.0", home.publisher.secret, tmp_path / "ai_chatbot-1.0.0.zip")
    home.installer.install_file(chatbot.zip_path)
    elsewhere = tmp_path / "elsewhere"  # no atomicplug.toml here, and no ATOMICPLUG_CONFIG
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ATOMICPLUG_CONFIG", "ATOMICPLUG_DATABASE_URL")}
    env.update(NEXTPANEL_ADMIN_TOKEN=TOKEN, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))
    port = _free_port()
    command = [sys.executable, "-m", "examples.nextpanel", "--port", str(port), "--config", str(home.config_path), "--no-access-log"]
    server = subprocess.Popen(command, cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        _first_answer(server, lambda: httpx.get(f"{base}/api/v1/health", timeout=5))
        created = httpx.post(f"{base}/api/v1/chat/sessions", json={"user_id": "u1"}, timeout=10)
        assert created.status_code == 201, created.text
        assert [s["user_id"] for s in httpx.get(f"{base}/api/v1/chat/sessions", timeout=10).json()] == ["u1"]
    finally:
        server.terminate()
        server.wait(timeout=10)


# -- issue 16: written for admins, recorded, usable without the repository ------------------------


def _history(client: TestClient) -> list[tuple[str, str, list[str]]]:
    return [(h["operation"], h["outcome"], [p["name"] for p in h["plugins"]]) for h in client.get(f"{MARKET}/history").json()["history"]]


def test_history_orders_the_panels_and_the_installers_entries_within_one_second(site: Site) -> None:
    """A change made in the panel a moment after one made outside it is listed first: both times have
    microseconds (the installer's had whole seconds, which sorted after every panel entry of that second)."""
    with site.client() as client:
        _install(client, "crm")
        site.home.installer.disable("crm")
        assert client.post(f"{MARKET}/crm/enable").status_code == 200
        history = client.get(f"{MARKET}/history").json()["history"]
        assert [(h["who"], h["operation"]) for h in history[:2]] == [("admin (testclient)", "enable"), ("outside the panel", "disable")], history
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", history[1]["time"]), history[1]


@pytest.mark.slow
def test_unreachable_repository_keeps_installed_facts_and_is_said_plainly(site: Site) -> None:
    with site.client() as client:
        _install(client, "reports")  # and crm, which it requires
        site.served.stop()
        listing = client.get(f"{MARKET}/plugins", params={"refresh": True}).json()
        repository = listing["repository"]
        assert repository["state"] == "unreachable" and repository["plugin_count"] == 0
        assert repository["error"]["title"] == "Repository unreachable"
        assert "HTTPConnectionPool" not in repository["error"]["detail"] and "did not answer" in repository["error"]["detail"]
        reports = {c["id"]: c for c in listing["plugins"]}["reports"]
        assert (reports["name"], reports["description"], reports["category"], reports["price"]) == ("Reports", "Monthly reports", "analytics", 9.5)
        assert sorted(c["id"] for c in listing["plugins"]) == ["crm", "reports"]
        refused = client.post(f"{MARKET}/install-remote", json={"addon_id": "quiet"})
        assert refused.status_code == 400 and refused.json()["title"] == "Repository unreachable"
        assert _history(client)[0] == ("install", "unreachable", ["quiet"])
    assert site.installed() == {"crm": ("2.0.0", True), "reports": ("1.0.0", True)}


def test_listing_uses_the_cached_manifest_not_a_fetch_per_request(site: Site) -> None:
    with site.client() as client:
        assert client.get(f"{MARKET}/plugins").json()["repository"]["state"] == "ok"
        site.served.stop()  # a fetch per request would now fail
        for _ in range(5):
            listing = client.get(f"{MARKET}/plugins").json()
            assert listing["repository"]["state"] == "ok" and len(listing["plugins"]) == 5


def test_uninstalling_a_required_plugin_offers_the_cascade_in_api_terms(site: Site) -> None:
    with site.client() as client:
        _install(client, "reports")
        refused = client.post(f"{MARKET}/crm/uninstall")
        body = refused.json()
        assert refused.status_code == 400 and body["option"] == "cascade" and body["plugins"] == ["reports"]
        assert body["title"] == "Plugin dependencies not met"
        assert body["detail"] == "Reports needs Crm. Uninstall them together (cascade: true) or uninstall them first."
        assert "--" not in body["detail"] and "--cascade" not in body["raw"]
        preview = client.post(f"{MARKET}/preview", json={"operation": "uninstall", "addon_id": "crm"}).json()
        assert [(c["id"], c["action"]) for c in preview["changes"]] == [("reports", "uninstall"), ("crm", "uninstall")]
        assert preview["needs_confirmation"] == ["cascade"] and preview["refusal"]["option"] == "cascade"
        assert client.post(f"{MARKET}/crm/uninstall", json={"cascade": True}).status_code == 200
        assert _history(client)[:2] == [("uninstall", "done", ["Crm", "Reports"]), ("uninstall", "refused", ["Crm"])]
    assert site.installed() == {}


def test_preview_names_the_dependencies_an_install_brings(site: Site) -> None:
    with site.client() as client:
        preview = client.post(f"{MARKET}/preview", json={"operation": "install", "addon_id": "reports"}).json()
        assert [(c["id"], c["action"], c["to_version"], c["reason"]) for c in preview["changes"]] == [
            ("crm", "install", "2.0.0", "required by Reports"),
            ("reports", "install", "1.0.0", "requested"),
        ]
        assert preview["refusal"] is None and preview["changes"][0]["migrations_up"] == ["0001_contacts"]
        assert preview["database"] == "Runs the migrations 0001_contacts. All in one transaction: all of it or none."
        assert client.post(f"{MARKET}/preview/database", json={"operation": "install"}).status_code == 404  # the stub is gone
    assert site.installed() == {}
    assert not (site.home.config.home / "repository_state.json").exists()  # a preview records no manifest


def test_preview_names_the_tables_an_uninstall_drops_or_keeps(site: Site) -> None:
    with site.client() as client:
        _install(client, "reports")
        preview = client.post(f"{MARKET}/preview", json={"operation": "uninstall", "addon_id": "crm", "cascade": True}).json()
        crm = {c["id"]: c for c in preview["changes"]}["crm"]
        assert (crm["migrations_down"], crm["tables_dropped"], crm["reason"]) == (["0001_contacts"], ["crm_contacts"], "requested")
        assert preview["database"].startswith("Drops the tables crm_contacts: the data in them is deleted.")
        kept = client.post(f"{MARKET}/preview", json={"operation": "uninstall", "addon_id": "crm", "cascade": True, "keep_data": True}).json()
        assert {c["id"]: c for c in kept["changes"]}["crm"]["tables_kept"] == ["crm_contacts"]
        assert kept["database"] == "Keeps the tables crm_contacts and their rows."
        disable = client.post(f"{MARKET}/preview", json={"operation": "disable", "addon_id": "reports"}).json()
        assert disable["database"] == "No database change: tables and data stay as they are."
        assert [(c["action"], c["from_version"]) for c in disable["changes"]] == [("disable", "1.0.0")]
    assert table_names(site.home.config.database_url) == {"crm_contacts"}


def test_settings_at_install_reach_the_backend_and_a_secret_is_never_shown(site: Site) -> None:
    with site.client() as client:
        preview = client.post(f"{MARKET}/preview", json={"operation": "install", "addon_id": "bot"}).json()
        assert [(f["name"], f["secret"], f["required"], f["default"]) for f in preview["settings"]] == [
            ("api_key", True, True, None), ("model", False, False, "small"),
        ]
        assert preview["refusal"]["title"] == "Settings not valid" and preview["refusal"]["fields"] == ["api_key"]
        refused = client.post(f"{MARKET}/install-remote", json={"addon_id": "bot", "settings": {"model": "huge"}})
        body = refused.json()
        assert refused.status_code == 400 and body["fields"] == ["api_key", "model"] and len(body["problems"]) == 2
        assert body["problems"][1] == "bot: setting 'model' expected one of 'small', 'large', got 'huge'"
        done = client.post(f"{MARKET}/install-remote", json={"addon_id": "bot", "settings": {"api_key": "sk-12345", "model": "large"}})
        assert done.status_code == 200, done.text
        assert client.get("/api/v1/bot/settings").json() == {"key_set": True, "key_length": 8, "model": "large"}
        form = client.get(f"{MARKET}/plugins/bot/settings").json()
        fields = {f["name"]: f for f in form["fields"]}
        assert (fields["api_key"]["is_set"], fields["api_key"]["value"], fields["model"]["value"]) == (True, None, "large")
        assert form["installed_by"] == "admin (testclient)"
        changed = client.put(f"{MARKET}/plugins/bot/settings", json={"settings": {"model": None, "api_key": "sk-rotated-key"}})
        assert changed.status_code == 200 and changed.json()["changes"] == ["configure bot: api_key, model"]
        assert client.get("/api/v1/bot/settings").json() == {"key_set": True, "key_length": 14, "model": "small"}
        assert _history(client)[0] == ("configure", "done", ["Bot"])
        history = client.get(f"{MARKET}/history").json()["history"]
        assert history[0]["detail"] == "Settings changed: api_key, model" and history[0]["who"] == "admin (testclient)"
        bad = client.put(f"{MARKET}/plugins/bot/settings", json={"settings": {"colour": "red"}})
        assert bad.status_code == 400 and bad.json()["fields"] == ["colour"]
        everything = "".join(client.get(path).text for path in (
            f"{MARKET}/plugins/bot/settings", f"{MARKET}/history", f"{MARKET}/operations", f"{MARKET}/plugins", f"{MARKET}/plugins/bot",
        ))
        assert "sk-12345" not in everything and "sk-rotated-key" not in everything
        assert {c["id"]: c for c in client.get(f"{MARKET}/plugins").json()["plugins"]}["bot"]["has_settings"] is True
    assert "sk-12345" not in (site.home.config.home / "nextpanel-audit.jsonl").read_text()


def test_a_rollback_gives_again_a_setting_the_undone_upgrade_dropped(site: Site) -> None:
    """bot 2.0.0 no longer declares api_key, so its upgrade dropped the key; rolling back to 1.0.0,
    which requires it, takes it in the request (as install-remote does), and says so when it is missing."""
    without_key = {"properties": {"model": BOT_SETTINGS["properties"]["model"]}}
    spec = PluginSpec(id="bot", version="2.0.0", files=BOT_BACKEND, metadata_extra={"name": "Bot", "settings": without_key})
    with site.client() as client:
        assert client.post(f"{MARKET}/install-remote", json={"addon_id": "bot", "settings": {"api_key": "sk-12345"}}).status_code == 200
        site.home.installer.install_file(build_package(spec, site.home.root / "pkgs", site.home.publisher.secret))
        refused = client.post(f"{MARKET}/bot/rollback")
        assert refused.status_code == 400 and refused.json()["fields"] == ["api_key"], refused.text
        asked = client.post(f"{MARKET}/preview", json={"operation": "rollback", "addon_id": "bot"}).json()
        assert asked["refusal"]["error"] == "SettingsError" and [f["name"] for f in asked["settings"]] == ["api_key"], asked  # the page's form: the missing one only
        preview = client.post(f"{MARKET}/preview", json={"operation": "rollback", "addon_id": "bot", "settings": {"api_key": "sk-67890"}})
        assert preview.status_code == 200 and preview.json()["refusal"] is None, preview.text
        back = client.post(f"{MARKET}/bot/rollback", json={"settings": {"api_key": "sk-67890"}})
        assert back.status_code == 200, back.text
        assert site.installed()["bot"] == ("1.0.0", True)
        assert client.get("/api/v1/bot/settings").json() == {"key_set": True, "key_length": 8, "model": "small"}


def test_an_operation_reports_its_stages_and_download_bytes_from_the_librarys_events(site: Site) -> None:
    with site.client() as client:
        client.get(f"{MARKET}/plugins")  # as the page does first: the names come from the listed manifest
        body = _install(client, "reports")
        downloads = {(d["plugin_id"], d["version"]): (d["received"], d["total"]) for d in body["downloads"]}
        assert set(downloads) == {("crm", "2.0.0"), ("reports", "1.0.0")} and all(r == t > 0 for r, t in downloads.values())
        assert body["stages"][:2] == ["Downloading Crm 2.0.0 (" + body["stages"][0].split("(")[1], "Checked Crm 2.0.0: the publisher's signature and checksum match"]
        assert "install crm 2.0.0" in body["messages"] and "" not in body["messages"]


def test_install_remote_of_an_installed_plugin_at_its_newest_version_repairs_a_damaged_tree(site: Site) -> None:
    """The panel's Install/Upgrade asks for the newest version; with nothing newer, a damaged tree is repaired from it."""
    with site.client() as client:
        _install(client, "crm")
        [tree] = (site.home.config.home / "store" / "crm").iterdir()
        damaged = tree / "backend" / "__init__.py"
        os.chmod(damaged, 0o644)
        damaged.write_text(damaged.read_text() + "# changed by hand\n")
        assert not site.home.installer.verify("crm")[0].ok
        preview = client.post(f"{MARKET}/preview", json={"operation": "install", "addon_id": "crm"}).json()
        assert (preview["changes"], preview["repairs"], preview["refusal"]) == ([], ["repair crm 2.0.0: 1 file damaged"], None)
        assert not site.home.installer.verify("crm")[0].ok  # the preview repaired nothing
        body = _install(client, "crm")
        assert body["changes"] == ["repair crm 2.0.0: 1 file"], body
        assert site.home.installer.verify("crm")[0].ok and site.installed()["crm"] == ("2.0.0", True)


def test_downgrade_needs_allow_downgrade(site: Site) -> None:
    with site.client() as client:
        _install(client, "crm")
        refused = client.post(f"{MARKET}/install-remote", json={"addon_id": "crm", "version": "1.0.0"})
        body = refused.json()
        assert refused.status_code == 400 and body["option"] == "allow_downgrade" and "allow_downgrade: true" in body["detail"]
        assert "--allow-downgrade" not in body["detail"] + body["raw"]
        done = client.post(f"{MARKET}/install-remote", json={"addon_id": "crm", "version": "1.0.0", "allow_downgrade": True})
        assert done.status_code == 200 and done.json()["kind"] == "downgrade" and done.json()["plugin"]["version"] == "1.0.0"
        assert client.get("/api/v1/crm/ping").json()["version"] == "1.0.0"


def test_after_a_rollback_the_card_offers_the_newer_version_once(site: Site) -> None:
    with site.client() as client:
        _install(client, "crm", "1.0.0")
        _install(client, "crm")
        assert client.post(f"{MARKET}/crm/rollback").status_code == 200
        crm = {c["id"]: c for c in client.get(f"{MARKET}/plugins").json()["plugins"]}["crm"]
    assert (crm["installed_version"], crm["previous_version"], crm["update_available"]) == ("1.0.0", "2.0.0", True)
    assert crm["rollback_version"] is None  # "Upgrade to 2.0.0" only, not also "Roll back to 2.0.0"


def test_detail_renders_readme_safely_with_permissions_versions_and_publisher(site: Site) -> None:
    with site.client() as client:
        offered = client.get(f"{MARKET}/plugins/reports").json()
        assert offered["source"] == "repository" and offered["version"] == "1.0.0"
        assert "<strong>reports</strong>" in offered["readme_html"]
        assert "<script>" not in offered["readme_html"] and "&lt;script&gt;" in offered["readme_html"]
        assert 'href="https://example.org/docs"' in offered["readme_html"] and "javascript:" not in offered["readme_html"].replace("[evil](javascript:", "")
        assert "<li>first</li>" in offered["changelog_html"]
        assert [p["text"] for p in offered["permissions"]] == ["Add API endpoints to the panel", "Connect to services on the internet"]
        assert offered["requires"] == ["crm>=1.0"] and offered["publisher_key_id"] == site.home.publisher.secret.key_id_hex
        _install(client, "reports")
        crm = client.get(f"{MARKET}/plugins/crm").json()
        assert crm["source"] == "installed" and crm["required_by"] == ["reports"]
        assert [(v["version"], v["installed"]) for v in crm["versions"]] == [("2.0.0", True), ("1.0.0", False)]
        assert crm["publisher_key_id"] == site.home.publisher.secret.key_id_hex
        assert client.get(f"{MARKET}/plugins/crm", params={"version": "9.9"}).status_code == 400


def test_search_category_and_update_all(site: Site) -> None:
    with site.client() as client:
        assert [c["id"] for c in client.get(f"{MARKET}/plugins", params={"q": "monthly"}).json()["plugins"]] == ["reports"]
        assert [c["id"] for c in client.get(f"{MARKET}/plugins", params={"category": "analytics"}).json()["plugins"]] == ["reports"]
        _install(client, "crm", "1.0.0")
        assert client.get(f"{MARKET}/plugins").json()["updates"] == 1
        done = client.post(f"{MARKET}/update-all")
        assert done.status_code == 200 and done.json()["changes"] == ["upgrade crm 1.0.0 -> 2.0.0"]
        assert client.get(f"{MARKET}/plugins").json()["updates"] == 0


def test_operations_queue_instead_of_answering_409(site: Site) -> None:
    with site.client() as client:
        first = client.post(f"{MARKET}/install-remote?wait=false", json={"addon_id": "crm"})
        second = client.post(f"{MARKET}/install-remote?wait=false", json={"addon_id": "quiet"})
        assert (first.status_code, second.status_code) == (202, 202)
        assert second.json()["status"] in ("queued", "running")
        deadline = time.monotonic() + 60
        # One read per look: two reads could see "nothing running" between the two operations
        # and then "nothing queued" once the second had started.
        while (overview := client.get(f"{MARKET}/operations").json())["current"] or overview["queued"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get(f"{MARKET}/operations/{second.json()['id']}").json()["status"] == "done"
    assert site.installed() == {"crm": ("2.0.0", True), "quiet": ("1.0.0", True)}


def test_tampered_manifest_is_refused_without_temporary_file_names(site: Site) -> None:
    manifest = site.repo / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"crm"', '"crm" ', 1))
    with site.client() as client:
        repository = client.get(f"{MARKET}/plugins").json()["repository"]
        assert repository["state"] == "untrusted" and repository["error"]["title"] == "Repository data not trusted"
        assert "/tmp" not in repository["error"]["raw"] and "atomicplug-verify" not in repository["error"]["raw"]
        assert "not signed by a trusted publisher key" in repository["error"]["detail"]


def test_every_route_documents_its_answers_and_docs_work_offline(site: Site) -> None:
    with site.client() as client:
        schema = client.get("/openapi.json").json()
        docs = client.get("/docs").text
        assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert "cdn" not in docs.lower() and "/static-offline-docs/swagger-ui-bundle.js" in docs
    for path, methods in schema["paths"].items():
        if not path.startswith(MARKET):
            continue
        for method, spec in methods.items():
            codes = set(spec["responses"])
            assert {"200", "401", "403", "422"} <= codes, (method, path, codes)
            if method == "post" and not path.startswith(f"{MARKET}/preview") and path != f"{MARKET}/reload":
                assert {"202", "400", "409"} <= codes, (method, path, codes)
                assert spec["responses"]["409"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
            assert "$ref" in str(spec["responses"]["200"]["content"]["application/json"]["schema"]) or path.endswith("/reload"), (method, path)


def test_the_hot_reads_answer_from_bytes_what_the_routes_answer(site: Site) -> None:
    from examples.nextpanel.fast_reads import FastReads

    app = create_app(site.home.config_path, TOKEN, lock_timeout=0.5)
    with TestClient(app, headers=AUTH) as client:
        _install(client, "crm", "1.0.0")
        fast = FastReads(None, app.state.panel, TOKEN)

        def answer(path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
            auth = [(b"authorization", f"Bearer {TOKEN}".encode())]
            found = fast._answer({"path": path, "query_string": query, "headers": auth if headers is None else headers})
            return json.loads(found) if found is not None else None

        # The routes' answers (refresh=false is a parameter the fast path leaves to the route).
        assert answer(f"{MARKET}/plugins") == client.get(f"{MARKET}/plugins", params={"refresh": False}).json()
        routed = client.get(f"{MARKET}/plugins", params={"q": "monthly", "category": "analytics", "refresh": False}).json()
        assert answer(f"{MARKET}/plugins", b"q=monthly&category=analytics") == routed and [c["id"] for c in routed["plugins"]] == ["reports"]
        assert answer(f"{MARKET}/operations") == client.get(f"{MARKET}/operations").json() and answer(f"{MARKET}/operations")["recent"]
        # Whatever the routes must judge goes on to them.
        for query in (b"q=" + b"x" * 101, b"q=a&q=b", b"refresh=true", b"limit=3"):
            assert answer(f"{MARKET}/plugins", query) is None
        for headers in ([], [(b"authorization", b"Bearer wrong")], [(b"authorization", f"Bearer {TOKEN}".encode())] * 2):
            assert answer(f"{MARKET}/plugins", headers=headers) is None
        assert client.get(f"{MARKET}/plugins", headers={"Authorization": ""}).status_code == 401
        assert client.get(f"{MARKET}/plugins", headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert client.get(f"{MARKET}/plugins", params={"q": "x" * 101}).status_code == 422
