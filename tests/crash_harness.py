"""Enumerate every crash point of an operation and check old-or-new after recovery.

Used by the in-process (fork + SIGKILL) suite; the strace suite reuses the
scenario definitions. Counts are collected for the terminal summary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from atomicplug.installer import Installer
from atomicplug.journal.reader import pending_journals
from atomicplug.testing import count_crash_points, crash_at, snapshot

#: scenario label → number of crash points checked (printed at the end of the run).
CHECKED: dict[str, int] = {}
#: scenario label → number of (crash point, way of failing) checked by the disk-failure suite.
FAILURES_CHECKED: dict[str, int] = {}

V1 = {"0001_items": ("CREATE TABLE shop_items (id INTEGER PRIMARY KEY, name TEXT);", "DROP TABLE shop_items;")}
V2 = dict(V1, **{"0002_orders": ("CREATE TABLE shop_orders (id INTEGER PRIMARY KEY);", "DROP TABLE shop_orders;")})
BASE = {"0001_b": ("CREATE TABLE base_t (id INTEGER);", "DROP TABLE base_t;")}


def build_crash_packages(home: Any) -> dict[str, Any]:
    """The packages every crash scenario uses: shop 1.0 → 1.1 (one more table), base, and a plugin requiring base."""
    return {
        "shop1": home.package("shop", "1.0.0", migrations=V1),
        "shop2": home.package("shop", "1.1.0", migrations=V2),
        "base": home.package("base", "1.0.0", migrations=BASE),
        "needs_base": home.package("needy", "1.0.0", requires=("base>=1.0",)),
    }


def install_all(names: Any, packages: dict[str, Any]) -> Callable[[Any], None]:
    """A setup step: install the named packages one transaction each."""

    def setup(home: Any) -> None:
        for name in names:
            Installer(home.config).install_file(packages[name])

    return setup


def install_together(*names: str) -> Callable[[Any, dict[str, Any]], None]:
    """An operation: take the named packages in and install them in one transaction."""

    def run(home: Any, packages: dict[str, Any]) -> None:
        from atomicplug.intake import take_in_file

        Installer(home.config).install_packages([take_in_file(home.config, packages[n]) for n in names])

    return run


#: label → (packages installed first, the operation on (home, packages)).
SCENARIOS: dict[str, tuple[list[str], Callable[[Any, dict[str, Any]], Any]]] = {
    "install": ([], lambda h, p: Installer(h.config).install_file(p["shop1"])),
    "install-with-dependency": ([], install_together("base", "needs_base")),
    "upgrade": (["shop1"], lambda h, p: Installer(h.config).install_file(p["shop2"])),
    "uninstall": (["shop1"], lambda h, p: Installer(h.config).uninstall("shop")),
    "uninstall-keep-data": (["shop1"], lambda h, p: Installer(h.config).uninstall("shop", keep_data=True)),
    "rollback": (["shop1", "shop2"], lambda h, p: Installer(h.config).rollback("shop")),
    "disable": (["shop1"], lambda h, p: Installer(h.config).disable("shop")),
    "rollback-generation": (["shop1", "base", "shop2"], lambda h, p: Installer(h.config).rollback(generation=1)),
}


class RestorableHome:
    """A home set up once and restored from its copy before each run, at its own path
    (so the absolute links a home holds stay valid): cheaper than setting up a home per point."""

    def __init__(self, home: Any) -> None:
        import shutil
        from pathlib import Path

        self.home = home
        self.template = Path(f"{home.root}.template")
        shutil.copytree(home.root, self.template, symlinks=True)

    def restore(self) -> Any:
        import shutil

        shutil.rmtree(self.home.root)
        shutil.copytree(self.template, self.home.root, symlinks=True)
        return self.home


def damaged_tree(make_home: Callable[[str], Any], packages: dict[str, Any], name: str) -> Any:
    """A home with shop 1.0.0 whose tree record no longer parses, one backend module changed and one added.

    Reinstalling shop 1.0.0 repairs it: the record is made again, the module rewritten, the added one removed.
    """
    import os

    home = make_home(name)
    install_all(["shop1"], packages)(home)
    _damage(os.path.realpath(home.config.backend_addons / "shop"))
    return home


def damaged_kept_tree(make_home: Callable[[str], Any], packages: dict[str, Any], name: str) -> Any:
    """A home with shop 1.0.0 rolled back to from 1.1.0, whose tree (kept in the store) is damaged as above.

    Installing shop 1.1.0 again repairs that tree, then upgrades to it.
    """
    import os

    home = make_home(name)
    install_all(["shop1", "shop2"], packages)(home)
    Installer(home.config).rollback("shop")
    [kept] = [t for t in (home.config.store_dir / "shop").iterdir() if t.name.startswith("1.1.0-")]
    _damage(os.path.join(kept, "backend"))
    return home


def _damage(backend: str) -> None:
    """The tree record of the tree holding ``backend`` garbled, a module of it changed, one added."""
    import os

    from atomicplug.store import RECORD_NAME

    record = os.path.join(os.path.dirname(backend), RECORD_NAME)
    os.chmod(record, 0o644)
    with open(record, "w") as garbage:
        garbage.write("garbage\n")
    module = os.path.join(backend, next(p for p in sorted(os.listdir(backend)) if p.endswith(".py")))
    os.chmod(module, 0o644)
    with open(module, "a") as changed:
        changed.write("# damage\n")
    with open(os.path.join(backend, "injected.py"), "w") as added:
        added.write("X = 1\n")


def assert_clean(config: Any) -> None:
    """No unfinished journal, no staging leftovers, verify passes."""
    assert not pending_journals(config.journal_dir)
    staging = config.staging_dir
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())
    assert all(report.ok for report in Installer(config).verify())


def assert_flat(config: Any) -> None:
    """Nothing left of the earlier fan-out layout in the home's object store."""
    objects = config.home / "objects"
    assert not [p.name for p in objects.iterdir() if p.is_dir()], "objects left in fan-out folders"


def fan_out_objects(config: Any) -> int:
    """Put the home's objects back in the earlier layout, git's fan-out (``objects/ab/cdef…``): a home
    written before the store became flat. Returns how many objects moved."""
    return fan_out_store(config.home / "objects")


def fan_out_store(objects: Path) -> int:
    """:func:`fan_out_objects` for the object store folder ``objects``."""
    moved = 0
    for path in sorted(objects.iterdir()):
        if len(path.name) == 64 and path.is_file():
            (objects / path.name[:2]).mkdir(exist_ok=True)
            path.rename(objects / path.name[:2] / path.name[2:])
            moved += 1
    return moved


def enumerate_crash_points(
    make_home: Callable[[str], Any],
    setup: Callable[[Any], None],
    operation: Callable[[Any], None],
    label: str,
    *,
    after_crash: Callable[[Any], None] | None = None,
) -> int:
    """Crash ``operation`` at each of its crash points in turn; all must recover to old or new.

    ``after_crash(home)`` runs between the crash and the recovery (what a person may do then).
    """
    reference = make_home(f"{label}-reference")
    setup(reference)
    old = snapshot(reference.config)
    total = count_crash_points(lambda: operation(reference))
    new = snapshot(reference.config)
    assert old != new, "the operation must change something observable"
    assert total > 0
    for point in range(1, total + 1):
        home = make_home(f"{label}-{point}")
        setup(home)
        assert crash_at(lambda: operation(home), point), f"{label}: no crash at point {point} of {total}"
        if after_crash is not None:
            after_crash(home)
        Installer(home.config).recover()
        state = snapshot(home.config)
        assert state in (old, new), f"{label}: crash point {point}/{total} left a mixed state: {state}"
        assert_clean(home.config)
        if state == old:
            operation(home)
        assert snapshot(home.config) == new, f"{label}: after crash point {point} the operation did not complete"
        assert_clean(home.config)
    CHECKED[label] = total
    return total


def _leftovers(config: Any) -> bool:
    """Staged or stored trees the registry does not reference: work for a rollback."""
    from atomicplug.registry import Registry

    staged = config.staging_dir.is_dir() and any(config.staging_dir.iterdir())
    stored = {f"store/{p.parent.name}/{p.name}" for p in config.store_dir.glob("*/*")}
    return staged or bool(stored - Registry.load(config.registry_path).referenced_trees())


def find_interruption(
    make_home: Callable[[str], Any], setup: Callable[[Any], None], operation: Callable[[Any], None], *, committed: bool
) -> int:
    """The first crash point of ``operation`` after which recovery must go forward (``committed``) or back.

    Going back, the point chosen leaves a staged store tree behind, so recovery has real work.
    """
    from atomicplug.stages import migrate

    probe = make_home("interruption-count")
    setup(probe)
    total = count_crash_points(lambda: operation(probe))
    for point in range(1, total + 1):  # the earliest such point leaves recovery the most to do
        home = make_home(f"interruption-{point}")
        setup(home)
        assert crash_at(lambda: operation(home), point)
        pending = pending_journals(home.config.journal_dir)
        if not pending or pending[0].begin is None or migrate.committed(home.config, pending[0].txid) != committed:
            continue
        if committed or _leftovers(home.config):
            return point
    raise AssertionError(f"no crash point leaves a transaction that recovery rolls {'forward' if committed else 'back'}")


def enumerate_recovery_crash_points(make_home: Callable[[str], Any], interrupted: Callable[[Any], None], label: str) -> int:
    """Kill ``recover`` itself at each of its crash points; a second recover must reach the same state."""
    reference = make_home(f"{label}-reference")
    interrupted(reference)
    total = count_crash_points(lambda: Installer(reference.config).recover())
    expected = snapshot(reference.config)
    assert total > 0
    for point in range(1, total + 1):
        home = make_home(f"{label}-{point}")
        interrupted(home)
        assert crash_at(lambda: Installer(home.config).recover(), point), f"{label}: no crash at point {point}"
        Installer(home.config).recover()
        assert snapshot(home.config) == expected, f"{label}: crash at recovery point {point}/{total}"
        assert_clean(home.config)
    CHECKED[label] = total
    return total
