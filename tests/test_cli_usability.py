"""What a new user meets first (issue 13, "found as a new user would"): one line, the right exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_cli_transactions import assert_one_line_error, run_cli

from atomicplug.testing import PluginSpec, write_plugin_source

#: The NextPanel plugin format's own example metadata.json, verbatim but for the backend
#: dependency, swapped for one that is installed here.
NEXTPANEL_EXAMPLE = {
    "id": "ai_chatbot",
    "name": "AI Chatbot",
    "version": "1.0.0",
    "author": "NextPanel Team",
    "description": "AI-powered customer support chatbot",
    "category": "communication",
    "price": 0,
    "requires": [],
    "backend": {"models": ["ChatSession", "ChatMessage"], "routes": ["/api/v1/chat/*"], "dependencies": ["packaging>=20"]},
    "frontend": {"routes": ["/support/chats"], "components": ["AIChatBot"], "dependencies": {}},
    "permissions": ["database.create_tables", "api.register_routes", "filesystem.write"],
}


def _pack(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atomicplug", "pack", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_the_nextpanel_example_metadata_installs_as_written(home, tmp_path):
    source = write_plugin_source(PluginSpec(id="ai_chatbot"), tmp_path / "ai_chatbot")
    (source / "metadata.json").write_text(json.dumps(NEXTPANEL_EXAMPLE, indent=2))
    proc = _pack(str(source), "--key", str(home.publisher.secret_path), "-o", str(tmp_path / "out" / "ai_chatbot.zip"))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(home, "install", str(tmp_path / "out" / "ai_chatbot.zip"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(run_cli(home, "list", "--json").stdout)[0]["id"] == "ai_chatbot"


def test_an_alias_permission_is_granted_by_its_name_and_refused_without_it(home_factory, tmp_path):
    strict = home_factory(name="strict", granted_permissions=["database.create_tables", "filesystem.write"])
    package = strict.package("routes_only", permissions=("api.register_routes",))
    assert_one_line_error(run_cli(strict, "install", str(package)), 3, "'api.register_routes', which is not granted")
    by_name = home_factory(name="by-name", granted_permissions=["api.routes"])
    assert run_cli(by_name, "install", str(package)).returncode == 0


def test_pack_into_a_missing_folder_creates_it(home, tmp_path):
    source = write_plugin_source(PluginSpec(id="shop"), tmp_path / "shop")
    out = tmp_path / "missing" / "deeper" / "shop.zip"
    proc = _pack(str(source), "--key", str(home.publisher.secret_path), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and out.with_name("shop.zip.minisig").is_file()


def test_pack_of_a_missing_folder_is_a_usage_error(home, tmp_path):
    assert_one_line_error(_pack(str(tmp_path / "no-such"), "--key", str(home.publisher.secret_path)), 2, "does not exist")


def test_install_of_a_folder_says_it_is_a_folder(home, tmp_path):
    folder = write_plugin_source(PluginSpec(id="shop"), tmp_path / "shopsrc")
    proc = run_cli(home, "install", str(folder))
    assert_one_line_error(proc, 2, "is a folder, not a package")
    relative = subprocess.run(
        [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "install", "shopsrc"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert_one_line_error(relative, 2, "is a folder, not a package")


def test_doctor_reports_storage_generation_and_problems(home):
    proc = run_cli(home, "doctor", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    findings = {f["check"]: f for f in json.loads(proc.stdout)}
    assert "not created yet" in findings["storage"]["detail"]
    assert findings["generation"]["detail"] == "no generation yet (nothing installed)"
    assert findings["command line"]["detail"].startswith("one process per command")
    assert not home.config.home.exists(), "doctor changes nothing"
    assert run_cli(home, "install", str(home.package("shop"))).returncode == 0
    findings = {f["check"]: f for f in json.loads(run_cli(home, "doctor", "--json").stdout)}
    assert "hard links work" in findings["storage"]["detail"]
    assert findings["generation"]["detail"].startswith("generation 1")
    (home.config.backend_addons.parent / "elsewhere").mkdir()
    home.config.backend_addons.unlink()
    home.config.backend_addons.symlink_to(home.config.backend_addons.parent / "elsewhere")
    proc = run_cli(home, "doctor")
    assert proc.returncode == 1
    assert "BAD  backend addons" in proc.stdout and "not atomicplug's link" in proc.stdout
