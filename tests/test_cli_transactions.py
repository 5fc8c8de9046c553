"""The CLI as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path



def run_cli(home, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert fragment in lines[0]


def test_install_list_json_uninstall_round_trip(home):
    package = home.package("shop")
    proc = run_cli(home, "install", str(package))
    assert proc.returncode == 0, proc.stderr
    assert "install shop 1.0.0" in proc.stdout
    listed = json.loads(run_cli(home, "list", "--json").stdout)
    assert [(p["id"], p["version"], p["enabled"]) for p in listed] == [("shop", "1.0.0", True)]
    history = json.loads(run_cli(home, "history", "--json").stdout)
    assert history[0]["outcome"] == "done"
    assert run_cli(home, "verify").returncode == 0
    assert run_cli(home, "uninstall", "shop").returncode == 0
    assert json.loads(run_cli(home, "list", "--json").stdout) == []


def test_tampered_package_exits_3_with_one_line(home):
    package = home.package("shop")
    data = bytearray(package.read_bytes())
    data[40] ^= 0xFF
    package.write_bytes(bytes(data))
    proc = run_cli(home, "install", str(package))
    assert_one_line_error(proc, 3, "signature verification failed")
    assert not home.config.home.exists()


def test_unknown_plugin_and_usage_errors(home):
    assert_one_line_error(run_cli(home, "uninstall", "ghost"), 1, "ghost is not installed")
    assert_one_line_error(run_cli(home, "install"), 2, "arguments are required")


def test_broken_config_exits_2(home):
    home.config_path.write_text("home = [unclosed\n")
    assert_one_line_error(run_cli(home, "list"), 2, "not valid TOML")


def test_lock_busy_exits_75(home):
    import filelock

    home.config.home.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(home.config.lock_path))
    with lock:
        home.config_path.write_text(home.config_path.read_text().replace("lock_timeout = 5", "lock_timeout = 0.2"))
        proc = run_cli(home, "install", str(home.package("shop")))
    assert_one_line_error(proc, 75, "another atomicplug operation holds")


def test_debug_shows_the_traceback(home):
    proc = run_cli(home, "--debug", "uninstall", "ghost")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr


def test_init_writes_a_config_that_loads(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "atomicplug", "init", str(tmp_path / "atomicplug.toml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    from atomicplug.config import Config

    config = Config.load(tmp_path / "atomicplug.toml")
    assert config.home == tmp_path / "state"
    assert config.database_url == f"sqlite:///{tmp_path / 'state' / 'app.db'}"
