"""Every crash point of every operation, killed for real (fork + SIGKILL).

Each mutating step of atomicplug (file writes, fsyncs, renames, symlinks,
unlinks, mkdirs, the database COMMIT) passes a crash point; a forked child
kills itself with SIGKILL at point N, for every N. After ``recover`` the
registry, the addon folders and the tables must be all old or all new, and
the operation must then complete.
"""

from __future__ import annotations

import pytest

from crash_harness import (
    SCENARIOS,
    build_crash_packages,
    enumerate_crash_points,
    enumerate_recovery_crash_points,
    find_interruption,
    install_all,
)
from atomicplug.installer import Installer
from atomicplug.testing import crash_at

#: Each test enumerates crash points or failing steps: seconds each, so they are scheduled first.
pytestmark = pytest.mark.slow


@pytest.fixture
def packages(home_factory):
    return build_crash_packages(home_factory(name="builder"))


@pytest.fixture
def make_home(home_factory):
    return lambda name: home_factory(name=name, health_check=False)  # the gate only reads; it adds no crash point


@pytest.fixture
def make_any_db_home(home_factory, database_factory):
    """Each crash point gets a home and a database of its own (SQLite, then PostgreSQL)."""
    return lambda name: home_factory(name=name, database_url=database_factory(), health_check=False)


ON_EACH_DATABASE = ("install", "upgrade", "uninstall", "rollback")


@pytest.mark.parametrize("label", sorted(set(SCENARIOS) - set(ON_EACH_DATABASE)))
def test_every_crash_point_recovers_to_old_or_new(label, packages, make_home):
    prior, operation = SCENARIOS[label]
    checked = enumerate_crash_points(make_home, install_all(prior, packages), lambda h: operation(h, packages), label)
    assert checked >= 5


@pytest.mark.parametrize("label", ON_EACH_DATABASE)
def test_every_crash_point_recovers_on_each_database(label, packages, make_any_db_home):
    """The same enumeration with the tables in SQLite and in a real PostgreSQL server."""
    prior, operation = SCENARIOS[label]
    setup = install_all(prior, packages)
    database = "postgresql" if "postgresql" in make_any_db_home("probe").config.database_url else "sqlite"
    enumerate_crash_points(make_any_db_home, setup, lambda h: operation(h, packages), f"{label} ({database})")


def test_every_crash_point_then_the_live_link_removed_by_hand_recovers_to_old_or_new(packages, make_home):
    """Recovery puts a removed ``current`` back at the highest generation only once nothing is pending:
    at no crash point of an upgrade may that be a generation the database never committed."""
    from atomicplug import generations

    def remove_live_link(home):
        (home.config.home / generations.CURRENT).unlink(missing_ok=True)

    prior, operation = SCENARIOS["upgrade"]
    checked = enumerate_crash_points(
        make_home, install_all(prior, packages), lambda h: operation(h, packages), "upgrade, live link removed", after_crash=remove_live_link
    )
    assert checked >= 5


def test_every_crash_point_of_an_upgrade_of_a_home_in_the_earlier_fan_out_layout(packages, make_home):
    """The upgrade flattens the object store first (docs/design.md "The object store"): killed anywhere,
    old or new, and once it completes no object is left in a fan-out folder."""
    from crash_harness import assert_flat, fan_out_objects

    prior, operation = SCENARIOS["upgrade"]

    def setup(home):
        install_all(prior, packages)(home)
        assert fan_out_objects(home.config) > 0

    def upgrade(home):
        operation(home, packages)
        assert_flat(home.config)

    assert enumerate_crash_points(make_home, setup, upgrade, "upgrade, fan-out objects") >= 5


@pytest.mark.parametrize("direction", ["forward", "back"])
def test_every_crash_point_of_recover_itself(direction, packages, make_home):
    """Kill an upgrade so recovery must roll forward (or back), then kill recovery at each point."""
    setup = install_all(["shop1"], packages)

    def upgrade(home):
        Installer(home.config).install_file(packages["shop2"])

    point = find_interruption(make_home, setup, upgrade, committed=direction == "forward")

    def interrupted(home):
        setup(home)
        assert crash_at(lambda: upgrade(home), point)

    assert enumerate_recovery_crash_points(make_home, interrupted, f"recover-{direction}") > 0


def test_every_crash_point_of_gc_leaves_the_state_and_a_working_gc(packages, make_home):
    """gc changes nothing a user observes; killed anywhere, the next gc finishes and verify passes."""
    from crash_harness import assert_clean

    from atomicplug import generations
    from atomicplug.testing import count_crash_points, snapshot

    setup = install_all(["shop1", "base", "shop2"], packages)
    reference = make_home("gc-reference")
    setup(reference)
    expected = snapshot(reference.config)
    total = count_crash_points(lambda: Installer(reference.config).gc())
    kept = generations.numbers(reference.config)
    assert total > 0 and kept == [2, 3]
    for point in range(1, total + 1):
        home = make_home(f"gc-{point}")
        setup(home)
        assert crash_at(lambda: Installer(home.config).gc(), point)
        assert snapshot(home.config) == expected
        Installer(home.config).gc()
        assert generations.numbers(home.config) == kept
        assert snapshot(home.config) == expected
        assert_clean(home.config)
    from crash_harness import CHECKED

    CHECKED["gc"] = total


@pytest.mark.parametrize("tree", ["installed", "kept"])
def test_every_crash_point_of_a_repairing_reinstall_leaves_what_the_next_reinstall_repairs(packages, make_home, tree):
    """A reinstall that makes an unreadable tree record again and rewrites a damaged object, killed at each point;
    and the same repair of a tree the store kept, before the upgrade that makes it live again."""
    from crash_harness import assert_clean, damaged_kept_tree, damaged_tree

    from atomicplug.testing import count_crash_points

    damaged, package = (damaged_tree, "shop1") if tree == "installed" else (damaged_kept_tree, "shop2")

    def reinstall(home):
        return Installer(home.config).install_file(packages[package])

    reference = damaged(make_home, packages, f"repair-{tree}-reference")
    total = count_crash_points(lambda: reinstall(reference))
    assert reference.installer.verify()[0].ok and total > 3
    for point in range(1, total + 1):
        home = damaged(make_home, packages, f"repair-{tree}-{point}")
        assert crash_at(lambda: reinstall(home), point)
        Installer(home.config).recover()
        reinstall(home)  # repairs what the killed one left (nothing, when it was killed after its repair)
        assert [(p["id"], p["version"]) for p in Installer(home.config).list()] == [("shop", "1.1.0" if tree == "kept" else "1.0.0")]
        assert all(report.ok for report in Installer(home.config).verify(deep=True)), (point, Installer(home.config).verify())
        Installer(home.config).gc()
        assert_clean(home.config)


def test_every_crash_point_of_converting_a_legacy_backend_folder(packages, make_home):
    """A home from before generations (real backend folder of links, registry file) converted by its next install."""
    import json
    import os
    import shutil
    from pathlib import Path

    from atomicplug.registry import Registry

    def legacy(home):
        install_all(["shop1"], packages)(home)
        config = home.config
        tree = Path(os.path.realpath(config.backend_addons / "shop"))
        registry = Registry.load(config.registry_path)
        for path in (config.backend_addons, config.home / "current", config.registry_path):
            path.unlink()
        shutil.rmtree(config.home / "generations")
        config.backend_addons.mkdir()
        (config.backend_addons / "shop").symlink_to(tree)
        entries = {pid: e.to_dict() for pid, e in registry.plugins.items()}
        config.registry_path.write_text(json.dumps({"generation": "legacy", "plugins": entries}))

    checked = enumerate_crash_points(
        make_home, legacy, lambda h: Installer(h.config).install_file(packages["base"]), "convert-legacy-folder"
    )
    assert checked >= 5
