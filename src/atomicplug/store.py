"""The immutable store: ``<home>/store/<id>/<version>-<sha12>/`` trees.

A tree is built once in staging (extracted, backend precompiled to .pyc,
file record written), fsync'd and renamed into place; it is never written
again, so a symlink to it is a complete, stable view of one version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from atomicplug.package_record import RecordEntry

__all__ = ["tree_name", "plugin_trees", "RECORD_NAME", "write_record", "read_record", "sha256_file"]

RECORD_NAME = ".atomicplug-record.json"
_CHUNK = 1 << 16


def tree_name(plugin_id: str, version: str, sha256: str) -> str:
    """Relative path of a tree inside home."""
    return f"store/{plugin_id}/{version}-{sha256[:12]}"


def plugin_trees(home: Path, plugin_id: str) -> tuple[Path, ...]:
    """Every complete store tree of ``plugin_id`` (``<home>/store/<id>/*/``), newest version first:
    where the downs of kept data may still be found (docs/design.md "Migrations")."""
    from packaging.version import InvalidVersion, Version

    folder = home / "store" / plugin_id
    trees = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.is_dir() else []

    def version(tree: Path) -> tuple[int, Version | str]:
        text = tree.name.rsplit("-", 1)[0]
        try:
            return (1, Version(text))
        except InvalidVersion:
            return (0, text)

    return tuple(sorted(trees, key=lambda t: (version(t), t.name), reverse=True))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_record(tree: Path, files: list[RecordEntry]) -> None:
    """Write the tree's file list (the caller fsyncs the tree).

    Entry by entry, the bytes ``json.dumps({"files": [...]}, indent=1)`` gives:
    encoded whole, 6000 entries took ~5 MiB at once, the peak of a large install.
    """
    with open(tree / RECORD_NAME, "w", encoding="utf-8") as handle:
        handle.write('{\n "files": [')
        for i, f in enumerate(sorted(files, key=lambda f: f.path)):
            handle.write(",\n  {\n" if i else "\n  {\n")
            handle.write(f'   "path": {json.dumps(f.path)},\n   "size": {int(f.size)},\n   "sha256": {json.dumps(f.sha256)}\n  }}')
        handle.write("\n ]\n}\n" if files else "]\n}\n")


def read_record(tree: Path) -> list[RecordEntry]:
    data = json.loads((tree / RECORD_NAME).read_text(encoding="utf-8"))
    return [RecordEntry(**entry) for entry in data["files"]]
