"""The migrations of a store tree (docs/design.md "Package format", "Migrations").

Two layouts, never mixed:

- ``migrations/up.sql`` + ``migrations/down.sql``: one migration named
  ``0001_initial`` (a later version that switches to versioned files keeps the
  ledger continuous by naming its first migration ``0001_initial``);
- ``migrations/NNNN_name.up.sql`` + ``NNNN_name.down.sql``: applied in NNNN order.

Every up needs its down: uninstall and rollback would otherwise be impossible.
A migration's checksum is the SHA-256 of its up script's bytes (as Flyway's
validate, only the script that was applied is pinned; a fixed down is allowed).
Files in ``migrations/`` not ending in ``.sql`` (a README) are ignored.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

import attrs

from atomicplug.database.scripts import ScriptSyntaxError, Statement, split_script
from atomicplug.errors import MigrationError

__all__ = ["Migration", "Direction", "discover", "SINGLE_NAME"]

Direction = Literal["up", "down"]
_DIALECT_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

SINGLE_NAME = "0001_initial"
_VERSIONED = re.compile(r"^(?P<number>[0-9]{4,})_(?P<label>[A-Za-z0-9_-]+)\.(?P<direction>up|down)\.sql$")


@attrs.frozen
class Migration:
    """One up/down pair of a plugin's tree; ``name`` is its ledger key (e.g. ``0002_add_index``)."""

    plugin_id: str
    name: str
    number: int
    up_path: Path
    down_path: Path
    checksum: str

    @classmethod
    def from_files(cls, plugin_id: str, name: str, number: int, up_path: Path, down_path: Path) -> Migration:
        return cls(
            plugin_id=plugin_id,
            name=name,
            number=number,
            up_path=up_path,
            down_path=down_path,
            checksum=hashlib.sha256(up_path.read_bytes()).hexdigest(),
        )

    def path(self, direction: Direction) -> Path:
        return self.up_path if direction == "up" else self.down_path

    def statements(self, direction: Direction, dialect: str) -> tuple[Statement, ...]:
        """The up or down script split for ``dialect`` (the database URL's: see scripts.py).

        Raises MigrationError naming the plugin and file when it is not UTF-8 or
        does not parse.
        """
        path = self.path(direction)
        try:
            return split_script(path.read_text(encoding="utf-8"), dialect)
        except UnicodeDecodeError as exc:
            problem = f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
        except ScriptSyntaxError as exc:
            problem = f"is not valid {_DIALECT_NAMES.get(dialect, dialect)}: {exc}"
        raise MigrationError(f"plugin {self.plugin_id}: migrations/{path.name} {problem}")


def discover(tree: Path, plugin_id: str) -> tuple[Migration, ...]:
    """The migrations of ``tree`` in the order their ups run.

    Raises MigrationError naming the plugin and file when the layout breaks a rule.
    """
    folder = Path(tree) / "migrations"
    if not folder.is_dir():
        return ()
    sql_files = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))
    names = {p.name for p in sql_files}
    for path in sql_files:
        if not path.is_file():
            raise MigrationError(f"plugin {plugin_id}: migrations/{path.name} is not a regular file")
    if names & {"up.sql", "down.sql"}:
        others = sorted(names - {"up.sql", "down.sql"})
        if others:
            raise MigrationError(
                f"plugin {plugin_id}: migrations/ mixes up.sql/down.sql with versioned files ({others[0]}); use one layout"
            )
        if "down.sql" not in names:
            raise MigrationError(f"plugin {plugin_id}: migrations/up.sql has no down.sql (rollback and uninstall need it)")
        if "up.sql" not in names:
            raise MigrationError(f"plugin {plugin_id}: migrations/down.sql has no up.sql")
        return (Migration.from_files(plugin_id, SINGLE_NAME, 1, folder / "up.sql", folder / "down.sql"),)

    pairs: dict[str, dict[str, Path]] = {}
    numbers: dict[int, str] = {}
    for path in sql_files:
        match = _VERSIONED.match(path.name)
        if not match:
            raise MigrationError(
                f"plugin {plugin_id}: migrations/{path.name} is not named NNNN_name.up.sql or NNNN_name.down.sql"
            )
        stem = f"{match['number']}_{match['label']}"
        number = int(match["number"])
        if numbers.setdefault(number, stem) != stem:
            raise MigrationError(
                f"plugin {plugin_id}: migrations {numbers[number]} and {stem} share the number {match['number']}"
            )
        pairs.setdefault(stem, {})[match["direction"]] = path
    migrations = []
    for stem, files in pairs.items():
        if "down" not in files:
            raise MigrationError(
                f"plugin {plugin_id}: migrations/{stem}.up.sql has no {stem}.down.sql (rollback and uninstall need it)"
            )
        if "up" not in files:
            raise MigrationError(f"plugin {plugin_id}: migrations/{stem}.down.sql has no {stem}.up.sql")
        number = int(stem.split("_", 1)[0])
        migrations.append(Migration.from_files(plugin_id, stem, number, files["up"], files["down"]))
    return tuple(sorted(migrations, key=lambda m: (m.number, m.name)))
