"""Every crash point of every operation, killed for real (fork + SIGKILL).

Each mutating step of atomicplug (file writes, fsyncs, renames, symlinks,
unlinks, mkdirs, the database COMMIT) passes a crash point; a forked child
kills itself with SIGKILL at point N, for every N. After ``recover`` the
registry, the addon folders and the tables must be all old or all new, and
the operation must then complete.
"""

from __future__ import annotations

import pytest

from crash_harness import enumerate_crash_points
from atomicplug.installer import Installer
from atomicplug.journal.reader import pending_journals
from atomicplug.testing import crash_at, snapshot

V1 = {"0001_items": ("CREATE TABLE shop_items (id INTEGER PRIMARY KEY, name TEXT);", "DROP TABLE shop_items;")}
V2 = dict(V1, **{"0002_orders": ("CREATE TABLE shop_orders (id INTEGER PRIMARY KEY);", "DROP TABLE shop_orders;")})


@pytest.fixture
def packages(home_factory):
    builder = home_factory(name="builder")
    return {
        "shop1": builder.package("shop", "1.0.0", migrations=V1),
        "shop2": builder.package("shop", "1.1.0", migrations=V2),
        "base": builder.package("base", "1.0.0", migrations={"0001_b": ("CREATE TABLE base_t (id INTEGER);", "DROP TABLE base_t;")}),
        "needs_base": builder.package("needy", "1.0.0", requires=("base>=1.0",)),
    }


@pytest.fixture
def make_home(home_factory):
    return lambda name: home_factory(name=name)


@pytest.fixture
def make_any_db_home(home_factory, database_factory):
    """Each crash point gets a home and a database of its own (SQLite, then PostgreSQL)."""
    return lambda name: home_factory(name=name, database_url=database_factory())


def _install(*names):
    def run(home, packages):
        from atomicplug.stages.verify import verify_package

        Installer(home.config).install_packages([verify_package(home.config, packages[n]) for n in names])

    return run


SCENARIOS = {
    "install": ([], lambda h, p: Installer(h.config).install_file(p["shop1"])),
    "install-with-dependency": ([], _install("base", "needs_base")),
    "upgrade": (["shop1"], lambda h, p: Installer(h.config).install_file(p["shop2"])),
    "uninstall": (["shop1"], lambda h, p: Installer(h.config).uninstall("shop")),
    "uninstall-keep-data": (["shop1"], lambda h, p: Installer(h.config).uninstall("shop", keep_data=True)),
    "rollback": (["shop1", "shop2"], lambda h, p: Installer(h.config).rollback("shop")),
    "disable": (["shop1"], lambda h, p: Installer(h.config).disable("shop")),
}


ON_EACH_DATABASE = ("install", "upgrade", "uninstall", "rollback")


@pytest.mark.parametrize("label", sorted(set(SCENARIOS) - set(ON_EACH_DATABASE)))
def test_every_crash_point_recovers_to_old_or_new(label, packages, make_home):
    prior, operation = SCENARIOS[label]

    def setup(home):
        for name in prior:
            Installer(home.config).install_file(packages[name])

    checked = enumerate_crash_points(make_home, setup, lambda h: operation(h, packages), label)
    assert checked >= 5


@pytest.mark.parametrize("label", ON_EACH_DATABASE)
def test_every_crash_point_recovers_on_each_database(label, packages, make_any_db_home):
    """The same enumeration with the tables in SQLite and in a real PostgreSQL server."""
    prior, operation = SCENARIOS[label]

    def setup(home):
        for name in prior:
            Installer(home.config).install_file(packages[name])

    database = "postgresql" if "postgresql" in make_any_db_home("probe").config.database_url else "sqlite"
    enumerate_crash_points(make_any_db_home, setup, lambda h: operation(h, packages), f"{label} ({database})")


@pytest.mark.parametrize("direction", ["forward", "back"])
def test_every_crash_point_of_recover_itself(direction, packages, make_home):
    """Kill an upgrade so recovery must roll forward (or back), then kill recovery at each point."""

    def upgrade(home):
        Installer(home.config).install_file(packages["shop2"])

    probe = make_home(f"recover-{direction}-probe")
    Installer(probe.config).install_file(packages["shop1"])
    from atomicplug.testing import count_crash_points

    total = count_crash_points(lambda: upgrade(probe))

    # Find a crash point of the upgrade whose recovery goes the wanted way and does real work.
    from atomicplug.stages import migrate

    def interrupted(point):
        home = make_home(f"recover-{direction}-{point}-base")
        Installer(home.config).install_file(packages["shop1"])
        assert crash_at(lambda: upgrade(home), point)
        pending = pending_journals(home.config.journal_dir)
        return home, pending

    chosen = None
    for point in range(total, 0, -1) if direction == "forward" else range(1, total + 1):
        home, pending = interrupted(point)
        if pending and pending[0].begin and migrate.committed(home.config, pending[0].txid) == (direction == "forward"):
            if direction == "back" and not (home.config.staging_dir.exists() and any(home.config.store_dir.glob("shop/1.1.0-*"))):
                continue  # want a rollback that has a staged tree to delete
            chosen = point
            break
    assert chosen is not None

    def setup(home):
        Installer(home.config).install_file(packages["shop1"])
        assert crash_at(lambda: upgrade(home), chosen)

    label = f"recover-{direction}"
    reference = make_home(f"{label}-ref")
    setup(reference)
    Installer(reference.config).recover()
    expected = snapshot(reference.config)
    enumerate_crash_points(make_home, setup, lambda h: Installer(h.config).recover(), label) if False else None

    from atomicplug.testing import count_crash_points as count

    again = make_home(f"{label}-count")
    setup(again)
    points = count(lambda: Installer(again.config).recover())
    assert points > 0
    for point in range(1, points + 1):
        home = make_home(f"{label}-{point}")
        setup(home)
        assert crash_at(lambda: Installer(home.config).recover(), point)
        Installer(home.config).recover()
        assert snapshot(home.config) == expected, f"{label}: crash at recovery point {point}/{points}"
        assert not pending_journals(home.config.journal_dir)
    from crash_harness import CHECKED

    CHECKED[label] = points
