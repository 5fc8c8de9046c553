"""``atomicplug_installations``: each installed plugin's settings and who installed it, in the app's database.

docs/design.md "Plugin settings". One row per plugin, beside the ledger and
named like it (``db.qualified``: the schema captured at BEGIN), written inside
the caller's database transaction: the install's own (so a plugin and its
settings commit together) or a small one of ``configure``. A row outlives
``uninstall --keep-data`` with the tables (settings are the plugin's data) and
goes with them otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from atomicplug.database.engine import Database

__all__ = ["INSTALLATIONS_TABLE", "InstallationRecord", "ensure_table", "read_records", "write_record", "delete_records"]

INSTALLATIONS_TABLE = "atomicplug_installations"

_CREATE = """CREATE TABLE IF NOT EXISTS {table} (
    plugin_id VARCHAR(64) NOT NULL PRIMARY KEY,
    settings TEXT NOT NULL,
    installed_by VARCHAR(200),
    installed_at VARCHAR(40) NOT NULL,
    updated_by VARCHAR(200),
    updated_at VARCHAR(40) NOT NULL
)"""
_COLUMNS = "plugin_id, settings, installed_by, installed_at, updated_by, updated_at"


@attrs.frozen
class InstallationRecord:
    """A row: the stored settings (explicit values only; defaults apply when read) and who did what when."""

    plugin_id: str
    settings: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    installed_by: str | None = None
    installed_at: str = ""
    updated_by: str | None = None
    updated_at: str = ""

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> InstallationRecord:
        plugin_id, settings, installed_by, installed_at, updated_by, updated_at = row
        try:
            values = json.loads(settings)
        except ValueError:
            values = {}
        return cls(plugin_id, values if isinstance(values, dict) else {}, installed_by, installed_at, updated_by, updated_at)


def ensure_table(db: Database) -> None:
    """Create the table if missing, inside the caller's transaction."""
    db.execute(_CREATE.format(table=db.qualified(INSTALLATIONS_TABLE)))


def read_records(db: Database, plugin_ids: Iterable[str] | None = None) -> dict[str, InstallationRecord]:
    """Rows by plugin id (all, or those of ``plugin_ids``); empty when the table does not exist yet."""
    from atomicplug.database.ledger import existing_tables

    if not existing_tables(db, [INSTALLATIONS_TABLE]):
        return {}
    sql = f"SELECT {_COLUMNS} FROM {db.qualified(INSTALLATIONS_TABLE)}"
    wanted = sorted(set(plugin_ids)) if plugin_ids is not None else None
    if wanted is not None:
        if not wanted:
            return {}
        sql += f" WHERE plugin_id IN ({', '.join('?' for _ in wanted)})"
    return {row[0]: InstallationRecord.from_row(row) for row in db.execute(sql, wanted or [])}


def write_record(db: Database, record: InstallationRecord) -> None:
    """Insert or replace ``record`` (the table must exist: :func:`ensure_table`)."""
    db.execute(
        f"INSERT INTO {db.qualified(INSTALLATIONS_TABLE)} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (plugin_id) DO UPDATE SET settings = excluded.settings, installed_by = excluded.installed_by, "
        "installed_at = excluded.installed_at, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        [
            record.plugin_id,
            json.dumps(dict(record.settings), sort_keys=True),
            record.installed_by,
            record.installed_at,
            record.updated_by,
            record.updated_at,
        ],
    )


def delete_records(db: Database, plugin_ids: Iterable[str]) -> None:
    """Remove the rows of ``plugin_ids`` (nothing when the table does not exist)."""
    from atomicplug.database.ledger import existing_tables

    ids = sorted(set(plugin_ids))
    if ids and existing_tables(db, [INSTALLATIONS_TABLE]):
        db.execute(f"DELETE FROM {db.qualified(INSTALLATIONS_TABLE)} WHERE plugin_id IN ({', '.join('?' for _ in ids)})", ids)
