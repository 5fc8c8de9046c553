"""Shared helpers for the signing and packing tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from atomicplug.minisign import SecretKey

#: Cheap scrypt limits for tests (N=2^14, r=8, p=2): the real default costs ~1 GiB and seconds.
FAST_KDF = {"opslimit": 1 << 20, "memlimit": 1 << 24}

MINISIGN = shutil.which("minisign")
needs_minisign = pytest.mark.skipif(MINISIGN is None, reason="the minisign binary is not installed (CI installs it)")


def minisign(*args: str, password: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run minisign; when stdin is not a tty it reads the password as one stdin line."""
    assert MINISIGN is not None
    return subprocess.run(
        [MINISIGN, *args],
        input="" if password is None else password + "\n",
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def write_key_pair(folder: Path, password: str | None = None, name: str = "test") -> tuple[Path, Path, SecretKey]:
    """Write ``name.pub`` and ``name.key`` made by our code into ``folder``."""
    key = SecretKey.generate()
    pub, sec = folder / f"{name}.pub", folder / f"{name}.key"
    pub.write_text(key.public_key.to_text())
    sec.write_text(key.to_text(password, **FAST_KDF))
    return pub, sec, key


def make_plugin_tree(root: Path, plugin_id: str = "ai_chatbot", version: str = "1.0.0") -> Path:
    """A small valid plugin source folder."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {"id": plugin_id, "name": "AI Chatbot", "version": version}
    (root / "metadata.json").write_text(json.dumps(meta))
    (root / "backend").mkdir(exist_ok=True)
    (root / "backend" / "__init__.py").write_text("ROUTES = []\n")
    (root / "backend" / "models.py").write_text("# models\n" * 50)
    (root / "frontend" / "components").mkdir(parents=True, exist_ok=True)
    (root / "frontend" / "addon.config.ts").write_text("export default {};\n")
    (root / "frontend" / "components" / "Chat.vue").write_text("<template></template>\n")
    (root / "migrations").mkdir(exist_ok=True)
    (root / "migrations" / "up.sql").write_text("CREATE TABLE chat (id INTEGER PRIMARY KEY);\n")
    (root / "migrations" / "down.sql").write_text("DROP TABLE chat;\n")
    (root / "README.md").write_text("# AI Chatbot\n")
    return root
