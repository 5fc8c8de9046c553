"""atomicplug quickstart: keys, a signed repository, the billing backend, and every operation.

Runs the real CLI and the example NextPanel backend, as you would in a shell,
in ./quickstart-demo (made anew each run, removed afterwards unless --keep).
The embedded default: SQLite in the state folder and a local signed
repository served on loopback; the backend installs ai_chatbot through its
marketplace API and serves the plugin's routes without a restart.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent
ROOT = EXAMPLES.parent
PLUGINS = EXAMPLES / "plugins"
TOKEN = "quickstart-admin-token"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(*args: str, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``atomicplug ARGS`` and show it as a shell line with its output."""
    print(f"$ atomicplug {shlex.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "atomicplug", *args], cwd=cwd, text=True, capture_output=True)
    for stream in (proc.stdout, proc.stderr):
        if stream.strip():
            print("  " + stream.strip().replace("\n", "\n  "), flush=True)
    if proc.returncode != expect:
        raise SystemExit(f"quickstart: `atomicplug {shlex.join(args)}` exited {proc.returncode}, expected {expect}")
    return proc


def tables(database: Path) -> list[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'atomicplug_%' ORDER BY name")
        return [name for (name,) in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="quickstart-demo", help="work folder (default: ./quickstart-demo)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    args = parser.parse_args()
    work = Path(args.dir).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        step("1. A publisher key pair (minisign format) and a config trusting it")
        run("keygen", "--no-password", "-p", "keys/publisher.pub", "-s", "keys/publisher.key", cwd=work)
        run("init", "--trusted-key", "keys/publisher.pub", cwd=work)

        step("2. Pack and sign the example plugins (two versions each)")
        (work / "packages").mkdir()
        zips = []
        for source in sorted(PLUGINS.glob("*/*/metadata.json")):
            plugin_id, version = source.parent.parent.name, source.parent.name
            zips.append(f"packages/{plugin_id}-{version}.zip")
            run("pack", str(source.parent), "--key", "keys/publisher.key", "-o", zips[-1], cwd=work)

        step("3. A local signed repository, served on loopback")
        run("repo", "init", "repo", "--key", "keys/publisher.key", cwd=work)
        run("repo", "add", "repo", *zips, "--key", "keys/publisher.key", cwd=work)
        repo_port = _free_port()
        servers.append(_start([sys.executable, "-m", "atomicplug", "serve", "repo", "--port", str(repo_port)], work))
        _wait_for_port(repo_port)
        config = work / "atomicplug.toml"
        config.write_text(config.read_text().replace('# repository = "http://127.0.0.1:8002"', f'repository = "http://127.0.0.1:{repo_port}"'))
        print(f"  serving repo/ at http://127.0.0.1:{repo_port}")

        step("4. The NextPanel billing backend, using atomicplug as a library")
        api_port = _free_port()
        env = {**os.environ, "ATOMICPLUG_CONFIG": str(config), "NEXTPANEL_ADMIN_TOKEN": TOKEN, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])}
        servers.append(_start([sys.executable, "-m", "examples.nextpanel", "--port", str(api_port)], work, env))
        _wait_for_port(api_port)
        api = Api(f"http://127.0.0.1:{api_port}")
        print(f"  backend at {api.base} (admin token {TOKEN!r}; marketplace page: {api.base}/marketplace)")
        for plugin in api.get("/api/v1/marketplace/plugins")["plugins"]:
            needs = ", ".join(plugin.get("requires") or []) or "-"
            print(f"  {plugin['id']:18} {plugin['latest_version']:8} {plugin['name']:20} requires: {needs}")

        step("5. Install ai_chatbot through the marketplace API, then talk to its new routes")
        api.post("/api/v1/marketplace/install-remote", {"addon_id": "ai_chatbot", "version": "1.0.0"})
        session = api.post("/api/v1/chat/sessions", {})
        session_id = session.get("id") or session.get("session_id")
        reply = api.post(f"/api/v1/chat/sessions/{session_id}/messages", {"content": "Hi! How do I pay my invoice?"})
        print(f"  chatbot says: {reply['reply']['content']}")
        run("list", cwd=work)
        print(f"  tables: {', '.join(tables(work / 'state' / 'app.db'))}")

        step("6. Upgrade and roll back; a plugin with a dependency comes with it, in one transaction")
        api.post("/api/v1/marketplace/install-remote", {"addon_id": "ai_chatbot"})
        api.post("/api/v1/marketplace/ai_chatbot/rollback", {})
        api.post("/api/v1/marketplace/install-remote", {"addon_id": "sms_notifications"})
        run("list", cwd=work)

        step("7. A tampered package is refused (exit 3) and nothing changes")
        original = work / "packages/email_marketing-1.1.0.zip"
        tampered = work / "packages/tampered.zip"
        data = bytearray(original.read_bytes())
        data[100] ^= 0x01
        tampered.write_bytes(bytes(data))
        shutil.copy(f"{original}.minisig", f"{tampered}.minisig")
        run("install", "packages/tampered.zip", cwd=work, expect=3)

        step("8. Verify installed files, the history, uninstall everything")
        run("verify", cwd=work)
        api.post("/api/v1/marketplace/email_marketing/uninstall", {"cascade": True})
        api.post("/api/v1/marketplace/ai_chatbot/uninstall", {})
        run("history", cwd=work)
        run("list", cwd=work)
        print(f"  tables: {', '.join(tables(work / 'state' / 'app.db')) or '(none)'}")
        print("\nquickstart finished: every change was one transaction.")
        return 0
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


class Api:
    """The backend over HTTP with the admin token; prints each call and its outcome."""

    def __init__(self, base: str) -> None:
        import requests

        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        print("$ " + curl_line(method, self.base + path, body, TOKEN), flush=True)
        response = self.session.request(method, self.base + path, json=body, timeout=120)
        data = response.json()
        if response.status_code >= 400:
            raise SystemExit(f"quickstart: {method} {path} answered {response.status_code}: {data.get('detail')}")
        for line in data.get("changes") or []:
            print(f"  {line}")
        return data


def curl_line(method: str, url: str, body: dict[str, Any] | None, token: str) -> str:
    """The curl command for a call, copy-paste safe: the bearer token, and the JSON body with its Content-Type."""
    args = ["curl", "-sS", "-X", method, "-H", f"Authorization: Bearer {token}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    return shlex.join([*args, url])


def _start(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"quickstart: the repository server did not start on port {port}")


if __name__ == "__main__":
    raise SystemExit(main())
