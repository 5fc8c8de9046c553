"""atomicplug quickstart: keys, signed packages, a local repository, and every operation.

Runs the real CLI, as you would in a shell, in ./quickstart-demo (made anew
each run, removed afterwards unless --keep). The embedded default: SQLite in
the state folder and a local signed repository served on loopback.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
PLUGIN = EXAMPLES / "plugins" / "email_marketing"


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
    server = None
    try:
        step("1. A publisher key pair (minisign format) and a config trusting it")
        run("keygen", "--no-password", "-p", "keys/publisher.pub", "-s", "keys/publisher.key", cwd=work)
        run("init", "--trusted-key", "keys/publisher.pub", cwd=work)

        step("2. Pack and sign two versions of the example plugin")
        for version in ("1.0.0", "1.1.0"):
            out = f"packages/email_marketing-{version}.zip"
            (work / "packages").mkdir(exist_ok=True)
            run("pack", str(PLUGIN / version), "--key", "keys/publisher.key", "-o", out, cwd=work)

        step("3. A local signed repository, served on loopback")
        run("repo", "init", "repo", "--key", "keys/publisher.key", cwd=work)
        run("repo", "add", "repo", "packages/email_marketing-1.0.0.zip", "packages/email_marketing-1.1.0.zip", "--key", "keys/publisher.key", cwd=work)
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "atomicplug", "serve", "repo", "--port", str(port)], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for_port(port)
        config = work / "atomicplug.toml"
        config.write_text(config.read_text().replace('# repository = "http://127.0.0.1:8002"', f'repository = "http://127.0.0.1:{port}"'))
        print(f"  serving repo/ at http://127.0.0.1:{port}")
        run("available", cwd=work)

        step("4. Install by id from the repository: one transaction (files, tables, registry)")
        run("install", "email_marketing==1.0.0", cwd=work)
        run("list", cwd=work)
        print(f"  tables: {', '.join(tables(work / 'state' / 'app.db'))}")
        print(f"  app/addons/email_marketing -> {(work / 'app/addons/email_marketing').resolve().relative_to(work)}")

        step("5. Upgrade (new migration + upgrade hook), then roll back")
        run("upgrade", "email_marketing", cwd=work)
        print(f"  tables: {', '.join(tables(work / 'state' / 'app.db'))}")
        run("rollback", "email_marketing", cwd=work)
        print(f"  tables: {', '.join(tables(work / 'state' / 'app.db'))}")

        step("6. A tampered package is refused (exit 3) and nothing changes")
        tampered = work / "packages" / "tampered.zip"
        data = bytearray((work / "packages/email_marketing-1.1.0.zip").read_bytes())
        data[100] ^= 0x01
        tampered.write_bytes(bytes(data))
        shutil.copy(work / "packages/email_marketing-1.1.0.zip.minisig", work / "packages/tampered.zip.minisig")
        run("install", "packages/tampered.zip", cwd=work, expect=3)
        run("list", "--json", cwd=work)

        step("7. Verify installed files, see the history, uninstall")
        run("verify", cwd=work)
        run("history", cwd=work)
        run("uninstall", "email_marketing", cwd=work)
        print(f"  tables: {', '.join(tables(work / 'state' / 'app.db')) or '(none)'}")
        run("list", cwd=work)
        print("\nquickstart finished: every step was one transaction.")
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


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
