"""The desired state: which plugins, at which version and package, every node should show.

docs/design.md "Beyond one machine". A writer stores it in the same database
transaction as its migrations; a node reads it and converges. Rows come from
the database, which is not trusted to run code on a node: every field is
checked here (ids, PEP 440 versions, sha256 names), store paths are computed
from them and never read, and a plugin's name and requirements come from the
package the node verified itself (:meth:`DesiredPlugin.entry`).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import attrs
from packaging.version import InvalidVersion, Version

from atomicplug.cluster import tables
from atomicplug.errors import TrustError
from atomicplug.registry import InstalledPlugin, Registry, TreeRef
from atomicplug.store import tree_name

if TYPE_CHECKING:
    from atomicplug.database.engine import Database
    from atomicplug.metadata import Metadata

__all__ = ["DesiredPlugin", "DesiredState", "desired_number", "read_desired", "read_generation", "write_desired"]

_ID = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TEXT = re.compile(r"^[\x20-\x7e]{0,64}$")


def _checked(kind: str, value: Any, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise TrustError(f"the cluster's desired state has a bad {kind}: expected {pattern.pattern}, got {value!r}")
    return value


def _version(value: Any) -> str:
    text = _checked("version", value, _TEXT)
    try:
        Version(text)
    except InvalidVersion:
        raise TrustError(f"the cluster's desired state has a bad version: expected PEP 440, got {text!r}") from None
    if "/" in text or text != text.strip():
        raise TrustError(f"the cluster's desired state has a bad version: got {text!r}")
    return text


@attrs.frozen
class DesiredPlugin:
    """One plugin of the desired state: a row of ``atomicplug_cluster_plugins``."""

    plugin_id: str
    version: str
    sha256: str
    enabled: bool
    previous: tuple[str, str] | None = None  # (version, sha256) of the tree it replaced
    txid: str = ""
    installed_at: str = ""

    @classmethod
    def from_entry(cls, entry: InstalledPlugin) -> DesiredPlugin:
        previous = (entry.previous.version, entry.previous.sha256) if entry.previous else None
        return cls(entry.id, entry.version, entry.current.sha256, entry.enabled, previous, entry.txid, entry.installed_at)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DesiredPlugin:
        """Validate a row (or its JSON form); TrustError names what is wrong."""
        previous = None
        if row.get("previous_version") is not None or row.get("previous_sha256") is not None:
            previous = (_version(row.get("previous_version")), _checked("sha256", row.get("previous_sha256"), _SHA256))
        enabled = row.get("enabled")
        if not isinstance(enabled, bool):
            raise TrustError(f"the cluster's desired state has a bad 'enabled': expected true or false, got {enabled!r}")
        return cls(
            plugin_id=_checked("plugin id", row.get("plugin_id"), _ID),
            version=_version(row.get("version")),
            sha256=_checked("sha256", row.get("sha256"), _SHA256),
            enabled=enabled,
            previous=previous,
            txid=_checked("txid", row.get("txid") or "", _TEXT),
            installed_at=_checked("installed_at", row.get("installed_at") or "", _TEXT),
        )

    def to_row(self) -> dict[str, Any]:
        return {
            "plugin_id": self.plugin_id,
            "version": self.version,
            "sha256": self.sha256,
            "enabled": self.enabled,
            "previous_version": self.previous[0] if self.previous else None,
            "previous_sha256": self.previous[1] if self.previous else None,
            "txid": self.txid,
            "installed_at": self.installed_at,
        }

    @property
    def tree(self) -> str:
        """The store tree (relative to home), computed: a path from the database is never used."""
        return tree_name(self.plugin_id, self.version, self.sha256)

    def entry(self, metadata: Metadata) -> InstalledPlugin:
        """This node's registry entry, named and linked by the package's own verified metadata.

        Raises TrustError when the package is not the plugin and version the row says.
        """
        if metadata.id != self.plugin_id or metadata.version != self.version:
            raise TrustError(
                f"package {self.sha256[:12]} holds {metadata.id} {metadata.version}, but the cluster's desired "
                f"state says {self.plugin_id} {self.version}: refused"
            )
        previous = None
        if self.previous is not None:
            version, sha256 = self.previous
            previous = TreeRef(version=version, tree=tree_name(self.plugin_id, version, sha256), sha256=sha256)
        return InstalledPlugin(
            id=self.plugin_id,
            name=metadata.name,
            current=TreeRef(version=self.version, tree=self.tree, sha256=self.sha256),
            enabled=self.enabled,
            requires=tuple(str(r) for r in metadata.requires),
            previous=previous,
            txid=self.txid,
            installed_at=self.installed_at,
        )


@attrs.frozen
class DesiredState:
    """A generation of the cluster: its number, the txid that made it, its plugins by id."""

    generation: int
    txid: str
    plugins: dict[str, DesiredPlugin] = attrs.field(factory=dict)
    xid: int | None = None  # the writer's database transaction (announced generations)

    @classmethod
    def from_registry(cls, registry: Registry, *, generation: int, txid: str) -> DesiredState:
        plugins = {pid: DesiredPlugin.from_entry(entry) for pid, entry in registry.plugins.items()}
        return cls(generation=generation, txid=txid, plugins=plugins)

    def matches(self, registry: Registry) -> bool:
        """Does ``registry`` (a node's live one) show exactly these plugins?"""
        mine = {pid: DesiredPlugin.from_entry(entry) for pid, entry in registry.plugins.items()}
        return mine == self.plugins

    def plugins_json(self) -> str:
        return json.dumps([self.plugins[pid].to_row() for pid in sorted(self.plugins)], sort_keys=True)

    @classmethod
    def from_json(cls, generation: int, txid: str, text: str, xid: int | None = None) -> DesiredState:
        try:
            rows = json.loads(text)
        except ValueError as exc:
            raise TrustError(f"the cluster's generation {generation} is not valid JSON ({exc})") from exc
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise TrustError(f"the cluster's generation {generation}: expected a list of plugin rows")
        return cls(generation, txid, _by_id(DesiredPlugin.from_row(row) for row in rows), xid)


def _by_id(plugins: Any) -> dict[str, DesiredPlugin]:
    found: dict[str, DesiredPlugin] = {}
    for plugin in plugins:
        if plugin.plugin_id in found:
            raise TrustError(f"the cluster's desired state names {plugin.plugin_id} twice")
        found[plugin.plugin_id] = plugin
    return found


_COLUMNS = ("plugin_id", "version", "sha256", "enabled", "previous_version", "previous_sha256", "txid", "installed_at")


def read_desired(db: Database) -> DesiredState | None:
    """The committed desired state, read in one statement (one snapshot); None before the first write."""
    columns = ", ".join(f"p.{c}" for c in _COLUMNS)
    rows = db.execute(
        f"SELECT s.generation, s.txid, {columns} FROM {db.qualified(tables.STATE)} AS s "
        f"LEFT JOIN {db.qualified(tables.PLUGINS)} AS p ON true"
    )
    if not rows:
        return None
    generation, txid = int(rows[0][0]), str(rows[0][1])
    plugins = (DesiredPlugin.from_row(dict(zip(_COLUMNS, row[2:]))) for row in rows if row[2] is not None)
    return DesiredState(generation=generation, txid=txid, plugins=_by_id(plugins))


def desired_number(db: Database) -> int:
    """Just the desired generation's number (0 before the first write), whatever its rows hold."""
    rows = db.execute(f"SELECT generation FROM {db.qualified(tables.STATE)}")
    return int(rows[0][0]) if rows else 0


def read_generation(db: Database, generation: int) -> tuple[str, DesiredState] | None:
    """(state, content) of an announced or committed generation; None when unknown."""
    rows = db.execute(
        f"SELECT state, txid, xid, plugins FROM {db.qualified(tables.GENERATIONS)} WHERE generation = ?", [generation]
    )
    if not rows:
        return None
    state, txid, xid, plugins = rows[0]
    return str(state), DesiredState.from_json(generation, str(txid), str(plugins), None if xid is None else int(xid))


def write_desired(db: Database, desired: DesiredState) -> None:
    """Replace the desired state (inside the writer's locked transaction) and record the generation committed."""
    db.execute(f"DELETE FROM {db.qualified(tables.PLUGINS)}")
    marks = ", ".join("?" for _ in _COLUMNS)
    for pid in sorted(desired.plugins):
        row = desired.plugins[pid].to_row()
        db.execute(f"INSERT INTO {db.qualified(tables.PLUGINS)} ({', '.join(_COLUMNS)}) VALUES ({marks})", [row[c] for c in _COLUMNS])
    db.execute(
        f"INSERT INTO {db.qualified(tables.STATE)} (id, generation, txid, committed_at) "
        "VALUES (1, ?, ?, pg_catalog.clock_timestamp()) "
        "ON CONFLICT (id) DO UPDATE SET generation = EXCLUDED.generation, txid = EXCLUDED.txid, committed_at = EXCLUDED.committed_at",
        [desired.generation, desired.txid],
    )
    db.execute(
        f"INSERT INTO {db.qualified(tables.GENERATIONS)} (generation, txid, xid, state, plugins, announced_at, committed_at) "
        "VALUES (?, ?, NULL, 'committed', ?, pg_catalog.clock_timestamp(), pg_catalog.clock_timestamp()) "
        "ON CONFLICT (generation) DO UPDATE SET txid = EXCLUDED.txid, state = 'committed', plugins = EXCLUDED.plugins, "
        "committed_at = EXCLUDED.committed_at",
        [desired.generation, desired.txid, desired.plugins_json()],
    )
