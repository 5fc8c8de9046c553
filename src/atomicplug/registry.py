"""The registry: what is installed and enabled, one per generation.

The registry is derivable (journal + store + ledger), but it is what readers
(``list``, the application's loader, the frontend index) consult. Each
generation holds its own (``generations/<n>/registry.json``, written once, when
the generation is built); ``<home>/addon_registry.json`` is a link to the live
one, so readers see the registry and the backend view switch together
(docs/design.md "Generations").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from atomicplug.errors import OperationError

__all__ = ["TreeRef", "InstalledPlugin", "Registry"]

SCHEMA = 1


@attrs.frozen
class TreeRef:
    """One immutable store tree: a version of a plugin as installed."""

    version: str
    tree: str  # relative to home: store/<id>/<version>-<sha12>
    sha256: str  # of the package zip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TreeRef:
        return cls(version=data["version"], tree=data["tree"], sha256=data["sha256"])


@attrs.frozen
class InstalledPlugin:
    """A registry entry: the current tree, its state, and the tree it replaced."""

    id: str
    name: str
    current: TreeRef
    enabled: bool
    requires: tuple[str, ...] = ()
    previous: TreeRef | None = None
    txid: str = ""
    installed_at: str = ""
    signed_by: str | None = None  # the publisher key id (hex) that signed the package

    @property
    def version(self) -> str:
        return self.current.version

    @classmethod
    def from_dict(cls, plugin_id: str, data: dict[str, Any]) -> InstalledPlugin:
        previous = data.get("previous")
        return cls(
            id=plugin_id,
            name=data.get("name", plugin_id),
            current=TreeRef.from_dict(data),
            enabled=bool(data.get("enabled", True)),
            requires=tuple(data.get("requires", ())),
            previous=TreeRef.from_dict(previous) if previous else None,
            txid=data.get("txid", ""),
            installed_at=data.get("installed_at", ""),
            signed_by=data.get("signed_by"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.current.version,
            "tree": self.current.tree,
            "sha256": self.current.sha256,
            "enabled": self.enabled,
            "requires": list(self.requires),
            "previous": attrs.asdict(self.previous) if self.previous else None,
            "txid": self.txid,
            "installed_at": self.installed_at,
            "signed_by": self.signed_by,
        }


@attrs.frozen
class Registry:
    """The whole registry: plugins by id; the generation it describes, the txid that made it and its parent."""

    plugins: dict[str, InstalledPlugin] = attrs.field(factory=dict)
    generation: int = 0
    txid: str = ""
    parent: int | None = None

    @classmethod
    def load(cls, path: Path) -> Registry:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        try:
            data = json.loads(raw)
            plugins = {pid: InstalledPlugin.from_dict(pid, entry) for pid, entry in data["plugins"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OperationError(f"registry {path} is damaged ({exc}); run `atomicplug recover`") from exc
        generation = data.get("generation", 0)
        if isinstance(generation, str):  # before generations, "generation" held the last txid
            return cls(plugins=plugins, generation=0, txid=generation)
        return cls(plugins=plugins, generation=int(generation), txid=data.get("txid", ""), parent=data.get("parent"))

    def to_json(self) -> bytes:
        data = {
            "schema": SCHEMA,
            "generation": self.generation,
            "txid": self.txid,
            "parent": self.parent,
            "plugins": {pid: self.plugins[pid].to_dict() for pid in sorted(self.plugins)},
        }
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    def with_entries(self, entries: dict[str, InstalledPlugin | None], *, generation: int, txid: str) -> Registry:
        """The registry of the next generation: ``entries`` applied (None removes), this one as parent."""
        plugins = dict(self.plugins)
        for plugin_id, entry in entries.items():
            if entry is None:
                plugins.pop(plugin_id, None)
            else:
                plugins[plugin_id] = entry
        return Registry(plugins=plugins, generation=generation, txid=txid, parent=self.generation or None)

    def referenced_trees(self) -> set[str]:
        """Store trees the current and previous generation need (gc keeps them)."""
        trees = set()
        for entry in self.plugins.values():
            trees.add(entry.current.tree)
            if entry.previous:
                trees.add(entry.previous.tree)
        return trees
