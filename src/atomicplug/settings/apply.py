"""Settings written by transactions, changed by ``configure``, read for backends and for people.

docs/design.md "Plugin settings". An install that brings settings checks them
before its transaction begins (:func:`prepare`) and writes them in its own
database transaction (:class:`SettingsWork`, run by the database step after
the migrations), so a plugin never exists without the settings it was
installed with, nor the reverse. ``configure`` is a small database
transaction of its own, recorded in the ledger's ``atomicplug_transactions``
and in ``history.jsonl`` with the names of the fields it changed (never a value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from atomicplug.errors import DatabaseError, NotInstalledError, SettingsError
from atomicplug.settings.records import InstallationRecord, delete_records, ensure_table, read_records, write_record
from atomicplug.settings.view import SettingsView

if TYPE_CHECKING:
    from atomicplug.change import Change, Plan
    from atomicplug.config import Config
    from atomicplug.database.engine import Database
    from atomicplug.registry import InstalledPlugin, Registry
    from atomicplug.settings.schema import SettingsSchema

__all__ = ["Given", "SettingsWork", "prepare", "plan_schemas", "configure", "view", "effective_settings", "schema_of"]

#: Settings an install was given: plugin id → field → value (None: back to the default).
Given = Mapping[str, Mapping[str, Any]]

_INSTALLS = ("install", "upgrade", "downgrade")


def schema_of(config: Config, entry: InstalledPlugin) -> SettingsSchema | None:
    """The settings schema of ``entry``'s current store tree (None: none declared, or unreadable)."""
    from atomicplug.errors import MetadataError
    from atomicplug.metadata import Metadata

    try:
        return Metadata.from_json_bytes((config.home / entry.current.tree / "metadata.json").read_bytes()).settings
    except (OSError, MetadataError):
        return None


@attrs.frozen
class SettingsWork:
    """The settings part of one transaction's database work: rows written for what it installs
    (given values merged into the stored ones), deleted for what it uninstalls without keeping data."""

    changes: tuple[Change, ...]
    given: Given = attrs.field(factory=dict, hash=False)
    by: str | None = None
    schemas: Mapping[str, SettingsSchema | None] = attrs.field(factory=dict, hash=False)

    def __call__(self, db: Database) -> None:
        from atomicplug.database.ledger import now

        ids = [c.plugin_id for c in self.changes]
        records = self.records(read_records(db, ids), now())
        if records:
            ensure_table(db)
            for record in records:
                write_record(db, record)
        delete_records(db, [c.plugin_id for c in self.changes if c.action == "uninstall" and not c.keep_data])

    def records(self, stored: Mapping[str, InstallationRecord], when: str) -> list[InstallationRecord]:
        """The rows to write, given the stored ones; SettingsError when a plugin's values do not fit its schema."""
        result = []
        for change in self.changes:
            if change.action not in _INSTALLS:
                continue
            pid = change.plugin_id
            base = stored.get(pid)
            given = dict(self.given.get(pid, {}))
            schema = self.schemas.get(pid)
            settings: dict[str, Any] = dict(base.settings) if base else {}
            if schema is not None:
                settings = schema.check(pid, schema.merge(settings, given), given=given)
            elif not given:
                if pid in self.schemas:  # known to declare none: it keeps none (a secret included)
                    settings = {}
            else:
                raise SettingsError(f"{pid}: setting '{sorted(given)[0]}' is not a setting of {pid} (it declares no settings)",
                                    plugins=(pid,), fields=tuple(sorted(given)))
            if change.action == "install" or base is None:
                result.append(InstallationRecord(pid, settings, self.by, when, self.by, when))
            elif given or settings != dict(base.settings):
                result.append(attrs.evolve(base, settings=settings, updated_by=self.by, updated_at=when))
        return result


def prepare(config: Config, plan: Plan, given: Given | None = None, by: str | None = None,
            schemas: Mapping[str, SettingsSchema | None] | None = None) -> SettingsWork | None:
    """Check ``given`` against the schemas of what ``plan`` installs, before it runs; the work for its
    database transaction (None when there is nothing to write or delete).

    ``schemas`` by plugin id (the packages' metadata); a plugin not in it is
    read from its store tree. Raises SettingsError (every problem of the first
    plugin with one) for values a schema refuses, a required setting without a
    value, or settings for a plugin the plan does not install.
    """
    given = given or {}
    installing = {c.plugin_id: c for c in plan.changes if c.action in _INSTALLS and c.after is not None}
    strays = sorted(set(given) - set(installing))
    if strays:
        raise SettingsError(
            f"settings were given for {strays[0]}, which this operation does not install or upgrade (change them with configure)",
            plugins=tuple(strays),
        )
    known = plan_schemas(config, plan, schemas)
    work = SettingsWork(changes=plan.changes, given=given, by=by, schemas=known)
    needs_check = any(known.get(pid) is not None or given.get(pid) for pid in installing)
    if needs_check:
        work.records(_stored(config, sorted(installing)), "")  # raises what the transaction would
    removes = any(c.action == "uninstall" and not c.keep_data for c in plan.changes)
    return work if installing or removes else None


def plan_schemas(config: Config, plan: Plan, schemas: Mapping[str, SettingsSchema | None] | None = None) -> dict[str, SettingsSchema | None]:
    """The settings schema of each plugin ``plan`` installs: from ``schemas`` (the packages'
    metadata), else from its store tree."""
    known = dict(schemas or {})
    for change in plan.changes:
        if change.action in _INSTALLS and change.after is not None and change.plugin_id not in known:
            if (config.home / change.after.current.tree / "metadata.json").is_file():
                known[change.plugin_id] = schema_of(config, change.after)
            # else a tree staged later from a fetched package: its schema unknown here, the stored values stay
    return known


def _stored(config: Config, plugin_ids: Sequence[str]) -> dict[str, InstallationRecord]:
    """The stored rows of ``plugin_ids``, read on a connection of their own (nothing is written)."""
    from atomicplug.database.engine import connect, first_line, sqlite_file_missing

    if sqlite_file_missing(config.database_url):
        return {}
    try:
        with connect(config.database_url, max(float(config.lock_timeout), 1.0)) as db:
            return read_records(db, plugin_ids)
    except DatabaseError:
        raise
    except Exception as exc:
        raise DatabaseError(f"cannot read the plugins' settings: {first_line(exc)}") from exc


def effective_settings(config: Config, entries: Sequence[InstalledPlugin]) -> dict[str, dict[str, Any]]:
    """What each plugin's backend gets (defaults overridden by stored values), for the plugins of
    ``entries`` that declare settings; secrets included: this is for the plugin, never for display."""
    schemas = {e.id: s for e in entries if (s := schema_of(config, e)) is not None}
    if not schemas:
        return {}
    stored = _stored(config, sorted(schemas))
    return {pid: schema.effective(stored[pid].settings if pid in stored else {}) for pid, schema in schemas.items()}


def view(config: Config, registry: Registry, plugin_id: str) -> SettingsView:
    """The settings of an installed plugin as people may see them: secrets only as set or not set."""
    entry = registry.plugins.get(plugin_id)
    if entry is None:
        raise NotInstalledError(f"{plugin_id} is not installed")
    record = _stored(config, [plugin_id]).get(plugin_id)
    return SettingsView.build(entry, schema_of(config, entry), record)


def configure(config: Config, registry: Registry, plugin_id: str, values: Mapping[str, Any], by: str | None, txid: str) -> tuple[str, ...]:
    """Change an installed plugin's settings in one small database transaction; returns the names changed.

    ``values`` updates the stored ones (``None`` removes one: its default applies).
    The change is recorded in ``atomicplug_transactions`` (same transaction) and
    in history.jsonl, by field name only. The caller holds the writer lock.
    Raises NotInstalledError, SettingsError, DatabaseError/MigrationError.
    """
    from atomicplug.database.engine import first_line, open_database
    from atomicplug.database.ledger import ensure_tables, now, record_transaction
    from atomicplug.errors import MigrationError

    entry = registry.plugins.get(plugin_id)
    if entry is None:
        raise NotInstalledError(f"{plugin_id} is not installed")
    schema = schema_of(config, entry)
    if schema is None:
        raise SettingsError(f"{plugin_id} {entry.version} declares no settings", plugins=(plugin_id,))
    started = now()
    db = open_database(config.database_url, max(float(config.lock_timeout), 30.0))
    try:
        try:
            db.begin()
            db.capture_session()
            base = read_records(db, [plugin_id]).get(plugin_id)
            old = dict(base.settings) if base else {}
            settings = schema.check(plugin_id, schema.merge(old, values), given=values)
            changed = tuple(sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k)))
            if changed:
                ensure_table(db)
                ensure_tables(db)
                record = InstallationRecord(plugin_id, settings, by, started, by, now()) if base is None else attrs.evolve(
                    base, settings=settings, updated_by=by, updated_at=now()
                )
                write_record(db, record)
                summary = {"id": plugin_id, "action": "configure", "from": None, "to": entry.version, "enabled": entry.enabled,
                           "keep_data": False, "settings": list(changed), "by": by}
                record_transaction(db, txid=txid, operation="configure", plugins=[summary], started_at=started)
                db.commit()
            else:
                db.rollback_quietly()
        except SettingsError:
            db.rollback_quietly()
            raise
        except Exception as exc:
            db.rollback_quietly()
            raise MigrationError(f"changing the settings of {plugin_id} failed: {first_line(exc)}") from exc
    finally:
        db.close()
    if changed:
        _record_history(config, txid, summary)
    return changed


def _record_history(config: Config, txid: str, summary: dict[str, Any]) -> None:
    from atomicplug.history import append_history, finished_now

    step = {k: summary[k] for k in ("id", "action", "from", "to", "enabled", "keep_data", "settings")}
    append_history(config.home, {"txid": txid, "operation": "configure", "outcome": "done", "reason": None, "by": summary["by"],
                                 "finished": finished_now(), "steps": [step]})
