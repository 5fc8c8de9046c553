"""The marketplace page (issues 9 and 16) in a real headless Chromium against the real backend.

Everything is real: the NextPanel backend runs under uvicorn in a subprocess
on a loopback port with an SQLite home; the repository is a signed folder
served on loopback holding the example plugins of examples/plugins/ packed
and signed with a fresh key, except that sms_notifications 1.1.0's zip was
altered after signing (same size, different bytes: its sha256 no longer
matches the signed manifest), plus 200 generated plugins (the page must stay
usable with that many). The page is driven through selenium like an admin
would, by keyboard where it matters; axe-core (vendored, tests/vendor) checks
every view for serious or critical violations; a screenshot of each state is
saved under artifacts/screenshots/NN-<state>.png (the path is printed).

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
    PluginSpec,
    build_package,
    build_repository,
    make_home,
    make_keypair,
    served_repository,
    table_names,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "plugins"
ARTIFACTS = ROOT / "artifacts" / "screenshots"
AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"
GENERATED = 200
TOKEN = "browser-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARKET = "/api/v1/marketplace"
TAMPERED = ("sms_notifications", "1.1.0")
CHAT_TABLES = {"chat_sessions", "chat_messages"}
SECRET = "sk-browser-test-key"
#: A plugin whose 1.0.0 requires a setting its 2.0.0 no longer declares: rolling back asks for it again.
KEYED = "keyed_tool"
KEYED_SETTINGS = {"properties": {"region": {"type": "string", "title": "Region"}}, "required": ["region"]}

@attrs.frozen
class Backend:
    url: str
    config: Config
    log: Path
    repository: Any  # the served_repository: __exit__ stops it
    key_id: str

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
    for n in range(GENERATED):
        spec = PluginSpec(id=f"gen_{n:03d}", metadata_extra={"name": f"Generated {n:03d}", "category": ("billing", "reports", "tools")[n % 3]})
        packages.append(build_package(spec, tmp_path / "generated", key.secret))
    for version, settings in (("1.0.0", KEYED_SETTINGS), ("2.0.0", {"properties": {}})):
        extra = {"name": "Keyed Tool", "category": "tools", "settings": settings}
        packages.append(build_package(PluginSpec(id=KEYED, version=version, metadata_extra=extra), tmp_path / "keyed", key.secret))
    repo = build_repository(tmp_path / "repo", packages, key.secret)
    manifest = json.loads((repo / "manifest.json").read_text())
    entry = next(e for e in manifest["plugins"] if (e["id"], e["version"]) == TAMPERED)
    tampered = package_path(repo, *TAMPERED)
    _tamper(tampered)
    assert tampered.stat().st_size == entry["size"]

    served = served_repository(repo)
    with served as repo_url:
        config_path = make_home(tmp_path / "site", [key.public_path], repository=repo_url, download_timeout=20)
        port = _free_port()
        log = tmp_path / "uvicorn.log"
        env = dict(os.environ, ATOMICPLUG_CONFIG=str(config_path), NEXTPANEL_ADMIN_TOKEN=TOKEN, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))
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
            yield Backend(url=url, config=Config.load(config_path), log=log, repository=served, key_id=key.secret.key_id_hex)
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


_ACTION_BUTTONS_DISABLED = "return [...document.querySelectorAll('.actions button:not([data-action=details])')].map((b) => b.disabled)"


def _buttons_enabled(driver: Any) -> bool:
    """Every plugin action button is enabled (read in one script: the cards are re-rendered often)."""
    states = driver.execute_script(_ACTION_BUTTONS_DISABLED)
    return bool(states) and not any(states)


def _buttons_disabled(driver: Any) -> bool:
    states = driver.execute_script(_ACTION_BUTTONS_DISABLED)
    return bool(states) and all(states)


def _status_state(driver: Any) -> str:
    return str(_by_css(driver, "#status-panel").get_attribute("data-state") or "")


def _forget_status(driver: Any) -> None:
    """Before starting an operation: the status panel still says how the previous one ended, and the new
    one sets it only once the dialog's close event has been handled, after selenium's click returns."""
    driver.execute_script("document.getElementById('status-panel').dataset.state = ''")


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


def _axe(driver: Any, view: str) -> None:
    """axe-core on the current page: no serious or critical violation."""
    if not driver.execute_script("return typeof window.axe !== 'undefined'"):
        driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then((r) => done(r.violations.map("
        "  (v) => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' '))}))),"
        "  (e) => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
    )
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    assert not bad, f"axe on {view}: {bad}"


def _keyboard_to(driver: Any, selector: str, limit: int = 400) -> None:
    """Press Tab until ``selector`` has the focus (keyboard only, no clicks)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(limit):
        if driver.execute_script("return document.activeElement.matches(arguments[0])", selector):
            return
        ActionChains(driver).send_keys(Keys.TAB).perform()
    raise AssertionError(f"Tab never reached {selector}")


def _press(driver: Any, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def _focused_card(driver: Any) -> str | None:
    return driver.execute_script("const c = document.activeElement.closest('.card'); return c ? c.dataset.plugin : null")


_CONTRAST = """
const lum = (c) => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map((v) => { v = v / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
const bg = (node) => { for (; node; node = node.parentElement) { const c = getComputedStyle(node).backgroundColor; if (!c.endsWith(', 0)') && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; };
const a = document.activeElement; const s = getComputedStyle(a);
const ring = lum(s.outlineColor), behind = lum(bg(a.parentElement));
return [s.outlineStyle, parseFloat(s.outlineWidth), (Math.max(ring, behind) + 0.05) / (Math.min(ring, behind) + 0.05)];
"""


def _narrow(driver: Any, width: int) -> None:
    driver.set_window_size(width, 800)
    inner = driver.execute_script("return window.innerWidth")
    driver.set_window_size(width + (width - inner), 800)  # the viewport itself `width` px wide


def _fits(driver: Any) -> dict[str, Any]:
    return driver.execute_script(
        "const w = window.innerWidth; const r = (id) => document.getElementById(id).getBoundingClientRect();"
        "return {width: w, page: document.documentElement.scrollWidth, history: r('tab-history').right, signout: r('sign-out').right,"
        " historyVisible: r('tab-history').width > 0, signoutVisible: r('sign-out').width > 0};"
    )


def _confirm(driver: Any) -> Any:
    dialog = wait_until(driver, _visible("#confirm-dialog"), 15, "the preview dialog")
    _forget_status(driver)  # whatever is confirmed next starts an operation
    return dialog


# -- the test ------------------------------------------------------------------------------


@pytest.mark.slow
def test_marketplace_page_in_a_real_browser(backend: Backend, tmp_path: Path, shots: Any, capsys: pytest.CaptureFixture[str]) -> None:
    require_browser()
    from selenium.webdriver.common.keys import Keys

    with chrome(tmp_path / "chromium-profile") as driver:
        # 1. No token: the login prompt, not an error dump.
        driver.get(f"{backend.url}/marketplace")
        wait_until(driver, _visible("#login-view"), 15, "the login prompt")
        assert _by_css(driver, "label[for=token]").text == "Admin token"
        _axe(driver, "login")
        shots(driver, "login-prompt")

        # 2. A wrong token: back to the prompt, with the 403 reason.
        _log_in(driver, "not-the-token")
        # The prompt's own "please sign in" line is visible first: wait for the answer to replace it.
        message = wait_until(
            driver, lambda d: (m := _visible("#login-message")(d)) and "refused" in m.text and m, 10, "the refusal message"
        )
        assert "invalid admin token" in message.text

        # 3. The right token, typed and submitted with Enter: every plugin, 203 cards, no layout shift.
        driver.execute_script(
            "window.__shift = 0; new PerformanceObserver((l) => { for (const e of l.getEntries()) if (!e.hadRecentInput) window.__shift += e.value; })"
            ".observe({type: 'layout-shift', buffered: true});"
        )
        field = _by_css(driver, "#token")
        field.send_keys(TOKEN, Keys.ENTER)
        total = GENERATED + 4  # the three examples and the keyed tool
        wait_until(driver, lambda d: len(d.find_elements("css selector", "#plugins .card")) == total, 30, f"{total} plugin cards")
        assert _by_css(driver, "#repository-info").text == f"{total} plugins from {backend.config.repository}"
        assert driver.execute_script("return window.__shift") < 0.1
        _axe(driver, "plugins")
        shots(driver, "catalogue")
        # Search and category filter (200 generated plugins among the three examples).
        _by_css(driver, "#search").send_keys("chatbot")
        wait_until(driver, lambda d: len(d.find_elements("css selector", "#plugins .card")) == 1, 10, "one card after search")
        _by_css(driver, "#search").clear()
        _by_css(driver, "#search").send_keys("marketing")
        wait_until(driver, lambda d: len(d.find_elements("css selector", "#plugins .card")) == 2, 10, "two marketing cards")
        assert _by_css(driver, "#filter-count").text == f"2 of {total} plugins shown"
        shots(driver, "search")
        _by_css(driver, "#search").clear()
        driver.execute_script("const s = document.getElementById('category'); s.value = 'support'; s.dispatchEvent(new Event('change'))")
        wait_until(driver, lambda d: [c.get_attribute("data-plugin") for c in d.find_elements("css selector", "#plugins .card")] == ["ai_chatbot"], 10, "the support category")
        chatbot = _card(driver, "ai_chatbot").text
        for fact in ("AI Chatbot", "support", "Free", "1.1.0", "Not installed", "Nothing"):
            assert fact in chatbot, (fact, chatbot)

        # 4. Install ai_chatbot by keyboard only: Tab to its Install, Enter, the preview, Tab to Install, Enter.
        driver.execute_script("document.getElementById('main').focus()")
        _keyboard_to(driver, 'button[data-action="install"][data-plugin="ai_chatbot"]')
        style, width, ratio = driver.execute_script(_CONTRAST)
        assert style == "solid" and width >= 3 and ratio >= 3, (style, width, ratio)
        _press(driver, Keys.ENTER)
        dialog = _confirm(driver)
        # The installer's dry run: the migrations it runs, and the plugin's settings form (its key a secret).
        assert "Install AI Chatbot 1.1.0" in dialog.text and "Runs migrations: 0001_chat, 0002_titles_and_ratings" in dialog.text
        assert "Database: Runs the migrations 0001_chat, 0002_titles_and_ratings." in dialog.text
        key_field = _by_css(driver, "#install-setting-openai_api_key")
        assert key_field.get_attribute("type") == "password" and _by_css(driver, "#install-setting-model").get_attribute("value") == "gpt-4o-mini"
        _keyboard_to(driver, "#install-setting-openai_api_key", 10)
        _press(driver, SECRET)
        _press(driver, Keys.TAB)  # the model: arrow down picks the next choice
        _press(driver, Keys.ARROW_DOWN)
        assert _by_css(driver, "#install-setting-model").get_attribute("value") == "gpt-4o"
        _axe(driver, "preview dialog with the settings form")
        shots(driver, "preview")
        _keyboard_to(driver, "#confirm-ok", 10)
        _press(driver, Keys.ENTER)
        assert _wait_finished(driver, "the install") == "done", _by_css(driver, "#status").text
        status = _by_css(driver, "#status").text
        assert "AI Chatbot 1.1.0 is installed and enabled" in status, status
        assert "Checking that AI Chatbot starts" in status and "Updating the database (all changes or none)" in status, status
        assert "install-remote" not in status and "ledger" not in status
        assert _focused_card(driver) == "ai_chatbot", "focus went back to the card that acted"
        _axe(driver, "plugins after an install")
        shots(driver, "installed")
        health = backend.get("/api/v1/chat/health").json()
        assert (health["version"], health["openai_key_set"]) == ("1.1.0", True)  # the setting reached the backend

        # 5. Disable by keyboard: the card re-renders and keeps the focus; its stages say no migration ran.
        _keyboard_to(driver, 'button[data-action="disable"][data-plugin="ai_chatbot"]', 20)
        _forget_status(driver)
        _press(driver, Keys.ENTER)
        assert _wait_finished(driver, "disable") == "done"
        assert "Saving the change" in _by_css(driver, "#stages").text and "database" not in _by_css(driver, "#stages").text.lower()
        assert _focused_card(driver) == "ai_chatbot"
        _forget_status(driver)
        _button(driver, "enable", "ai_chatbot").click()
        assert _wait_finished(driver, "enable") == "done"

        # 5b. Its settings later: the secret only as set, the model changed and saved (audited, handed to the backend).
        _button(driver, "settings", "ai_chatbot").click()
        wait_until(driver, _visible("#setting-model"), 15, "the settings form")
        secret = _by_css(driver, "#setting-openai_api_key")
        assert secret.get_attribute("value") == "" and secret.get_attribute("placeholder") == "Set: leave empty to keep it"
        assert SECRET not in driver.page_source and _by_css(driver, "#setting-model").get_attribute("value") == "gpt-4o"
        driver.execute_script("const s = document.getElementById('setting-model'); s.value = 'gpt-4o-mini'; s.dispatchEvent(new Event('change'))")
        _axe(driver, "settings dialog")
        shots(driver, "settings")
        _forget_status(driver)
        _by_css(driver, "#settings-save").click()
        assert _wait_finished(driver, "saving the settings") == "done", _by_css(driver, "#status").text
        assert "AI Chatbot's settings are saved" in _by_css(driver, "#status").text
        form = backend.get(f"{MARKET}/plugins/ai_chatbot/settings", headers=AUTH).json()
        assert {f["name"]: (f["value"], f["is_set"]) for f in form["fields"]} == {"openai_api_key": (None, True), "model": ("gpt-4o-mini", True)}
        assert backend.get("/api/v1/chat/health").json()["openai_key_set"] is True

        # 6. The detail view: README, permissions in words, publisher key, version picker; a downgrade asks first.
        _button(driver, "details", "ai_chatbot").click()
        wait_until(driver, lambda d: d.find_elements("css selector", "#readme h1, #readme h2"), 20, "the README")
        detail = _by_css(driver, "#detail-dialog").text
        assert "Connect to services on the internet" in detail and "Create its own tables in the panel's database" in detail
        assert _by_css(driver, "#publisher-key").text == backend.key_id
        assert driver.execute_script("return document.querySelectorAll('#readme script, #changelog script').length") == 0
        _axe(driver, "detail dialog")
        shots(driver, "detail")
        driver.execute_script("const s = document.getElementById('version-picker'); s.value = '1.0.0'; s.dispatchEvent(new Event('change'))")
        wait_until(driver, lambda d: _by_css(d, "#detail-title").text == "AI Chatbot 1.0.0", 20, "version 1.0.0's detail")
        older = _by_css(driver, "#install-version")
        assert older.text == "Install older version 1.0.0"
        older.click()
        _confirm(driver)
        assert _by_css(driver, "#confirm-ok").get_attribute("disabled") is not None  # not before the downgrade is acknowledged
        assert "Downgrade AI Chatbot 1.1.0 → 1.0.0" in _by_css(driver, "#confirm-body").text
        assert "Drops columns: chat_sessions.title, chat_messages.rating" in _by_css(driver, "#confirm-body").text
        _by_css(driver, "#allow-downgrade").click()
        _by_css(driver, "#confirm-ok").click()
        assert _wait_finished(driver, "the downgrade") == "done", _by_css(driver, "#status").text
        assert _card(driver, "ai_chatbot").get_attribute("data-installed") == "1.0.0"
        # After going back, the card offers 1.1.0 once: as the upgrade, not also as a rollback.
        labels = [b.text for b in _card(driver, "ai_chatbot").find_elements("css selector", ".actions button")]
        assert "Upgrade to 1.1.0" in labels and not any(label.startswith("Roll back") for label in labels), labels
        shots(driver, "downgraded")

        # 7. Uninstalling a plugin others need offers the cascade in the preview.
        assert backend.post(f"{MARKET}/install-remote", json={"addon_id": "sms_notifications", "version": "1.0.0"}).status_code == 200
        driver.execute_script("const s = document.getElementById('category'); s.value = ''; s.dispatchEvent(new Event('change'))")
        _by_css(driver, "#refresh").click()
        wait_until(driver, lambda d: d.find_elements("css selector", '#plugin-email_marketing[data-installed="1.1.0"]'), 20, "email_marketing installed")
        _button(driver, "uninstall", "email_marketing").click()
        dialog = _confirm(driver)
        assert "SMS Notifications needs Email Marketing" in dialog.text and "Remove SMS Notifications" in dialog.text, dialog.text
        assert "Drops tables: sms_contacts, sms_messages" in dialog.text and "Drops tables: email_campaigns" in dialog.text, dialog.text
        assert _by_css(driver, "#confirm-ok").get_attribute("disabled") is not None
        shots(driver, "cascade-preview")
        _by_css(driver, "#confirm-cancel").click()
        assert backend.post(f"{MARKET}/email_marketing/uninstall", json={}).status_code == 400  # another admin, without cascade: refused and recorded
        _button(driver, "uninstall", "email_marketing").click()
        _confirm(driver)
        _by_css(driver, "#cascade").click()
        _by_css(driver, "#confirm-ok").click()
        assert _wait_finished(driver, "the cascade") == "done", _by_css(driver, "#status").text
        assert backend.installed() == {"ai_chatbot": ("1.0.0", True)}

        # 8. The tampered package: the preview's dry run already downloads and refuses it, with a title for people
        # and the raw line only behind Details; there is nothing to confirm.
        _button(driver, "install", "sms_notifications").click()
        dialog = _confirm(driver)
        assert "Repository data not trusted" in dialog.text and "does not match the checksum" in dialog.text, dialog.text
        assert _by_css(driver, "#confirm-ok").get_attribute("disabled") is not None
        assert driver.execute_script("return document.querySelector('#confirm-body details.raw').open") is False
        _axe(driver, "preview refused")
        shots(driver, "refused-tampered")
        _by_css(driver, "#confirm-cancel").click()
        tampered = backend.post(f"{MARKET}/install-remote", json={"addon_id": "sms_notifications"})  # an API client without a preview
        assert tampered.status_code == 403 and tampered.json()["title"] == "Repository data not trusted"
        assert backend.installed() == {"ai_chatbot": ("1.0.0", True)}

        # 8b. Rolling back to a version whose required setting the upgrade dropped: the preview asks for it.
        assert backend.post(f"{MARKET}/install-remote", json={"addon_id": KEYED, "version": "1.0.0", "settings": {"region": "eu"}}).status_code == 200
        assert backend.post(f"{MARKET}/install-remote", json={"addon_id": KEYED}).status_code == 200
        _by_css(driver, "#refresh").click()
        wait_until(driver, lambda d: d.find_elements("css selector", f'#plugin-{KEYED}[data-installed="2.0.0"]'), 20, "the keyed tool at 2.0.0")
        _button(driver, "rollback", KEYED).click()
        dialog = _confirm(driver)
        region = wait_until(driver, _visible("#install-setting-region"), 10, "the rollback's settings form")
        assert "Keyed Tool 2.0.0 → 1.0.0" in dialog.text, dialog.text
        region.send_keys("us")
        _axe(driver, "rollback preview with the settings form")
        shots(driver, "rollback-settings")
        _by_css(driver, "#confirm-ok").click()
        assert _wait_finished(driver, "the rollback") == "done", _by_css(driver, "#status").text
        assert backend.installed()[KEYED] == ("1.0.0", True)
        form = backend.get(f"{MARKET}/plugins/{KEYED}/settings", headers=AUTH).json()
        assert {f["name"]: f["value"] for f in form["fields"]} == {"region": "us"}
        assert backend.post(f"{MARKET}/{KEYED}/uninstall", json={}).status_code == 200

        # 9. The repository goes away: installed plugins keep their facts, the page says so plainly.
        backend.repository.__exit__(None, None, None)
        _by_css(driver, "#refresh").click()
        problem = wait_until(driver, _visible("#repository-problem"), 30, "the repository notice")
        assert problem.text.startswith("Repository unreachable") and "HTTPConnectionPool" not in problem.text
        assert "plugins from" not in _by_css(driver, "#repository-info").text
        chatbot = _card(driver, "ai_chatbot").text
        assert "The panel's support chatbot" in chatbot and "support" in chatbot and "Free" in chatbot, chatbot
        _button(driver, "upgrade", "ai_chatbot").click() if driver.find_elements("css selector", 'button[data-action="upgrade"]') else None
        _axe(driver, "plugins, repository unreachable")
        shots(driver, "repository-unreachable")
        assert backend.post(f"{MARKET}/install-remote", json={"addon_id": "email_marketing"}).status_code == 400

        # 10. History: every outcome with names, who and versions.
        driver.execute_script("document.querySelector('dialog[open]') && document.querySelector('dialog[open]').close()")
        _by_css(driver, "#tab-history").click()
        wait_until(driver, lambda d: len(d.find_elements("css selector", "#history-rows tr")) >= 8, 15, "the history rows")
        rows = [r.text for r in driver.find_elements("css selector", "#history-rows tr")]
        text = "\n".join(rows)
        assert "Repository unreachable" in text and "Email Marketing" in text
        assert any("uninstall" in r and "Refused" in r and "Email Marketing" in r for r in rows), rows
        assert any("install" in r and "SMS Notifications" in r and "Repository data not trusted" in r for r in rows), rows
        assert any("AI Chatbot 1.1.0 → 1.0.0" in r and "Done" in r for r in rows), rows
        assert any("configure" in r and "AI Chatbot" in r and "Done" in r for r in rows), rows
        assert "ai_chatbot" not in text and "admin (127.0.0.1)" in text
        _axe(driver, "history")
        shots(driver, "history")

        # 11. 375 and 360 px wide: nothing overflows, History and Sign out stay reachable.
        for width in (375, 360):
            _narrow(driver, width)
            fits = _fits(driver)
            assert fits["page"] <= fits["width"] and fits["history"] <= fits["width"] and fits["signout"] <= fits["width"], fits
            assert fits["historyVisible"] and fits["signoutVisible"], fits
            shots(driver, f"history-{width}px")
        _by_css(driver, "#tab-plugins").click()
        wait_until(driver, _visible("#plugins .card"), 15, "the cards")
        fits = _fits(driver)
        assert fits["page"] <= fits["width"], fits
        _axe(driver, "plugins at 360 px")
        shots(driver, "plugins-360px")

        # 12. Dark scheme: still no serious contrast problem.
        driver.set_window_size(1280, 1000)
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        assert driver.execute_script("return matchMedia('(prefers-color-scheme: dark)').matches")
        _axe(driver, "plugins, dark")
        shots(driver, "plugins-dark")

        # 13. Sign out, reachable from the top bar.
        _by_css(driver, "#sign-out").click()
        wait_until(driver, _visible("#login-view"), 10, "the login prompt after signing out")

        console = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and "status of 40" not in e.get("message", "")]
        assert not console, console
    with capsys.disabled():
        print(f"\nmarketplace screenshots: {ARTIFACTS}")
