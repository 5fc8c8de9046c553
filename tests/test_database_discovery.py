"""Finding a tree's migrations: the two layouts and the rules they must keep."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from db_fixtures import make_tree

from atomicplug.database.discovery import SINGLE_NAME, discover
from atomicplug.errors import MigrationError


def test_tree_without_migrations_has_none(tmp_path: Path) -> None:
    assert discover(make_tree(tmp_path), "p1") == ()


def test_single_up_down_pair_is_one_migration_with_up_checksum(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, files={"migrations/up.sql": "CREATE TABLE a (x INTEGER);", "migrations/down.sql": "DROP TABLE a;"})
    (migration,) = discover(tree, "p1")
    assert migration.name == SINGLE_NAME
    assert migration.checksum == hashlib.sha256(b"CREATE TABLE a (x INTEGER);").hexdigest()


def test_versioned_migrations_sort_by_number_not_text(tmp_path: Path) -> None:
    files = {}
    for stem in ("0010_c", "0002_b", "0001_a"):
        files[f"migrations/{stem}.up.sql"] = "SELECT 1;"
        files[f"migrations/{stem}.down.sql"] = "SELECT 1;"
    files["migrations/README.md"] = "ignored"
    tree = make_tree(tmp_path, files=files)
    assert [m.name for m in discover(tree, "p1")] == ["0001_a", "0002_b", "0010_c"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"migrations/up.sql": "SELECT 1;"}, "has no down.sql"),
        ({"migrations/0001_a.up.sql": "SELECT 1;"}, "0001_a.up.sql has no 0001_a.down.sql"),
        ({"migrations/0001_a.down.sql": "SELECT 1;"}, "has no 0001_a.up.sql"),
        ({"migrations/create.sql": "SELECT 1;"}, "create.sql is not named NNNN_name"),
        (
            {"migrations/up.sql": "", "migrations/down.sql": "", "migrations/0002_b.up.sql": ""},
            "mixes up.sql/down.sql",
        ),
        (
            {
                "migrations/0001_a.up.sql": "",
                "migrations/0001_a.down.sql": "",
                "migrations/0001_b.up.sql": "",
                "migrations/0001_b.down.sql": "",
            },
            "share the number 0001",
        ),
    ],
)
def test_layout_errors_name_plugin_and_file(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    tree = make_tree(tmp_path, files=files)
    with pytest.raises(MigrationError, match="plugin p1: ") as info:
        discover(tree, "p1")
    assert expected in str(info.value)
