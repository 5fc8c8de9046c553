"""The marketplace page (issue 9) in a real headless Chromium against the real backend.

Everything is real: the NextPanel backend runs under uvicorn in a subprocess
on a loopback port with an SQLite home; the repository is a signed folder
served on loopback holding the example plugins of examples/plugins/ packed
and signed with a fresh key, except that sms_notifications 1.1.0's zip was
altered after signing (same size, different bytes: its sha256 no longer
matches the signed manifest). The page is driven through selenium like an
admin would, and a screenshot of each state is saved under
test-artifacts/marketplace/NN-<state>.png.

Skipped only when chromium, chromedriver or selenium is missing and ``CI`` is
not ``"true"``; in CI that is a failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import filelock
import httpx
import pytest
from browser import chrome, require_browser, wait_until

from atomicplug.config import Config
from atomicplug.packing import pack
from atomicplug.repository.repo_admin import package_path
from atomicplug.testing import (
    build_repository,
    make_home,
    make_keypair,
    served_repository,
    table_names,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "plugins"
ARTIFACTS = ROOT / "test-artifacts" / "marketplace"
TOKEN = "browser-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARKET = "/api/v1/marketplace"
TAMPERED = ("sms_notifications", "1.1.0")
CHAT_TABLES = {"chat_sessions", "chat_messages"}

@attrs.frozen
class Backend:
    url: str
    config: Config
    log: Path

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, headers=AUTH, **kwargs)

    def installed(self) -> dict[str, tuple[str, bool]]:
        listing = self.get(f"{MARKET}/plugins", headers=AUTH).json()["plugins"]
        return {p["id"]: (p["installed_version"], p["enabled"]) for p in listing if p["installed_version"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tamper(zip_path: Path) -> None:
    """Flip bytes in the middle of a signed zip: same size, so only the sha256 and signature can tell."""
    data = bytearray(zip_path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 16):
        data[i] ^= 0xFF
    zip_path.write_bytes(bytes(data))


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    """The example repository (one package tampered with) served on loopback, and the backend under uvicorn."""
    require_browser()  # before building anything
    key = make_keypair(tmp_path / "keys")
    packages = []
    for plugin in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        for version in sorted(v for v in plugin.iterdir() if v.is_dir()):
            out = tmp_path / "packages" / f"{plugin.name}-{version.name}.zip"
            out.parent.mkdir(parents=True, exist_ok=True)
            packages.append(pack(version, key.secret, out).zip_path)
    repo = build_repository(tmp_path / "repo", packages, key.secret)
    manifest = json.loads((repo / "manifest.json").read_text())
    entry = next(e for e in manifest["plugins"] if (e["id"], e["version"]) == TAMPERED)
    tampered = package_path(repo, *TAMPERED)
    _tamper(tampered)
    assert tampered.stat().st_size == entry["size"]

    with served_repository(repo) as repo_url:
        config_path = make_home(tmp_path / "site", [key.public_path], repository=repo_url, download_timeout=20)
        port = _free_port()
        log = tmp_path / "uvicorn.log"
        env = dict(os.environ, ATOMICPLUG_CONFIG=str(config_path), NEXTPANEL_ADMIN_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
        env.pop("ATOMICPLUG_DATABASE_URL", None)
        command = [sys.executable, "-m", "examples.nextpanel", "--host", "127.0.0.1", "--port", str(port), "--config", str(config_path)]
        with open(log, "wb") as log_file:
            server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, f"the backend exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"the backend did not start within 30s:\n{log.read_text()}"
                time.sleep(0.1)
            yield Backend(url=url, config=Config.load(config_path), log=log)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


@pytest.fixture
def shots() -> Any:
    """``shot(driver, "state")`` saves test-artifacts/marketplace/NN-state.png (the folder is emptied first)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    counter = iter(range(1, 100))

    def shot(driver: Any, state: str) -> Path:
        path = ARTIFACTS / f"{next(counter):02d}-{state}.png"
        # The whole page, not only the viewport: grow the window to the document's height first.
        height, chrome_height = driver.execute_script(
            "return [Math.max(document.documentElement.scrollHeight, document.body.scrollHeight),"
            " window.outerHeight - window.innerHeight]"
        )
        driver.set_window_size(1280, max(900, min(int(height) + int(chrome_height) + 16, 4000)))
        assert driver.save_screenshot(str(path)), f"could not save {path}"
        return path

    return shot


# -- page helpers ----------------------------------------------------------------------


def _by_css(driver: Any, selector: str) -> Any:
    return driver.find_element("css selector", selector)


def _visible(selector: str) -> Any:
    def check(driver: Any) -> Any:
        found = driver.find_elements("css selector", selector)
        return found[0] if found and found[0].is_displayed() else False

    return check


def _button(driver: Any, action: str, plugin: str) -> Any:
    return _by_css(driver, f'button[data-action="{action}"][data-plugin="{plugin}"]')


def _card(driver: Any, plugin: str) -> Any:
    return _by_css(driver, f"#plugin-{plugin}")


_ACTION_BUTTONS_DISABLED = "return [...document.querySelectorAll('.actions button')].map((b) => b.disabled)"


def _buttons_enabled(driver: Any) -> bool:
    """Every plugin action button is enabled (read in one script: the cards are re-rendered often)."""
    states = driver.execute_script(_ACTION_BUTTONS_DISABLED)
    return bool(states) and not any(states)


def _buttons_disabled(driver: Any) -> bool:
    states = driver.execute_script(_ACTION_BUTTONS_DISABLED)
    return bool(states) and all(states)


def _status_state(driver: Any) -> str:
    return str(_by_css(driver, "#status-panel").get_attribute("data-state") or "")


def _wait_finished(driver: Any, what: str, timeout: float = 60.0) -> str:
    """Wait for the operation's status panel to leave 'running'; returns 'done' or 'failed'."""
    state = wait_until(
        driver,
        lambda d: _status_state(d) if _status_state(d) in ("done", "failed") else False,
        timeout,
        f"{what} to finish",
    )
    wait_until(driver, _buttons_enabled, 10, "buttons enabled again")
    return str(state)


def _log_in(driver: Any, token: str) -> None:
    field = wait_until(driver, _visible("#token"), 10, "the token field")
    field.clear()
    field.send_keys(token)
    _by_css(driver, "#login-submit").click()


# -- the test ------------------------------------------------------------------------------


def test_marketplace_page_in_a_real_browser(backend: Backend, tmp_path: Path, shots: Any) -> None:
    require_browser()
    with chrome(tmp_path / "chromium-profile") as driver:
        # 1. No token: the login prompt, not an error dump.
        driver.get(f"{backend.url}/marketplace")
        wait_until(driver, _visible("#login-view"), 15, "the login prompt")
        assert not _by_css(driver, "#plugins-view").is_displayed()
        assert _by_css(driver, "label[for=token]").text == "Admin token"
        assert "Traceback" not in driver.page_source and "detail" not in _by_css(driver, "main").text
        shots(driver, "login-prompt")

        # 2. A wrong token: back to the prompt, with the 403 reason.
        _log_in(driver, "not-the-token")
        message = wait_until(driver, _visible("#login-message"), 10, "the refusal message")
        assert "refused" in message.text and "invalid admin token" in message.text
        assert driver.execute_script("return sessionStorage.getItem('nextpanel.adminToken')") is None
        shots(driver, "login-refused")

        # 3. The right token: every plugin of the repository with its facts.
        _log_in(driver, TOKEN)
        wait_until(driver, lambda d: len(d.find_elements("css selector", "#plugins .card")) == 3, 15, "three plugin cards")
        assert driver.execute_script("return sessionStorage.getItem('nextpanel.adminToken')") == TOKEN
        chatbot = _card(driver, "ai_chatbot").text
        for fact in ("AI Chatbot", "support", "Free", "Latest version", "1.1.0", "Not installed", "Requires", "Nothing"):
            assert fact in chatbot, (fact, chatbot)
        assert "email_marketing>=1.0" in _card(driver, "sms_notifications").text
        assert _button(driver, "install", "ai_chatbot").text == "Install"
        assert _button(driver, "install", "ai_chatbot").get_attribute("aria-label") == "Install AI Chatbot"
        assert _by_css(driver, "#status").get_attribute("aria-live") == "polite"
        assert backend.get("/api/v1/chat/health").status_code == 404
        shots(driver, "catalogue")

        # 4. Install ai_chatbot: progress (download bytes, stages), then the new state.
        _button(driver, "install", "ai_chatbot").click()
        assert _buttons_disabled(driver), "buttons stay enabled while running"
        shots(driver, "installing")
        assert _wait_finished(driver, "the install") == "done", _by_css(driver, "#status").text
        status = _by_css(driver, "#status").text
        assert "AI Chatbot 1.1.0 is installed and enabled" in status, status
        assert "health check" in status and "database: migrations" in status, status
        download = _by_css(driver, "#download-label").text
        assert download.startswith("Download ai_chatbot 1.1.0:") and " of " in download, download
        received, total = driver.execute_script("const b = document.getElementById('download-bar'); return [b.value, b.max]")
        assert received == total > 1000, (received, total)
        card = _card(driver, "ai_chatbot")
        assert card.get_attribute("data-installed") == "1.1.0" and card.get_attribute("data-enabled") == "true"
        assert "Enabled" in card.text
        shots(driver, "installed")

        # ... and the chatbot's route answers, over HTTP, without a restart.
        health = backend.get("/api/v1/chat/health")
        assert health.status_code == 200 and health.json()["plugin"] == "ai_chatbot" and health.json()["version"] == "1.1.0"
        assert CHAT_TABLES <= table_names(backend.config.database_url)

        # 5. Uninstall through the in-page confirmation dialog (cancel first: nothing happens).
        _button(driver, "uninstall", "ai_chatbot").click()
        dialog = wait_until(driver, _visible("#uninstall-dialog"), 10, "the uninstall dialog")
        assert "Uninstall AI Chatbot?" in dialog.text
        assert "tables will be dropped" in dialog.text
        keep = _by_css(driver, "#keep-data")
        assert not keep.is_selected() and "Keep data" in _by_css(driver, "label.check").text
        shots(driver, "uninstall-dialog")
        _by_css(driver, "#uninstall-cancel").click()
        wait_until(driver, lambda d: not _by_css(d, "#uninstall-dialog").is_displayed(), 5, "the dialog to close")
        assert backend.installed() == {"ai_chatbot": ("1.1.0", True)}

        _button(driver, "uninstall", "ai_chatbot").click()
        wait_until(driver, _visible("#uninstall-dialog"), 10, "the uninstall dialog")
        _by_css(driver, "#uninstall-confirm").click()
        assert _wait_finished(driver, "the uninstall") == "done", _by_css(driver, "#status").text
        assert "AI Chatbot was uninstalled" in _by_css(driver, "#status").text
        assert _card(driver, "ai_chatbot").get_attribute("data-installed") == ""
        assert _button(driver, "install", "ai_chatbot").is_displayed()
        shots(driver, "uninstalled")
        assert backend.get("/api/v1/chat/health").status_code == 404
        assert not CHAT_TABLES & table_names(backend.config.database_url)
        assert backend.installed() == {}

        # 6. The tampered package: refused with the one-line reason, and nothing changed
        #    (not even its dependency email_marketing, which verified fine).
        tables_before = table_names(backend.config.database_url)
        _button(driver, "install", "sms_notifications").click()
        assert _wait_finished(driver, "the tampered install") == "failed"
        status = _by_css(driver, "#status").text
        reason = _by_css(driver, "#status-reason").text
        assert "Refused" in status and "Nothing changed." in status, status
        assert "sms_notifications 1.1.0" in reason and "sha256" in reason and "\n" not in reason, reason
        assert _by_css(driver, "#download-label").text.startswith("Download sms_notifications 1.1.0 (2 of 2):")
        shots(driver, "refused-tampered")
        assert backend.installed() == {}
        assert table_names(backend.config.database_url) == tables_before

        # 7. A second admin: while another operation runs, a click gets the busy message (409 detail),
        #    and the buttons stay disabled until that operation has finished.
        lock = filelock.FileLock(str(backend.config.lock_path))
        with lock.acquire(timeout=10):  # e.g. the CLI holds the home: the other admin's install waits for it
            other = backend.post(f"{MARKET}/install-remote?wait=false", json={"addon_id": "email_marketing"})
            assert other.status_code == 202, other.text
            other_id = other.json()["operation_id"]
            _button(driver, "install", "ai_chatbot").click()
            wait_until(driver, lambda d: "Busy" in _by_css(d, "#status").text, 10, "the busy message")
            status = _by_css(driver, "#status").text
            assert _status_state(driver) == "failed"
            assert "another marketplace operation is running (install-remote email_marketing" in status, status
            assert "Nothing changed." in status
            operation = backend.get(f"{MARKET}/operations/{other_id}", headers=AUTH).json()
            assert operation["status"] == "running", operation
            assert _buttons_disabled(driver)
            shots(driver, "busy")
            # Hold the lock until the other install gave up waiting for it (2 s): it fails, nothing changes.
            deadline = time.monotonic() + 20
            while operation["status"] == "running" and time.monotonic() < deadline:
                time.sleep(0.1)
                operation = backend.get(f"{MARKET}/operations/{other_id}", headers=AUTH).json()
        assert operation["status"] == "failed" and operation["exit_code"] == 75, operation
        wait_until(driver, _buttons_enabled, 20, "the buttons back")
        assert backend.installed() == {}

        # 8. Upgrade, disable, enable, roll back: another admin installed ai_chatbot 1.0.0 meanwhile.
        assert backend.post(f"{MARKET}/install-remote", json={"addon_id": "ai_chatbot", "version": "1.0.0"}).status_code == 200
        _by_css(driver, "#refresh").click()
        upgrade = wait_until(driver, lambda d: d.find_elements("css selector", 'button[data-action="upgrade"][data-plugin="ai_chatbot"]'), 10, "the Upgrade button")[0]
        assert upgrade.text == "Upgrade to 1.1.0" and "1.1.0 available" in _card(driver, "ai_chatbot").text
        upgrade.click()
        assert _wait_finished(driver, "the upgrade") == "done", _by_css(driver, "#status").text
        assert "AI Chatbot 1.1.0 is installed and enabled" in _by_css(driver, "#status").text
        assert "upgrade ai_chatbot 1.0.0 -> 1.1.0" in _by_css(driver, "#status").text
        assert _button(driver, "rollback", "ai_chatbot").text == "Roll back to 1.0.0"
        shots(driver, "upgraded")
        assert backend.get("/api/v1/chat/health").json()["version"] == "1.1.0"

        _button(driver, "disable", "ai_chatbot").click()
        assert _wait_finished(driver, "disable") == "done", _by_css(driver, "#status").text
        assert _card(driver, "ai_chatbot").get_attribute("data-enabled") == "false" and "Disabled" in _card(driver, "ai_chatbot").text
        shots(driver, "disabled")
        assert backend.get("/api/v1/chat/health").status_code == 404
        _button(driver, "enable", "ai_chatbot").click()
        assert _wait_finished(driver, "enable") == "done", _by_css(driver, "#status").text
        assert backend.get("/api/v1/chat/health").status_code == 200

        _button(driver, "rollback", "ai_chatbot").click()
        assert _wait_finished(driver, "the rollback") == "done", _by_css(driver, "#status").text
        assert "AI Chatbot 1.0.0 is installed and enabled" in _by_css(driver, "#status").text
        assert _card(driver, "ai_chatbot").get_attribute("data-installed") == "1.0.0"
        shots(driver, "rolled-back")
        assert backend.get("/api/v1/chat/health").json()["version"] == "1.0.0"
        assert backend.installed() == {"ai_chatbot": ("1.0.0", True)}

        # 9. History: the transactions (time, operation, plugins, versions, outcome) and the refusals.
        _by_css(driver, "#tab-history").click()
        wait_until(driver, lambda d: len(d.find_elements("css selector", "#history-rows tr")) >= 7, 10, "seven history rows")
        assert _by_css(driver, "#history-table thead").text.split() == ["Time", "Operation", "Plugins", "Versions", "Outcome"]
        rows = [r.text for r in driver.find_elements("css selector", "#history-rows tr")]
        expected = [  # newest first
            ("rollback (downgrade)", "1.1.0 → 1.0.0"),
            ("enable", "1.1.0 (enabled)"),
            ("disable", "1.1.0 (disabled)"),
            ("upgrade", "1.0.0 → 1.1.0"),
            ("install", "1.0.0"),
            ("uninstall", "1.1.0 (removed)"),
            ("install", "1.1.0"),
        ]
        for row, (operation, versions) in zip(rows, expected, strict=True):
            assert f" {operation} ai_chatbot {versions} done" in row, (row, operation, versions)
        refusals = [r.text for r in driver.find_elements("css selector", "#refusal-rows tr")]
        assert any("sms_notifications" in r and "refused" in r and "sha256" in r for r in refusals), refusals
        assert any("email_marketing" in r and "busy" in r for r in refusals), refusals
        assert _by_css(driver, "#tab-history").get_attribute("aria-pressed") == "true"
        assert not _by_css(driver, "#status-panel").is_displayed()
        shots(driver, "history")

        # 10. A token that stops working (rotated on the server, say): back to the login prompt, with a message.
        driver.execute_script("sessionStorage.setItem('nextpanel.adminToken', 'rotated-away')")
        _by_css(driver, "#tab-plugins").click()
        message = wait_until(driver, _visible("#login-message"), 10, "the login prompt after a 403")
        assert "Sign in again" in message.text
        assert not _by_css(driver, "#plugins-view").is_displayed()
        shots(driver, "session-refused")

        console = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and "status of 40" not in e.get("message", "")]
        assert not console, console
