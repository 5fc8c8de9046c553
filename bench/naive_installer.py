"""The naive installer the seed describes, as the benchmark's baseline.

    python bench/naive_installer.py --root DIR install PLUGIN.zip
    python bench/naive_installer.py --root DIR upgrade PLUGIN.zip
    python bench/naive_installer.py --root DIR rollback PLUGIN_ID
    python bench/naive_installer.py --root DIR uninstall PLUGIN_ID

What it does (and nothing more): ``ZipFile.extractall`` into a temp folder,
``shutil.copytree`` of backend/ and frontend/ into the addon folders, the
migrations' up scripts run with ``sqlite3.executescript``, and the JSON
registry rewritten in place. No signature check, no fsync, no journal, no
validation of names: it is the floor of "what the app did before", and a
crash in the middle leaves a half-installed plugin. Rollback re-extracts the
previous zip (the registry remembers its path) and runs the newer version's
down scripts; uninstall runs every down script. Standard library only, so
its start-up is as cheap as a Python process gets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import zipfile
from pathlib import Path


def _paths(root: Path) -> dict[str, Path]:
    return {
        "backend": root / "app" / "addons",
        "frontend": root / "web" / "src" / "addons",
        "registry": root / "addon_registry.json",
        "db": root / "app.db",
        "cache": root / "naive_cache",
    }


def _load(registry: Path) -> dict:
    return json.loads(registry.read_text()) if registry.is_file() else {"plugins": {}}


def _ups(folder: Path) -> list[Path]:
    migrations = folder / "migrations"
    if (migrations / "up.sql").is_file():
        return [migrations / "up.sql"]
    return sorted(migrations.glob("*.up.sql")) if migrations.is_dir() else []


def _downs(folder: Path) -> list[Path]:
    migrations = folder / "migrations"
    if (migrations / "down.sql").is_file():
        return [migrations / "down.sql"]
    return sorted(migrations.glob("*.down.sql"), reverse=True) if migrations.is_dir() else []


def _copy_in(p: dict[str, Path], src: Path, plugin_id: str) -> None:
    for part in ("backend", "frontend"):
        dest = p[part] / plugin_id
        if dest.exists():
            shutil.rmtree(dest)
        if (src / part).is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src / part, dest)


def _run_scripts(db: Path, scripts: list[Path]) -> None:
    conn = sqlite3.connect(db)
    try:
        for script in scripts:
            conn.executescript(script.read_text())
        conn.commit()
    finally:
        conn.close()


def install(root: Path, zip_path: Path) -> None:
    p = _paths(root)
    registry = _load(p["registry"])
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(tmp)
        src = Path(tmp)
        meta = json.loads((src / "metadata.json").read_text())
        pid = meta["id"]
        old = registry["plugins"].get(pid)
        _copy_in(p, src, pid)
        applied = set(old["migrations"]) if old else set()
        ups = [u for u in _ups(src) if u.name not in applied]
        _run_scripts(p["db"], ups)
        # keep the zip path so rollback can find the previous version (the naive way: no store)
        registry["plugins"][pid] = {
            "version": meta["version"],
            "enabled": True,
            "zip": str(zip_path.resolve()),
            "previous_zip": old["zip"] if old else None,
            "migrations": sorted(applied | {u.name for u in ups}),
        }
    p["registry"].write_text(json.dumps(registry, indent=2))


def rollback(root: Path, plugin_id: str) -> None:
    p = _paths(root)
    registry = _load(p["registry"])
    entry = registry["plugins"][plugin_id]
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        with zipfile.ZipFile(entry["previous_zip"]) as archive:
            archive.extractall(tmp)
        src = Path(tmp)
        meta = json.loads((src / "metadata.json").read_text())
        keep = {u.name for u in _ups(src)}
        current = Path(tmp + "-current")
        with zipfile.ZipFile(entry["zip"]) as archive:
            archive.extractall(current)
        try:
            downs = [d for d in _downs(current) if d.name.replace(".down.sql", ".up.sql") not in keep]
            _run_scripts(p["db"], downs)
        finally:
            shutil.rmtree(current)
        _copy_in(p, src, plugin_id)
    registry["plugins"][plugin_id] = {
        "version": meta["version"],
        "enabled": True,
        "zip": entry["previous_zip"],
        "previous_zip": entry["zip"],
        "migrations": sorted(keep),
    }
    p["registry"].write_text(json.dumps(registry, indent=2))


def uninstall(root: Path, plugin_id: str) -> None:
    p = _paths(root)
    registry = _load(p["registry"])
    entry = registry["plugins"].pop(plugin_id)
    backend = p["backend"] / plugin_id
    # the naive installer keeps no copy of the down scripts: read them from the zip again
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        with zipfile.ZipFile(entry["zip"]) as archive:
            archive.extractall(tmp)
        _run_scripts(p["db"], _downs(Path(tmp)))
    for folder in (backend, p["frontend"] / plugin_id):
        if folder.exists():
            shutil.rmtree(folder)
    p["registry"].write_text(json.dumps(registry, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="naive_installer")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("command", choices=("install", "upgrade", "rollback", "uninstall"))
    parser.add_argument("target")
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    if args.command in ("install", "upgrade"):
        install(args.root, Path(args.target))
    elif args.command == "rollback":
        rollback(args.root, args.target)
    else:
        uninstall(args.root, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
