"""Which downs and ups one plugin change runs, decided against the ledger.

DESIGN.md "One transaction" step 4 and "Migrations":

- install / upgrade: the ups of ``new_tree`` not yet applied, in order. A
  reinstall after ``uninstall --keep-data`` therefore skips what the ledger
  still holds and applies only what is new.
- downgrade (rollback, --allow-downgrade): from ``old_tree`` (the installed
  one), the downs of applied migrations ``new_tree`` lacks, newest first; then
  any ups of ``new_tree`` not applied. Upgrade follows the same rule should a
  new version drop a migration.
- uninstall: every applied migration's down from ``old_tree``, newest first;
  with ``keep_data`` nothing (tables and ledger rows stay).
- none (enable/disable): nothing.

An applied migration whose up script in ``new_tree`` changed is refused
(checksum, as Flyway's validate).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from atomicplug.database.discovery import Migration, discover
from atomicplug.database.scripts import one_line
from atomicplug.errors import MigrationError

if TYPE_CHECKING:
    from atomicplug.stages.migrate import PluginChange

__all__ = ["ChangePlan", "plan_change", "tree_migrations", "refuse_non_transactional"]


@attrs.frozen
class ChangePlan:
    """Downs to run (in run order, from ``old_tree``), then ups (in order, from ``new_tree``)."""

    plugin_id: str
    reverts: tuple[Migration, ...] = ()
    applies: tuple[Migration, ...] = ()


def tree_migrations(tree: Path | None, plugin_id: str) -> tuple[Migration, ...]:
    return discover(tree, plugin_id) if tree is not None else ()


def refuse_non_transactional(plugin_id: str, migrations: tuple[Migration, ...], dialect: str) -> None:
    """Raise MigrationError naming plugin, file and statement (quoted on one line) for the
    first statement that cannot run inside our transaction on ``dialect`` (ups and downs
    alike: downs run at uninstall), or for a script that does not parse."""
    for migration in migrations:
        for direction in ("up", "down"):
            for statement in migration.statements(direction, dialect):
                if statement.refusal:
                    raise MigrationError(
                        f"plugin {plugin_id}: migrations/{migration.path(direction).name} statement "
                        f"{statement.number} `{one_line(statement.sql)}` is refused: {statement.refusal}"
                    )


def plan_change(change: PluginChange, applied: dict[str, str]) -> ChangePlan:
    """Decide the downs and ups of ``change`` given its ledger (name → applied checksum).

    Raises MigrationError for a changed checksum or a down that cannot be found.
    """
    pid = change.plugin_id
    if change.action == "none" or (change.action == "uninstall" and change.keep_data):
        return ChangePlan(pid)
    if change.action == "uninstall":
        if change.old_tree is None:
            raise MigrationError(f"plugin {pid}: uninstall needs the installed tree (old_tree)")
        old = tree_migrations(change.old_tree, pid)
        _require_downs(pid, set(applied), old)
        return ChangePlan(pid, reverts=tuple(m for m in reversed(old) if m.name in applied))
    if change.action not in ("install", "upgrade", "downgrade"):
        raise MigrationError(f"plugin {pid}: unknown migration action {change.action!r}")
    if change.new_tree is None:
        raise MigrationError(f"plugin {pid}: {change.action} needs the new tree (new_tree)")
    new = tree_migrations(change.new_tree, pid)
    for migration in new:
        recorded = applied.get(migration.name)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"plugin {pid}: applied migration {migration.name} changed since it ran "
                f"(checksum {recorded[:12]}, now {migration.checksum[:12]} in migrations/{migration.up_path.name}); "
                "add a new migration instead of editing an applied one"
            )
    new_names = {m.name for m in new}
    reverts: tuple[Migration, ...] = ()
    if change.old_tree is not None:
        lacking = set(applied) - new_names
        old = tree_migrations(change.old_tree, pid)
        _require_downs(pid, lacking, old)
        reverts = tuple(m for m in reversed(old) if m.name in lacking)
    return ChangePlan(pid, reverts=reverts, applies=tuple(m for m in new if m.name not in applied))


def _require_downs(pid: str, names: set[str], old: tuple[Migration, ...]) -> None:
    missing = sorted(names - {m.name for m in old})
    if missing:
        raise MigrationError(
            f"plugin {pid}: applied migration {missing[0]} is not in the installed tree, so it cannot be reverted "
            "(uninstall with --keep-data to leave its tables)"
        )
