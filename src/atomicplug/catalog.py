"""What is installed, described: the registry plus each current tree's metadata.json (read-only).

A front end lists installed plugins with their description, category and
price even when the repository cannot be reached (issue 16): those facts are
in the installed tree's ``metadata.json``, which the transaction verified when
it staged the tree. This module only reads (``addon_registry.json`` and the
trees it names); it takes no lock, since the registry is replaced atomically
and store trees are immutable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from atomicplug.registry import InstalledPlugin, Registry

if TYPE_CHECKING:
    from atomicplug.config import Config

__all__ = ["InstalledDescription", "installed_catalog", "tree_path"]

#: metadata.json is small (the package format caps it); a bigger file is not read.
_MAX_METADATA_BYTES = 1024 * 1024


@attrs.frozen
class InstalledDescription:
    """One installed plugin: its registry entry and the metadata.json of its current tree."""

    entry: InstalledPlugin
    metadata: dict[str, Any]  # empty when the tree's metadata.json is missing or unreadable

    @property
    def id(self) -> str:
        return self.entry.id

    def field(self, name: str, default: Any = None) -> Any:
        return self.metadata.get(name, default)


def tree_path(config: Config, entry: InstalledPlugin) -> Path:
    """The folder of ``entry``'s current tree (its ``tree`` is relative to the home)."""
    return config.home / entry.current.tree


def installed_catalog(config: Config) -> dict[str, InstalledDescription]:
    """Installed plugins by id, each with its current tree's metadata.json as a dict."""
    registry = Registry.load(config.registry_path)
    return {pid: InstalledDescription(entry, _read_metadata(tree_path(config, entry))) for pid, entry in sorted(registry.plugins.items())}


def _read_metadata(tree: Path) -> dict[str, Any]:
    try:
        with open(tree / "metadata.json", "rb") as handle:
            raw = handle.read(_MAX_METADATA_BYTES + 1)
        data = json.loads(raw) if len(raw) <= _MAX_METADATA_BYTES else None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
