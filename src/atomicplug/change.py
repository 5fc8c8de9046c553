"""A plan and its changes: the one value each stage of a transaction reads (docs/design.md "One transaction").

One plugin's change in a transaction is one frozen :class:`Change`: the
registry entry before and after, the package to stage, and the options that
decide its database work. Everything else is derived from it — the trees the
database step reads, the line the CLI prints, the history and ledger summary,
what an install hook is told — so no stage keeps its own copy. A
:class:`Plan` is pure data: it is written into the journal's ``begin`` record,
and recovery finishes or undoes the transaction from it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from atomicplug.registry import InstalledPlugin, Registry, TreeRef

__all__ = ["Action", "Change", "Plan", "describe_step"]

#: What a change does to the database: ``none`` (enable/disable) touches no table.
Action = Literal["install", "upgrade", "downgrade", "uninstall", "none"]


@attrs.frozen
class Change:
    """One plugin's change: its registry entry before and after, and how to get there.

    ``package`` is the sha256 of the blob to extract when this transaction makes
    the store tree (``stage_tree``); ``keep_data`` leaves an uninstalled plugin's
    tables; ``allow_downgrade`` lets kept data newer than the package be reverted.
    """

    plugin_id: str
    action: Action
    before: InstalledPlugin | None
    after: InstalledPlugin | None
    package: str | None = None
    stage_tree: bool = False
    keep_data: bool = False
    allow_downgrade: bool = False

    # -- derived ------------------------------------------------------------------
    @property
    def old_version(self) -> str | None:
        return self.before.version if self.before else None

    @property
    def new_version(self) -> str | None:
        return self.after.version if self.after else None

    def old_tree(self, home: Path) -> Path | None:
        """The installed store tree (migrations and hooks of the version going away)."""
        return home / self.before.current.tree if self.before else None

    def new_tree(self, home: Path) -> Path | None:
        """The store tree this change installs (None for an uninstall)."""
        return home / self.after.current.tree if self.after else None

    def describe(self) -> str:
        """One line, as the CLI prints it: ``upgrade shop 1.0.0 -> 1.1.0``."""
        return describe_step(self.summary())

    def summary(self) -> dict[str, Any]:
        """What history and the database ledger record of this change.

        A change of neither version nor tables (``none``) also records whether the
        plugin was enabled before and its rollback target before and after: a
        generation rollback may change only that target (``plan_generation``).
        """
        summary = {
            "id": self.plugin_id,
            "action": self.action,
            "from": self.old_version,
            "to": self.new_version,
            "enabled": self.after.enabled if self.after else None,
            "keep_data": self.keep_data,
        }
        if self.action == "none" and self.before is not None and self.after is not None:
            summary["was_enabled"] = self.before.enabled
            summary["rollback_target"] = [_version_of(self.before.previous), _version_of(self.after.previous)]
        return summary

    # -- journal form ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin_id": self.plugin_id,
            "action": self.action,
            "before": self.before.to_dict() if self.before else None,
            "after": self.after.to_dict() if self.after else None,
            "package": self.package,
            "stage_tree": self.stage_tree,
            "keep_data": self.keep_data,
            "allow_downgrade": self.allow_downgrade,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        pid = data["plugin_id"]
        return cls(
            plugin_id=pid,
            action=data["action"],
            before=InstalledPlugin.from_dict(pid, data["before"]) if data["before"] else None,
            after=InstalledPlugin.from_dict(pid, data["after"]) if data["after"] else None,
            package=data["package"],
            stage_tree=data["stage_tree"],
            keep_data=data["keep_data"],
            allow_downgrade=data.get("allow_downgrade", False),
        )


@attrs.frozen
class Plan:
    """Everything a transaction will do, in order (dependencies first)."""

    txid: str
    operation: str
    changes: tuple[Change, ...]
    rehearse: bool = True
    generation: int = 0  # the generation this plan builds (0: the runner picks the next one under the lock)
    #: False for a cluster node's sync: the writer already ran the database part, so the point of
    #: no return is the journal's own ``committed`` record (docs/design.md "Beyond one machine").
    database: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "steps": [c.to_dict() for c in self.changes],
            "rehearse": self.rehearse,
            "generation": self.generation,
            "database": self.database,
        }

    @classmethod
    def from_dict(cls, txid: str, data: dict[str, Any]) -> Plan:
        return cls(
            txid=txid,
            operation=data["operation"],
            changes=tuple(Change.from_dict(c) for c in data["steps"]),
            rehearse=data.get("rehearse", True),
            generation=int(data.get("generation", 0)),
            database=bool(data.get("database", True)),
        )

    def registry_after(self, registry: Registry) -> Registry:
        """The registry of the generation this plan builds (pure: recovery recomputes it from the parent)."""
        entries = {change.plugin_id: change.after for change in self.changes}
        return registry.with_entries(entries, generation=self.generation, txid=self.txid)

    def describe(self) -> tuple[str, ...]:
        return tuple(change.describe() for change in self.changes)


def describe_step(step: Mapping[str, Any]) -> str:
    """One line for a change as history records it (:meth:`Change.summary`, a configure's entry):
    what the CLI printed when it ran (``upgrade shop 1.0.0 -> 1.1.0``, ``disable shop``,
    ``configure shop: api_key, limit``)."""
    plugin_id, action, old, new = step["id"], step["action"], step.get("from"), step.get("to")
    if action == "configure":
        return f"configure {plugin_id}: {', '.join(step.get('settings') or ()) or 'nothing'}"
    if action == "none":
        enabled, target = step.get("enabled"), step.get("rollback_target")
        if step.get("was_enabled") == enabled and target:  # neither enabled nor disabled: its rollback target changed
            return f"keep {plugin_id} {new} (rollback target: {target[0] or 'none'} -> {target[1] or 'none'})"
        return f"{'enable' if enabled else 'disable'} {plugin_id}"
    if old and new:
        return f"{action} {plugin_id} {old} -> {new}"
    return f"{action} {plugin_id} {new or old}"


def _version_of(tree: TreeRef | None) -> str | None:
    return tree.version if tree is not None else None
