"""Which downs and ups one plugin change runs, decided against the ledger.

docs/design.md "One transaction" step 4 and "Migrations":

- install / upgrade: the ups of ``new_tree`` not yet applied, in order. A
  reinstall after ``uninstall --keep-data`` therefore skips what the ledger
  still holds and applies only what is new.
- downgrade (rollback, --allow-downgrade): from ``old_tree`` (the installed
  one), the downs of applied migrations ``new_tree`` lacks, newest first; then
  any ups of ``new_tree`` not applied. Upgrade follows the same rule should a
  new version drop a migration.
- kept data: the ledger, not the registry, says what a plugin's tables hold.
  Applied migrations that ``new_tree`` lacks and ``old_tree`` cannot revert
  (``uninstall --keep-data`` of 1.1, then installing 1.0) make the change a
  downgrade of that data: refused (UsageError) unless ``allow_downgrade``; then
  their downs come from the plugin's other store trees, the
  first whose migration of that name has the applied checksum.
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
from atomicplug.errors import MigrationError, UsageError

if TYPE_CHECKING:
    from atomicplug.change import Change

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


def plan_change(change: Change, applied: dict[str, str], home: Path) -> ChangePlan:
    """Decide the downs and ups of ``change`` given its ledger (name → applied checksum).

    ``home`` is where its store trees are (``old_tree``: the installed one, ``new_tree``:
    the one it installs; kept data's downs may come from any tree of the plugin).

    Raises MigrationError for a changed checksum or a down that cannot be found;
    UsageError (exit 2) for a downgrade of kept data without ``allow_downgrade``.
    """
    pid = change.plugin_id
    old_tree, new_tree = change.old_tree(home), change.new_tree(home)
    if change.action == "none" or (change.action == "uninstall" and change.keep_data):
        return ChangePlan(pid)
    if change.action == "uninstall":
        if old_tree is None:
            raise MigrationError(f"plugin {pid}: uninstall needs the installed tree (old_tree)")
        old = tree_migrations(old_tree, pid)
        _require_downs(pid, set(applied), old)
        return ChangePlan(pid, reverts=tuple(m for m in reversed(old) if m.name in applied))
    if change.action not in ("install", "upgrade", "downgrade"):
        raise MigrationError(f"plugin {pid}: unknown migration action {change.action!r}")
    if new_tree is None:
        raise MigrationError(f"plugin {pid}: {change.action} needs the new tree (new_tree)")
    new = tree_migrations(new_tree, pid)
    for migration in new:
        recorded = applied.get(migration.name)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"plugin {pid}: applied migration {migration.name} changed since it ran "
                f"(checksum {recorded[:12]}, now {migration.checksum[:12]} in migrations/{migration.up_path.name}); "
                "add a new migration instead of editing an applied one"
            )
    lacking = set(applied) - {m.name for m in new}
    reverts = {m.name: m for m in tree_migrations(old_tree, pid) if m.name in lacking}
    kept = sorted(lacking - set(reverts))
    if kept:
        if not change.allow_downgrade:
            many = len(kept) > 1
            package = f"{pid} {change.new_version}" if change.new_version else pid
            # Named as an install: a rollback over kept data takes no --allow-downgrade of its own.
            ways = f" (its zip, or `atomicplug install {pid}=={change.new_version}`)" if change.new_version else ""
            raise UsageError(
                f"plugin {pid}: the database keeps migration{'s' if many else ''} {', '.join(kept)}, which "
                f"{package} lacks (data kept from a newer version): installing it is a downgrade of that data; "
                f"install a version that has {'them' if many else 'it'}, or install {package} with --allow-downgrade{ways}, "
                f"which runs {'their downs' if many else 'its down'} from the store",
                option="allow_downgrade",
                plugins=(pid,),
            )
        from atomicplug.store import plugin_trees

        reverts.update(_kept_downs(pid, kept, applied, plugin_trees(home, pid)))
    ordered = tuple(sorted(reverts.values(), key=lambda m: (m.number, m.name), reverse=True))
    return ChangePlan(pid, reverts=ordered, applies=tuple(m for m in new if m.name not in applied))


def _kept_downs(pid: str, names: list[str], applied: dict[str, str], trees: tuple[Path, ...]) -> dict[str, Migration]:
    """For each of ``names``, the migration of the first tree in ``trees`` with that name and the
    applied checksum (its down reverts exactly what ran). Raises MigrationError when none has one."""
    found: dict[str, Migration] = {}
    for tree in trees:
        try:
            migrations = tree_migrations(tree, pid)
        except MigrationError:
            continue  # a damaged leftover tree is no source of downs
        for migration in migrations:
            if migration.name in names and applied[migration.name] == migration.checksum:
                found.setdefault(migration.name, migration)
    missing = [name for name in names if name not in found]
    if missing:
        raise MigrationError(
            f"plugin {pid}: no store tree of {pid} has the down of applied migration {missing[0]} "
            f"(checksum {applied[missing[0]][:12]}); install a version that has it, then downgrade from there"
        )
    return found


def _require_downs(pid: str, names: set[str], old: tuple[Migration, ...]) -> None:
    missing = sorted(names - {m.name for m in old})
    if missing:
        raise MigrationError(
            f"plugin {pid}: applied migration {missing[0]} is not in the installed tree, so it cannot be reverted "
            "(uninstall with --keep-data to leave its tables)"
        )
