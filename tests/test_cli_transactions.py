"""The CLI as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest



def run_cli(home, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atomicplug", "--config", str(home.config_path), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert fragment in lines[0]


def test_install_list_json_uninstall_round_trip(home):
    package = home.package("shop")
    proc = run_cli(home, "install", str(package))
    assert proc.returncode == 0, proc.stderr
    assert "install shop 1.0.0" in proc.stdout
    listed = json.loads(run_cli(home, "list", "--json").stdout)
    assert [(p["id"], p["version"], p["enabled"]) for p in listed] == [("shop", "1.0.0", True)]
    history = json.loads(run_cli(home, "history", "--json").stdout)
    assert history[0]["outcome"] == "done"
    assert run_cli(home, "verify").returncode == 0
    assert run_cli(home, "uninstall", "shop").returncode == 0
    assert json.loads(run_cli(home, "list", "--json").stdout) == []


def test_tampered_package_exits_3_with_one_line(home):
    package = home.package("shop")
    data = bytearray(package.read_bytes())
    data[40] ^= 0xFF
    package.write_bytes(bytes(data))
    proc = run_cli(home, "install", str(package))
    assert_one_line_error(proc, 3, "signature verification failed")
    assert not home.config.home.exists()


def test_unknown_plugin_and_usage_errors(home):
    for command in ("uninstall", "verify", "enable", "disable", "rollback", "settings"):
        assert_one_line_error(run_cli(home, command, "ghost"), 1, "ghost is not installed")
    assert_one_line_error(run_cli(home, "install"), 2, "arguments are required")


def test_broken_config_exits_2(home):
    home.config_path.write_text("home = [unclosed\n")
    assert_one_line_error(run_cli(home, "list"), 2, "not valid TOML")


def test_lock_busy_exits_75(home):
    import filelock

    home.config.home.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(home.config.lock_path))
    with lock:
        home.config_path.write_text(home.config_path.read_text().replace("lock_timeout = 5", "lock_timeout = 0.2"))
        proc = run_cli(home, "install", str(home.package("shop")))
    assert_one_line_error(proc, 75, "another atomicplug operation holds")


def test_debug_shows_the_traceback(home):
    proc = run_cli(home, "--debug", "uninstall", "ghost")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr


def test_init_writes_a_config_that_loads(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "atomicplug", "init", str(tmp_path / "atomicplug.toml")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    from atomicplug.config import Config

    config = Config.load(tmp_path / "atomicplug.toml")
    assert config.home == tmp_path / "state"
    assert config.database_url == f"sqlite:///{tmp_path / 'state' / 'app.db'}"


def test_rollback_of_a_whole_transaction_or_generation_refused_on_the_command_line_changes_nothing(home):
    from atomicplug.registry import Registry
    from atomicplug.testing import snapshot

    assert run_cli(home, "install", str(home.package("alpha"))).returncode == 0
    first = Registry.load(home.config.registry_path).txid
    before = snapshot(home.config)
    assert_one_line_error(run_cli(home, "rollback", "--transaction", first), 2, f"transaction {first} made the first generation; there is nothing before it")
    assert_one_line_error(run_cli(home, "rollback", "--generation", "1"), 2, "generation 1 is already the live one")
    assert_one_line_error(run_cli(home, "rollback", "--generation", "9"), 2, "generation 9 is not kept (kept: 1, listed by `atomicplug generations`; see keep_generations)")
    assert snapshot(home.config) == before
    assert run_cli(home, "install", str(home.package("beta"))).returncode == 0
    assert_one_line_error(run_cli(home, "rollback", "--transaction", first), 2, f"transaction {first} made generation 1, but generation 2 is live")
    back = run_cli(home, "rollback", "--generation", "1")
    assert back.returncode == 0, back.stderr
    assert [p["id"] for p in json.loads(run_cli(home, "list", "--json").stdout)] == ["alpha"]


def test_the_same_version_from_another_package_is_refused_and_changes_nothing(home, tmp_path: Path):
    """Two different zips cannot both be alpha 1.0.0: the second is refused, naming what to do."""
    from atomicplug.testing import PluginSpec, build_package, snapshot

    assert run_cli(home, "install", str(home.package("alpha"))).returncode == 0
    before = snapshot(home.config)
    other = build_package(PluginSpec(id="alpha", version="1.0.0", metadata_extra={"description": "rebuilt"}), tmp_path / "other", home.publisher.secret)
    refused = run_cli(home, "install", str(other))
    assert_one_line_error(refused, 1, "alpha 1.0.0 is installed from a different package (sha256 ")
    assert refused.stderr.strip().endswith("uninstall it first or publish a new version")
    assert snapshot(home.config) == before


def test_a_signature_named_with_signature_that_does_not_exist_is_named_in_the_line(home, tmp_path: Path):
    package = home.package("alpha")
    missing = tmp_path / "nowhere" / "alpha.sig"
    refused = run_cli(home, "install", "--signature", str(missing), str(package))
    assert_one_line_error(refused, 2, f"signature {missing} does not exist")
    assert json.loads(run_cli(home, "list", "--json").stdout) == []


def test_history_lines_say_what_each_command_printed(home):
    assert run_cli(home, "install", str(home.package("alpha"))).returncode == 0
    assert run_cli(home, "install", str(home.package("alpha", "1.1.0"))).returncode == 0
    assert run_cli(home, "disable", "alpha").returncode == 0
    assert run_cli(home, "enable", "alpha").returncode == 0
    lines = run_cli(home, "history").stdout.splitlines()
    said = [line.split(maxsplit=3)[3] for line in lines]  # after the time, the operation and the outcome
    assert said == ["install alpha 1.0.0", "upgrade alpha 1.0.0 -> 1.1.0", "disable alpha", "enable alpha"]
    # Kept to the microsecond (docs/design.md, history.jsonl), shown to the second.
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line.split()[0]) for line in lines), lines
    assert all("." in entry["finished"] for entry in json.loads(run_cli(home, "history", "--json").stdout))


def test_a_home_in_the_earlier_fan_out_layout_works_with_every_command_and_flattens_what_it_can(home, tmp_path):
    """docs/design.md "The object store": objects in fan-out folders are read in place and moved by the
    next install as far as they can be; a folder holding someone's file stays, a symlink named like a
    folder is never followed, and neither is in any command's way."""
    _fanned_out_home(home)
    objects = home.config.home / "objects"
    kept_folder = objects / _fan_out_folders(home)[0]
    (kept_folder / "notes.txt").write_text("an admin's note")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / ("b" * 62)).write_text("not an object")
    free = next(f"{n:02x}" for n in range(256) if not (objects / f"{n:02x}").exists())
    (objects / free).symlink_to(outside)
    doctor = run_cli(home, "doctor")
    assert doctor.returncode == 0
    assert "folder(s) of the earlier fan-out layout read in place" in doctor.stdout, doctor.stdout
    assert f"objects/{free} is a symlink, never followed: what it holds is neither used nor freed" in doctor.stdout
    for args in (("disable", "shop"), ("enable", "shop"), ("gc", "--dry-run"), ("recover",), ("verify",)):
        proc = run_cli(home, *args)
        assert proc.returncode == 0, (args, proc.stderr)
    assert run_cli(home, "install", str(home.package("other"))).returncode == 0
    assert _fan_out_folders(home) == [kept_folder.name]
    assert sorted(p.name for p in kept_folder.iterdir()) == ["notes.txt"]
    assert (outside / ("b" * 62)).read_text() == "not an object" and (objects / free).is_symlink()
    assert f"1 folder(s) of the earlier fan-out layout read in place: {kept_folder.name} " in run_cli(home, "doctor").stdout
    assert run_cli(home, "uninstall", "shop").returncode == 0
    assert run_cli(home, "gc").returncode == 0
    assert run_cli(home, "verify").returncode == 0


def _fanned_out_home(home) -> dict[str, str]:
    """shop 1.0.0 (12 modules) installed, its objects then put back in the earlier fan-out layout."""
    from crash_harness import fan_out_objects

    files = {f"backend/m{i}.py": f"X = {i}\n" for i in range(12)}
    assert run_cli(home, "install", str(home.package("shop", files=files))).returncode == 0
    assert fan_out_objects(home.config) > 0
    return files


def _fan_out_folders(home) -> list[str]:
    return sorted(p.name for p in (home.config.home / "objects").iterdir() if p.is_dir() and not p.is_symlink())


def test_a_transaction_that_stages_no_tree_moves_no_object(home):
    """Found by an adversarial review: a disable moved every object of a fanned-out home, where the
    design says only a transaction that stages objects does."""
    _fanned_out_home(home)
    before = _fan_out_folders(home)
    for args in (("disable", "shop"), ("enable", "shop"), ("rollback", "--generation", "1")):
        proc = run_cli(home, *args)
        assert proc.returncode == 0, (args, proc.stderr)
    assert _fan_out_folders(home) == before


def _chattr(flag: str, folders: list[Path]) -> bool:
    """True when the file system took the flag (ext4, XFS as root); tmpfs and overlays do not."""
    if shutil.which("chattr") is None:
        return False
    return all(subprocess.run(["chattr", flag, str(f)], capture_output=True).returncode == 0 for f in folders)


def test_gc_leaves_an_unused_object_in_a_fan_out_folder_that_refuses_changes(home):
    """Found by an adversarial review: an immutable fan-out folder holding an unused object made every
    gc fail with EPERM and advice to run gc again; now that object stays with its folder."""
    from atomicplug.objects import ObjectStore

    _fanned_out_home(home)
    objects = home.config.home / "objects"
    sha = ObjectStore(objects).put_bytes(b"no kept tree needs me")
    (objects / sha[:2]).mkdir(exist_ok=True)
    (objects / sha).rename(objects / sha[:2] / sha[2:])
    folders = [objects / name for name in _fan_out_folders(home)]
    if not _chattr("+i", folders):
        _chattr("-i", folders)
        pytest.skip("this file system has no immutable flag")
    try:
        for args in (("install", str(home.package("other"))), ("uninstall", "shop"), ("gc",), ("verify",)):
            proc = run_cli(home, *args)
            assert proc.returncode == 0, (args, proc.stderr)
        assert (objects / sha[:2] / sha[2:]).exists()
    finally:
        _chattr("-i", folders)


def test_a_fan_out_folder_the_service_account_may_not_read_is_not_in_the_way(home):
    """Found by an adversarial review: one fan-out folder of another owner (an old atomicplug run once
    under sudo, umask 077) made installs, gc and its dry run fail with EACCES. Run as root without the
    capabilities that skip permission bits, as a service account would be."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the CLI without CAP_DAC_OVERRIDE")
    files = _fanned_out_home(home)
    blocked = home.config.home / "objects" / _fan_out_folders(home)[0]
    os.chown(blocked, 65534, 65534)
    os.chmod(blocked, 0o700)
    upgrade = home.package("shop", "1.1.0", files=dict(files, **{"backend/extra.py": "Y = 1\n"}))
    try:
        for args in (("gc", "--dry-run"), ("gc",), ("install", str(upgrade)), ("verify",), ("doctor",)):
            proc = subprocess.run(
                ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", sys.executable, "-m", "atomicplug",
                 "--config", str(home.config_path), *args],
                capture_output=True, text=True, timeout=120, env=os.environ,
            )  # fmt: skip
            assert proc.returncode == 0, (args, proc.stderr)
        assert f"objects/{blocked.name} is a folder this user may not read" in proc.stdout, proc.stdout
    finally:
        os.chmod(blocked, 0o755)


@pytest.mark.parametrize("hold", ["IMMEDIATE", "EXCLUSIVE"])
def test_a_database_the_application_holds_is_busy_not_a_failed_migration(home, monkeypatch, hold):
    """Found from outside (the billing app's own write transaction on the SQLite file): an install
    waited, then failed as a MigrationError, exit 1, without "nothing changed". It is a busy resource:
    exit 75 (the panel's 409, "try again"), as for atomicplug's own lock."""
    import sqlite3

    from atomicplug.errors import LockBusyError
    from atomicplug.stages import migrate
    from atomicplug.testing import snapshot

    monkeypatch.setattr(migrate, "_busy_timeout", lambda config: 0.3)
    table = {"0001_a": ("CREATE TABLE shop_a (id INTEGER);", "DROP TABLE shop_a;")}
    home.installer.install_file(home.package("shop", migrations=table))
    before = snapshot(home.config)
    app = sqlite3.connect(home.config.database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        app.execute(f"BEGIN {hold}")
        with pytest.raises(LockBusyError, match=r"^the database is busy: .*; nothing changed, try again later$") as info:
            home.installer.install_file(home.package("crm", migrations={"0001_b": ("CREATE TABLE crm_b (id INTEGER);", "DROP TABLE crm_b;")}))
    finally:
        app.close()
    assert info.value.exit_code == 75
    assert snapshot(home.config) == before
