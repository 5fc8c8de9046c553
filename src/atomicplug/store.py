"""The immutable store: ``<home>/store/<id>/<version>-<sha12>/`` trees.

A tree is built once in staging (extracted, backend precompiled to .pyc,
file record written: :mod:`atomicplug.tree_record`), fsync'd and renamed into place; it is never written
again, so a symlink to it is a complete, stable view of one version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from atomicplug.tree_record import RECORD_NAME, read_record, write_record

__all__ = ["tree_name", "plugin_trees", "RECORD_NAME", "write_record", "read_record", "sha256_file"]

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
