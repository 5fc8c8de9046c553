"""A failing disk is one line, at every durable step of every operation (issue 13 item 11).

Each crash point of an operation (every fsync, mkdir, rename, unlink, symlink,
journal and history write, and the database COMMIT: :mod:`atomicplug.faults`)
is made to raise instead of killing the process: ``ENOSPC`` once (the disk was
full; deleting works again), ``EIO`` from there on (a failing disk: rolling
back fails too, until it is repaired), and ENOSPC followed by EIO (the first
failure must still be the one reported). Each time the library itself must raise
StorageError — one line saying what could not be done, where, and that nothing
changed or what ``atomicplug recover`` will finish — ``recover`` must then
leave the state old or new, and the operation must complete. The strace suite
(test_disk_failures_syscalls.py) does the same to the real CLI's system calls.

Fast by construction: no fork, homes on a memory file system, and each point
starts from a copy of the prepared home (crash_harness.RestorableHome).
"""

from __future__ import annotations

import errno
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from crash_harness import (
    FAILURES_CHECKED,
    SCENARIOS,
    RestorableHome,
    assert_clean,
    build_crash_packages,
    find_interruption,
    install_all,
)
from atomicplug import faults, generations
from atomicplug.cli import main
from atomicplug.errors import StorageError
from atomicplug.installer import Installer
from atomicplug.journal.reader import pending_journals
from atomicplug.stages import migrate
from atomicplug.testing import count_crash_points, crash_at, fail_at, snapshot

#: Each test enumerates crash points or failing steps: seconds each, so they are scheduled first.
pytestmark = pytest.mark.slow

#: How the disk fails at the chosen point: (errno there, errno at every later point). The last
#: one checks that the first failure is the one reported when cleaning up fails as well.
FAILURES = {
    "ENOSPC once": (errno.ENOSPC, None),
    "EIO from then on": (errno.EIO, errno.EIO),
    "ENOSPC, then EIO from then on": (errno.ENOSPC, errno.EIO),
}

_MESSAGE = re.compile(
    r"^(?P<what>(?:install|upgrade|downgrade|uninstall|enable|disable|gc|recover|recovering transaction|taking in package)\b.*?)"
    r" (?:failed|is committed \(transaction \S+\) but not finished): "
    r"(?:could not|cannot) .+? (?P<where>/[^\s:]+): [^;]+ \((?P<errno>ENOSPC|EIO)\)"
    r"(?P<undo>; undoing it failed too: (?:could not|cannot) .+? /[^\s:]+: [^;]+ \(EIO\))?"
    r"; (?P<outcome>.+)$"
)


@pytest.fixture
def packages(home_factory: Callable[..., Any]) -> dict[str, Any]:
    return build_crash_packages(home_factory(name="builder"))


@pytest.fixture
def make_home(home_factory: Callable[..., Any], memory_tmp_path: Any) -> Callable[[str], Any]:
    return lambda name: home_factory(name=name, under=memory_tmp_path, health_check=False)  # the gate only reads


def observe(config: Any) -> dict[str, Any]:
    """What a user sees, plus the generations kept (so gc has an old and a new too)."""
    return {**snapshot(config), "generations": generations.numbers(config)}


def check_failure(label: str, failure: BaseException, home: Any, code: int) -> re.Match[str]:
    """The library raised one line: what could not be done, where (under the home), errno, outcome."""
    assert isinstance(failure, StorageError), f"{label}: {type(failure).__name__}: {failure}"
    text = str(failure)
    match = _MESSAGE.match(text)
    assert match, f"{label}: not the one-line form: {text!r}"
    assert match["where"].startswith(str(home.root)), f"{label}: where is not a path of the home: {text}"
    assert match["errno"] == errno.errorcode[code], text
    assert failure.exit_code == 1 and failure.path is not None and failure.path.startswith(str(home.root))
    return match


def left_a_finished_journal(config: Any) -> bool:
    """A finished journal still in the folder writers look in: its move to ``finished/`` failed,
    which only the next writer's look notices (docs/design.md "Journal records and crash points")."""
    return any(config.journal_dir.glob("*.jsonl")) and not pending_journals(config.journal_dir)


def enumerate_failures(
    prepared: RestorableHome,
    operation: Callable[[Any], Any],
    label: str,
    *,
    recovering: bool = False,
    ways: dict[str, tuple[int, int | None]] = FAILURES,
    tolerable: int = 1,
) -> int:
    """Fail ``operation`` at each of its crash points, each of ``ways``; all must report one line,
    recover to old or new, and then complete. At most ``tolerable`` points may fail without
    stopping it (the operation then finishes: the state is new)."""
    home = prepared.restore()
    old, visible_old = observe(home.config), snapshot(home.config)
    total = count_crash_points(lambda: operation(home))
    new = observe(home.config)
    assert total > 0 and (old != new or recovering)  # recovery rolling back shows what was there
    tolerated: set[int] = set()
    for point in range(1, total + 1):
        for way, (first, then) in ways.items():
            where = f"{label}: {way} at point {point}/{total}"
            home = prepared.restore()
            failure = fail_at(lambda: operation(home), point, first, then=then)
            if failure is None:  # a failure it can ignore
                assert observe(home.config) == new, where
                if left_a_finished_journal(home.config):  # its last step, the journal's move out of the writers' way
                    assert point == total, f"{where}: a finished journal left in place, not by the last step"
                else:  # after COMMIT, the database step's own point
                    tolerated.add(point)
                continue
            # Where the first failure did not matter, the next one is what stopped the operation.
            match = check_failure(where, failure, home, then if point in tolerated and then else first)
            outcome = match["outcome"]
            if outcome == "nothing changed" or "the installed plugins are unchanged" in outcome:
                assert snapshot(home.config) == visible_old, f"{where}: said {outcome!r} but the state changed"
            Installer(home.config).recover()
            state = observe(home.config)
            assert state in (old, new), f"{where}: mixed state after recover: {state}"
            if "is committed" in str(failure) or "rolling it forward" in outcome:
                assert state == new, f"{where}: said committed, but recover did not finish it"
            elif not recovering and ("nothing changed" in outcome or "undoing it" in outcome):
                assert state == old, f"{where}: said {outcome!r}, but recover went forward"
            assert_clean(home.config)
            if state == old:
                operation(home)  # space is back, the disk repaired: the same operation succeeds
            assert observe(home.config) == new, f"{where}: the operation did not complete afterwards"
            assert_clean(home.config)
    assert len(tolerated) <= tolerable, f"{label}: failures ignored at points {sorted(tolerated)}"
    FAILURES_CHECKED[label] = total * len(ways)
    return total


ENABLE = (["shop1"], lambda h, p: Installer(h.config).enable("shop"))


@pytest.mark.parametrize("tree", ["installed", "kept"])
def test_every_step_of_a_repairing_reinstall_failing_is_one_line_and_the_next_reinstall_repairs(
    packages: dict[str, Any], make_home: Any, tree: str
) -> None:
    """The repair of the installed tree by its reinstall; and of a tree the store kept, before the upgrade
    that makes it live again (a failure in that upgrade's transaction is one line too)."""
    from crash_harness import damaged_kept_tree, damaged_tree

    damaged, package = (damaged_tree, "shop1") if tree == "installed" else (damaged_kept_tree, "shop2")

    def reinstall(home: Any) -> Any:
        return Installer(home.config).install_file(packages[package])

    reference = damaged(make_home, packages, f"repair-{tree}-reference")
    total = count_crash_points(lambda: reinstall(reference))
    assert total > 3
    tolerated: set[int] = set()
    for point in range(1, total + 1):
        for way, (first, then) in FAILURES.items():
            where = f"repair: {way} at point {point}/{total}"
            home = damaged(make_home, packages, f"repair-{tree}-{point}-{first}-{then}")
            failure = fail_at(lambda: reinstall(home), point, first, then=then)
            if failure is None:  # a failure the repair can ignore (its scratch folder's removal: gc sweeps it)
                tolerated.add(point)
            else:
                # Where the first failure did not matter, the next one is what stopped the repair.
                named = then if point in tolerated and then else first
                assert isinstance(failure, StorageError), f"{where}: {type(failure).__name__}: {failure}"
                assert "\n" not in str(failure) and errno.errorcode[named] in str(failure), f"{where}: {failure}"
            Installer(home.config).recover()
            reinstall(home)  # the disk repaired: the next reinstall finishes the repair
            assert [(p["id"], p["version"]) for p in Installer(home.config).list()] == [("shop", "1.1.0" if tree == "kept" else "1.0.0")]
            assert all(report.ok for report in Installer(home.config).verify(deep=True)), where
            Installer(home.config).gc()  # what a repair leaves in staging when even its cleanup failed
            assert_clean(home.config)


@pytest.mark.parametrize("label", [*sorted(SCENARIOS), "enable"])
def test_every_step_failing_is_one_line_then_recovers_and_completes(label: str, packages: dict[str, Any], make_home: Any) -> None:
    prior, operation = ENABLE if label == "enable" else SCENARIOS[label]
    home = make_home(label)
    install_all(prior, packages)(home)
    if label == "enable":
        Installer(home.config).disable("shop")
    assert enumerate_failures(RestorableHome(home), lambda h: operation(h, packages), label) >= 5


def test_every_step_of_an_upgrade_flattening_the_earlier_fan_out_layout_failing_is_one_line_then_completes(
    packages: dict[str, Any], make_home: Any
) -> None:
    """Flattening is best effort (docs/design.md "The object store"): a failure while it moves objects
    is not in the way, the upgrade goes on, reading what was not moved in place. Only the ways in
    which the first failure can be the one reported: when flattening passed over an ENOSPC, the EIO
    after it is what stops the upgrade."""
    from crash_harness import fan_out_objects

    prior, operation = SCENARIOS["upgrade"]
    home = make_home("fan-out")
    install_all(prior, packages)(home)
    moved = fan_out_objects(home.config)
    assert moved > 0
    ways = {way: FAILURES[way] for way in ("ENOSPC once", "EIO from then on")}
    folders = len([p for p in (home.config.home / "objects").iterdir() if p.is_dir()])
    flattening = moved + folders + 1  # a move each, an rmdir each, the folder's fsync
    checked = enumerate_failures(RestorableHome(home), lambda h: operation(h, packages), "upgrade, fan-out objects", ways=ways, tolerable=flattening + 1)
    assert checked >= 5


def test_every_step_of_gc_failing_is_one_line_and_gc_finishes_later(packages: dict[str, Any], make_home: Any) -> None:
    home = make_home("gc")
    install_all(["shop1", "base", "shop2"], packages)(home)
    assert enumerate_failures(RestorableHome(home), lambda h: Installer(h.config).gc(), "gc") >= 3


@pytest.mark.parametrize("direction", ["forward", "back"])
def test_every_step_of_recover_failing_is_one_line_and_recover_finishes_later(
    direction: str, packages: dict[str, Any], make_home: Any
) -> None:
    setup = install_all(["shop1"], packages)

    def upgrade(home: Any) -> None:
        Installer(home.config).install_file(packages["shop2"])

    point = find_interruption(make_home, setup, upgrade, committed=direction == "forward")
    home = make_home(f"recover-{direction}")
    setup(home)
    assert crash_at(lambda: upgrade(home), point)
    label = f"recover-{direction}"
    assert enumerate_failures(RestorableHome(home), lambda h: Installer(h.config).recover(), label, recovering=True) > 0


# -- the database's side: COMMIT failing with the driver's own errors ---------------------


def _commit_point(home: Any, operation: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> int:
    """The number of the crash point right before COMMIT (the database step's first)."""
    marks: list[int] = []
    real = migrate.crash_point
    monkeypatch.setattr(migrate, "crash_point", lambda: (marks.append(faults.count() + 1), real()))
    count_crash_points(operation)
    monkeypatch.setattr(migrate, "crash_point", real)
    return marks[0]


def _sqlite_full() -> BaseException:
    """A real "database or disk is full" (SQLITE_FULL) from SQLite itself."""
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA max_page_count = 2")
    try:
        db.execute("CREATE TABLE filler (x)")
        db.execute("INSERT INTO filler VALUES (zeroblob(100000))")
    except sqlite3.OperationalError as exc:
        assert exc.sqlite_errorcode == 13  # SQLITE_FULL
        return exc
    finally:
        db.close()
    raise AssertionError("SQLite did not fill up")


def _postgres_disk_full() -> BaseException:
    import psycopg2.errors

    return psycopg2.errors.DiskFull('could not extend file "base/16384/16385": No space left on device')


def test_commit_failing_with_the_drivers_disk_full_error_is_one_line_and_nothing_changed(
    home_factory: Callable[..., Any], database_factory: Callable[[], str], packages: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own SQLITE_FULL, or psycopg2's DiskFull (SQLSTATE class 53), raised where COMMIT is sent."""
    url = database_factory()
    reference = home_factory(name="reference", database_url=url, health_check=False)
    point = _commit_point(reference, lambda: Installer(reference.config).install_file(packages["shop1"]), monkeypatch)
    home = home_factory(name="site", database_url=database_factory(), health_check=False)
    error = _sqlite_full if url.startswith("sqlite") else _postgres_disk_full
    failure = fail_at(lambda: Installer(home.config).install_file(packages["shop1"]), point, error)
    assert isinstance(failure, StorageError), repr(failure)
    from atomicplug.ioerrors import database_location

    text = str(failure)
    assert text.startswith(f"install shop 1.0.0 failed: the database {database_location(home.config.database_url)} failed: ")
    assert ("database or disk is full" if url.startswith("sqlite") else "No space left on device") in text
    assert text.endswith("; nothing changed") and "\n" not in text
    assert Installer(home.config).list() == [] and "shop_items" not in snapshot(home.config)["tables"]
    assert Installer(home.config).recover() == []
    assert Installer(home.config).install_file(packages["shop1"]).changes == ("install shop 1.0.0",)
    assert_clean(home.config)


@pytest.mark.postgres
def test_commit_losing_its_connection_before_the_server_got_it_is_one_line_and_nothing_changed(
    home_factory: Callable[..., Any], packages: dict[str, Any]
) -> None:
    """A real lost connection: a proxy cuts it instead of forwarding COMMIT; the server rolls back."""
    from db_fixtures import postgres_url
    from pg_proxy import CommitDroppingProxy

    server = postgres_url()
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    with CommitDroppingProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        proxy.forward_commit = False
        home = home_factory(database_url=proxy.url(server), health_check=False)
        with pytest.raises(StorageError) as info:
            Installer(home.config).install_file(packages["shop1"])
        assert proxy.dropped.is_set(), "the proxy never saw the COMMIT"
        text = str(info.value)
        assert text.startswith("install shop 1.0.0 failed: the database 127.0.0.1:") and text.endswith("; nothing changed")
        assert "\n" not in text
        assert Installer(home.config).list() == [] and Installer(home.config).recover() == []
        proxy.forward_commit = True
        proxy.dropped.clear()
        assert Installer(home.config).install_file(packages["shop1"]).changes == ("install shop 1.0.0",)
    assert_clean(home.config)


# -- the CLI: one line, exit 1 -------------------------------------------------------------


def test_the_cli_prints_a_failing_disk_as_one_line_and_exits_1(
    home_factory: Callable[..., Any], packages: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    def install(home: Any) -> int:
        return main(["--config", str(home.config_path), "install", str(packages["shop1"])])

    reference = home_factory(name="reference", health_check=False)
    total = count_crash_points(lambda: install(reference))
    home = home_factory(health_check=False)
    capsys.readouterr()
    faults.arm(total // 2, errno.ENOSPC)
    try:
        code = install(home)
    finally:
        faults.arm(0)
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("atomicplug: error: install shop 1.0.0 failed: could not ")
    assert "(ENOSPC); nothing changed" in err and "Traceback" not in err


def test_the_cli_turns_an_oserror_escaping_a_command_into_one_line(home_factory: Callable[..., Any]) -> None:
    """The last resort, for what no library boundary reports: here the output going to a full
    device (/dev/full answers every write with ENOSPC)."""
    home = home_factory()
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "list", "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == ["atomicplug: error: No space left on device (ENOSPC)"]
