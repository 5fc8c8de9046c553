"""Helpers for testing plugins and atomicplug itself: build real signed packages, crash or fail operations.

Shipped in the library (like ``structlog.testing``) so plugin authors can
test their packages against a real installer in a temporary folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from atomicplug.minisign import SecretKey

__all__ = [
    "PluginSpec",
    "write_plugin_source",
    "build_package",
    "KeyPair",
    "make_keypair",
    "make_home",
    "snapshot",
    "table_names",
    "count_crash_points",
    "crash_at",
    "fail_at",
    "build_repository",
    "served_repository",
]


@attrs.frozen
class KeyPair:
    """A publisher key pair on disk (no password)."""

    secret: SecretKey
    public_path: Path
    secret_path: Path


def make_keypair(folder: Path, name: str = "publisher") -> KeyPair:
    folder.mkdir(parents=True, exist_ok=True)
    secret = SecretKey.generate()
    public_path = folder / f"{name}.pub"
    secret_path = folder / f"{name}.key"
    public_path.write_text(secret.public_key.to_text())
    secret_path.write_text(secret.to_text(None))
    return KeyPair(secret=secret, public_path=public_path, secret_path=secret_path)


@attrs.frozen
class PluginSpec:
    """A plugin's source tree, described in code.

    ``migrations`` maps a migration name (``"0001_init"``) to ``(up_sql, down_sql)``;
    ``files`` adds arbitrary files by relative path (``"backend/routes.py"``).
    """

    id: str
    version: str = "1.0.0"
    requires: tuple[str, ...] = ()
    migrations: Mapping[str, tuple[str, str]] = attrs.field(factory=dict)
    files: Mapping[str, str | bytes] = attrs.field(factory=dict)
    permissions: tuple[str, ...] | None = None
    install_hook: str | None = None
    metadata_extra: Mapping[str, Any] = attrs.field(factory=dict)

    def metadata(self) -> dict[str, Any]:
        permissions = self.permissions
        if permissions is None:
            permissions = ("database.create_tables",) if (self.migrations or self.install_hook) else ()
        return {
            "id": self.id,
            "name": self.id.replace("_", " ").title(),
            "version": self.version,
            "author": "atomicplug tests",
            "description": f"test plugin {self.id}",
            "category": "testing",
            "price": 0,
            "requires": list(self.requires),
            "backend": {"models": [], "routes": [], "dependencies": []},
            "frontend": {"routes": [], "components": [], "dependencies": {}},
            "permissions": list(permissions),
            **self.metadata_extra,
        }


def write_plugin_source(spec: PluginSpec, folder: Path) -> Path:
    """Write the plugin's source tree (seed layout) into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps(spec.metadata(), indent=2))
    files: dict[str, str | bytes] = {
        "backend/__init__.py": f'"""{spec.id} backend."""\nVERSION = "{spec.version}"\n',
        "frontend/addon.config.ts": (
            f"export default {{ id: '{spec.id}', version: '{spec.version}', title: '{spec.id}', routes: [] }};\n"
        ),
    }
    for name, (up, down) in spec.migrations.items():
        files[f"migrations/{name}.up.sql"] = up
        files[f"migrations/{name}.down.sql"] = down
    if spec.install_hook is not None:
        files["backend/install.py"] = spec.install_hook
    files.update(spec.files)
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return folder


def build_package(spec: PluginSpec, out_dir: Path, key: SecretKey | None) -> Path:
    """Write, pack and sign ``spec``; returns the zip (``.minisig`` beside it when ``key``).

    Its source folder is emptied first: a second spec of the same id and version must not
    carry the first one's files.
    """
    import shutil

    from atomicplug.packing import pack

    folder = out_dir / "src" / f"{spec.id}-{spec.version}"
    shutil.rmtree(folder, ignore_errors=True)
    source = write_plugin_source(spec, folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    return pack(source, key, out_dir / f"{spec.id}-{spec.version}.zip").zip_path


def make_home(root: Path, keys: Sequence[Path] = (), **overrides: Any) -> Path:
    """Write an ``atomicplug.toml`` for the embedded layout under ``root``; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "home": "state",
        "backend_addons": "app/addons",
        "frontend_addons": "web/src/addons",
        "trusted_keys": [str(k) for k in keys],
        "lock_timeout": 5,
    }
    data.update(overrides)
    lines = []
    for key, value in data.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = root / "atomicplug.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(config: Any) -> dict[str, Any]:
    """Everything a user can observe of the installed state, for old/new comparisons.

    Registry (id → version, enabled), where each addon entry points (id → version
    of the tree it links to; for the frontend, the tree index.ts imports), the names in
    the frontend addon folder (a leftover ``index.next.ts`` shows) and the database
    tables other than the ledger.
    """
    import os

    from atomicplug.frontend.contract import INDEX_NAME
    from atomicplug.frontend.index import load_index
    from atomicplug.registry import Registry

    registry = Registry.load(config.registry_path)
    links: dict[str, str | None] = {}
    for label, folder in (("backend", config.backend_addons),):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            target = os.readlink(entry) if entry.is_symlink() else "<not a link>"
            links[f"{label}/{entry.name}"] = Path(target).parent.name if entry.is_symlink() else target
    index = load_index(config.frontend_addons / INDEX_NAME)
    for plugin_id, tree in sorted(index.trees.items() if index is not None else ()):
        links[f"frontend/{plugin_id}"] = Path(tree).name
    frontend = config.frontend_addons
    return {
        "plugins": {pid: (e.version, e.enabled) for pid, e in sorted(registry.plugins.items())},
        "links": links,
        "frontend_files": sorted(os.listdir(frontend)) if frontend.is_dir() else [],
        "tables": sorted(table_names(config.database_url)),
    }


def table_names(database_url: str, include_ledger: bool = False) -> set[str]:
    """Tables in the database (as committed), without atomicplug's own ledger unless asked."""
    from atomicplug.database.engine import connect, sqlite_file_missing
    from atomicplug.database.ledger import LEDGER_TABLES, existing_tables
    from atomicplug.database.schema import snapshot

    if sqlite_file_missing(database_url):
        return set()  # never create the database file just by looking
    with connect(database_url) as db:
        names = set(snapshot(db).tables)
        if include_ledger:
            names |= existing_tables(db, sorted(LEDGER_TABLES))
    return names


def count_crash_points(operation: Any) -> int:
    """Run ``operation()`` in this process and return how many crash points it passed."""
    from atomicplug import faults

    faults.arm(0)
    operation()
    return faults.count()


def crash_at(operation: Any, point: int) -> bool:
    """Run ``operation()`` in a forked child that SIGKILLs itself at crash point ``point``.

    Returns True when the child died by SIGKILL there, False when it finished
    first. The parent's state is untouched: what the child wrote is on disk,
    exactly as after a real crash.
    """
    import os
    import signal

    from atomicplug import faults

    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            faults.arm(point)
            operation()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return True
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return False
    raise AssertionError(f"crash child for point {point} failed with status {status}")


def fail_at(operation: Any, point: int, error: Any, *, then: Any = None) -> Exception | None:
    """Run ``operation()`` in this process with crash point ``point`` raising ``error``.

    ``error`` is an errno (``errno.ENOSPC``: ``OSError(28, ...)`` with no file
    name, as ``os.fsync(fd)`` raises it) or a function returning the exception
    (a database driver's error); with ``then``, every later crash point raises
    too (a disk that stays broken: rolling back fails as well). Returns what
    ``operation()`` raised, or None when it finished (``point`` past its last
    crash point, or a failure it tolerated). Disarmed afterwards: the disk is
    repaired.
    """
    from atomicplug import faults

    faults.arm(point, error, then=then)
    try:
        operation()
    except Exception as exc:  # noqa: BLE001 - returned for the caller to judge
        return exc
    finally:
        faults.arm(0)
    return None


def build_repository(repo: Path, packages: Sequence[Path], key: SecretKey) -> Path:
    """A signed repository folder holding ``packages`` (each with its ``.minisig``)."""
    from atomicplug.repository.repo_admin import add_packages, init_repository

    init_repository(repo, key)
    if packages:
        add_packages(repo, list(packages), key)
    return repo


class served_repository:  # noqa: N801 - used as a context manager, like open()
    """Serve a repository folder on a free loopback port in a thread: ``with served_repository(p) as url``."""

    def __init__(self, repo: Path) -> None:
        from atomicplug.repository.server import make_server

        self._server = make_server(repo, "127.0.0.1", 0, quiet=True)

    def __enter__(self) -> str:
        import threading

        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return str(self._server.url)

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
