"""Generations (issue 14): a transaction over several plugins switches them all with one rename."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Home

from atomicplug import generations
from atomicplug.errors import OperationError
from atomicplug.registry import Registry
from atomicplug.testing import snapshot

# The reader pins a generation the way the loader does: resolve the addon folder once, then import
# `addons.<id>` from what it resolved to, with a fresh module table each round.
READER = r"""
import importlib, importlib.machinery, json, os, sys, types
folder, stop_file = sys.argv[1], sys.argv[2]
pairs = {}
while not os.path.exists(stop_file):
    pinned = os.path.realpath(folder)
    for name in [m for m in sys.modules if m == "addons" or m.startswith("addons.")]:
        del sys.modules[name]
    package = types.ModuleType("addons")
    package.__spec__ = importlib.machinery.ModuleSpec("addons", None, is_package=True)
    package.__path__ = [pinned]
    sys.modules["addons"] = package
    importlib.invalidate_caches()
    try:
        pair = (importlib.import_module("addons.alpha").VERSION, importlib.import_module("addons.beta").VERSION)
    except (ImportError, FileNotFoundError):  # the pinned generation was collected meanwhile: read again
        continue
    key = "/".join(pair)
    pairs[key] = pairs.get(key, 0) + 1
print(json.dumps(pairs))
"""


def test_a_reader_never_sees_a_mix_of_two_plugins_upgraded_together(home, tmp_path):
    v1 = [home.package("alpha", "1.0.0"), home.package("beta", "1.0.0")]
    v2 = [home.package("alpha", "2.0.0"), home.package("beta", "2.0.0")]
    installer = home.installer
    installer.install_packages([installer.take_in(p) for p in v1])
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-B", "-c", READER, str(home.config.backend_addons), str(stop)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    try:
        for _ in range(6):
            installer.install_packages([installer.take_in(p) for p in v2])
            installer.install_packages([installer.take_in(p) for p in v1], allow_downgrade=True)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    pairs = json.loads(out)
    assert set(pairs) <= {"1.0.0/1.0.0", "2.0.0/2.0.0"}, pairs
    assert sum(pairs.values()) > 0


def test_each_transaction_builds_a_generation_and_current_points_at_it(home):
    home.installer.install_file(home.package("alpha"))
    home.installer.install_file(home.package("beta"))
    assert generations.current_number(home.config) == 2
    assert os.readlink(home.config.home / "current") == "generations/2"
    assert Path(os.readlink(home.config.backend_addons)) == home.config.home / "current" / "backend"
    registry = Registry.load(home.config.registry_path)
    assert (registry.generation, registry.parent) == (2, 1)
    assert home.config.registry_path.is_symlink()
    first = Registry.load(generations.folder(home.config, 1) / "registry.json")
    assert sorted(first.plugins) == ["alpha"]


def test_a_refused_transaction_leaves_no_generation_behind(home):
    home.installer.install_file(home.package("alpha"))
    with pytest.raises(Exception, match="does not import"):
        home.installer.install_file(home.package("beta", files={"backend/__init__.py": "import nowhere_at_all\n"}))
    assert generations.numbers(home.config) == [1]
    assert generations.current_number(home.config) == 1
    from atomicplug import views

    assert os.listdir(views.root(home.config)) == [views.key_of(generations.folder(home.config, 1) / generations.BACKEND)]


def _legacy_layout(home, *, relative: bool = False) -> None:
    """Rebuild the layout before generations by hand: a real backend folder with one link per
    plugin into the store, a registry file, no generations (alpha installed)."""
    import shutil

    home.installer.install_file(home.package("alpha"))
    config = home.config
    tree = Path(os.path.realpath(config.backend_addons / "alpha"))
    registry = Registry.load(config.registry_path)
    for path in (config.backend_addons, config.home / "current", config.registry_path):
        path.unlink()
    for folder in (config.home / "generations").iterdir():
        shutil.rmtree(folder)
    config.backend_addons.mkdir()
    (config.backend_addons / "alpha").symlink_to(os.path.relpath(tree, config.backend_addons) if relative else tree)
    config.registry_path.write_bytes(json.dumps({"generation": "old-txid", "plugins": {
        pid: e.to_dict() for pid, e in registry.plugins.items()}}).encode())  # fmt: skip


@pytest.mark.parametrize("relative", [False, True])
def test_a_legacy_backend_folder_is_converted_once(home, relative):
    """Before generations, the backend folder was a real folder of per-plugin links into the store.
    Found from outside: a link written relative (or through a home reached by a symlink, which an
    earlier atomicplug resolved) was taken for a foreign file, and every transaction was refused."""
    config = home.config
    _legacy_layout(home, relative=relative)
    assert home.installer.list()[0]["id"] == "alpha"
    home.installer.install_file(home.package("beta"))
    assert config.backend_addons.is_symlink()
    assert sorted(p.name for p in config.backend_addons.iterdir()) == ["alpha", "beta"]
    assert all(report.ok for report in home.installer.verify())


def test_the_conversion_after_commit_keeps_what_atomicplug_did_not_put_there(home, capsys):
    """Found from outside: files written into the legacy folder after the check (or while a crash after
    COMMIT left the conversion to `recover`) were deleted with it. The roll forward cannot refuse:
    it removes atomicplug's links, keeps the rest where it is, and names it."""
    _legacy_layout(home)
    config = home.config
    (config.backend_addons / "NOTES.txt").write_text("mine\n")
    (config.backend_addons / "mylib").mkdir()
    generations.ensure_backend_link(config, "t-after-commit")
    kept = config.backend_addons.with_name(".addons.legacy-t-after-commit")
    assert config.backend_addons.is_symlink()
    assert sorted(p.name for p in kept.iterdir()) == ["NOTES.txt", "mylib"]  # alpha's old link removed
    assert (kept / "NOTES.txt").read_text() == "mine\n"
    assert f"kept {kept}: it holds files atomicplug did not put there (NOTES.txt, mylib)" in capsys.readouterr().err


def test_a_live_generation_removed_by_hand_is_refused_not_read_as_empty(home):
    """Found from outside: with `generations/<live>` gone, the registry read as "no plugins" and the next
    install made a generation showing only the new plugin, dropping every other one without a word."""
    import shutil

    home.installer.install_file(home.package("alpha"))
    home.installer.install_file(home.package("beta"))
    live = generations.folder(home.config, generations.current_number(home.config))
    shutil.rmtree(live)
    with pytest.raises(OperationError, match=rf"the live generation {live} is missing \(removed by hand\?\)"):
        home.installer.install_file(home.package("gamma"))
    with pytest.raises(OperationError, match="the live generation"):
        home.installer.list()
    assert generations.numbers(home.config) == [1]  # nothing built, nothing removed


def test_a_backend_folder_with_foreign_files_is_refused_and_left_alone(home):
    config = home.config
    config.backend_addons.mkdir(parents=True)
    (config.backend_addons / "__init__.py").write_text("# the host's own file\n")
    before = snapshot(config)
    with pytest.raises(OperationError, match=r"holds files atomicplug did not put there \(__init__.py\)"):
        home.installer.install_file(home.package("alpha"))
    assert snapshot(config) == before
    assert (config.backend_addons / "__init__.py").read_text() == "# the host's own file\n"


def test_gc_keeps_the_live_and_previous_generations(home):
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        home.installer.install_file(home.package("alpha", version, files={"backend/v.py": f"V = {version!r}\n"}))
    removed = home.installer.gc()
    assert removed["generations"] == 2 and removed["objects"] > 0  # 1.0.0's own files and pycs
    assert removed["views"] == 2  # each version's backend view
    assert generations.numbers(home.config) == [3, 4]
    versions = sorted(p.name.split("-")[0] for p in (home.config.store_dir / "alpha").iterdir())
    assert versions == ["1.1.0", "1.2.0", "1.3.0"]  # 1.1.0: generation 3's previous
    assert all(report.ok for report in home.installer.verify())


@pytest.mark.parametrize(("keep", "made"), [(3, 2), (4, 3), (5, 4), (5, 2)])
def test_gc_keeps_every_generation_while_there_are_fewer_than_keep_generations(home_factory, keep, made):
    """Fewer generations than ``keep_generations``: gc removes none of them (a negative slice once took from the end)."""
    home = home_factory(keep_generations=keep)
    for n in range(made):
        home.installer.install_file(home.package("alpha", f"1.{n}.0"))
    home.installer.gc()
    assert generations.numbers(home.config) == list(range(1, made + 1))
    home.installer.rollback(generation=1)
    assert home.installer.list()[0]["version"] == "1.0.0"


def test_rollback_of_a_whole_transaction_is_one_switch_back(home):
    from atomicplug.testing import table_names

    tables = {"0001_t": ("CREATE TABLE beta_t (id INTEGER);", "DROP TABLE beta_t;")}
    home.installer.install_file(home.package("alpha", "1.0.0"))
    before = snapshot(home.config)
    installer = home.installer
    result = installer.install_packages(
        [installer.take_in(home.package("alpha", "2.0.0")), installer.take_in(home.package("beta", migrations=tables))]
    )
    assert table_names(home.config.database_url) == {"beta_t"}
    undo = installer.rollback(transaction=result.txid)
    assert sorted(undo.changes) == ["downgrade alpha 2.0.0 -> 1.0.0", "uninstall beta 1.0.0"]
    assert snapshot(home.config) == before
    assert generations.current_number(home.config) == 3
    # and forward again to generation 2, by number
    installer.rollback(generation=2)
    assert {p["id"]: p["version"] for p in installer.list()} == {"alpha": "2.0.0", "beta": "1.0.0"}
    assert table_names(home.config.database_url) == {"beta_t"}


def test_rollback_to_a_generation_brings_back_its_previous_versions_too(home):
    """Found by the state machine: the view of generation 1 was back, but a plugin rolled back
    since kept its later ``previous``, so `rollback alpha` then 'undid' generation 1."""
    from atomicplug.change import describe_step
    from atomicplug.errors import AtomicplugError

    installer = home.installer
    installer.install_file(home.package("alpha", "1.0.0"))
    installer.install_file(home.package("alpha", "1.1.0"))
    installer.rollback("alpha")  # 1.0.0 again, with 1.1.0 as its previous
    result = installer.rollback(generation=1)  # the same tree: only `previous` differs
    entry = Registry.load(home.config.registry_path).plugins["alpha"]
    assert (entry.version, entry.previous) == ("1.0.0", None)
    # said as what it is, not as "enable alpha" (alpha was enabled all along), and history says the same
    assert result.changes == ("keep alpha 1.0.0 (rollback target: 1.1.0 -> none)",)
    assert [describe_step(step) for step in installer.history()[-1]["steps"]] == list(result.changes)
    with pytest.raises(AtomicplugError, match="no previous version to roll back to"):
        installer.rollback("alpha")


def test_a_kept_generation_switched_back_to_after_gc_still_rolls_a_plugin_back(home):
    """Found by the state machine: gc kept only the live generation's previous trees, so after
    `rollback --generation` to an older kept one, `rollback alpha` found its previous tree gone."""
    installer = home.installer
    installer.install_file(home.package("alpha", "1.0.0"))  # generation 1
    installer.install_file(home.package("alpha", "1.1.0"))  # 2
    installer.rollback("alpha")  # 3: 1.0.0, with 1.1.0 as its previous
    installer.rollback(generation=1)  # 4: 1.0.0 with no previous
    installer.gc()  # keeps 3 and 4
    installer.rollback(generation=3)  # 5: 1.0.0 with 1.1.0 as its previous again
    installer.rollback("alpha")
    assert {p["id"]: p["version"] for p in installer.list()} == {"alpha": "1.1.0"}
    assert all(report.ok for report in installer.verify())


def test_rollback_of_a_transaction_that_is_not_the_live_one_is_refused(home):
    from atomicplug.errors import UsageError

    first = home.installer.install_file(home.package("alpha"))
    home.installer.install_file(home.package("beta"))
    with pytest.raises(UsageError, match="made generation 1, but generation 2 is live"):
        home.installer.rollback(transaction=first.txid)
    with pytest.raises(UsageError, match="generation 7 is not kept"):
        home.installer.rollback(generation=7)


def test_what_a_tree_holds_is_probed_once_then_read_from_its_registry_entry(home, monkeypatch):
    """Issue 14: at 1000 plugins, probing every tree for backend/ and addon.config.ts cost ~2000 stats per transaction."""
    from atomicplug import registry as registry_module

    home.installer.install_file(home.package("alpha"))
    entry = Registry.load(home.config.registry_path).plugins["alpha"]
    assert (entry.current.backend, entry.current.frontend) == (True, True)
    probed: list[str] = []
    real_probe = registry_module.probe_parts
    monkeypatch.setattr(registry_module, "probe_parts", lambda home_dir, tree: probed.append(tree) or real_probe(home_dir, tree))
    home.installer.install_file(home.package("beta"))
    home.installer.disable("alpha")
    home.installer.enable("alpha")
    assert probed and all(tree.startswith("store/beta/") for tree in probed), probed
    view = generations.folder(home.config, generations.current_number(home.config)) / generations.BACKEND
    assert sorted(os.listdir(view)) == ["alpha", "beta"]


def test_a_registry_written_before_parts_were_kept_is_probed(home):
    """A registry entry without "backend"/"frontend" (an older atomicplug's) still gets its links and its index import."""
    home.installer.install_file(home.package("alpha"))
    live = generations.folder(home.config, generations.current_number(home.config)) / generations.REGISTRY_NAME
    data = json.loads(live.read_bytes())
    for entry in data["plugins"].values():
        del entry["backend"], entry["frontend"]
    live.write_text(json.dumps(data, indent=2))
    assert Registry.load(home.config.registry_path).plugins["alpha"].current.backend is None
    home.installer.install_file(home.package("beta"))
    number = generations.current_number(home.config)
    assert sorted(os.listdir(generations.folder(home.config, number) / generations.BACKEND)) == ["alpha", "beta"]
    assert Registry.load(home.config.registry_path).plugins["alpha"].current.backend is True
    index = (home.config.frontend_addons / "index.ts").read_text()
    assert "/alpha/" in index and "/beta/" in index


def test_the_registry_is_read_again_when_its_bytes_change(tmp_path):
    path = tmp_path / "registry.json"
    path.write_bytes(Registry(generation=1).to_json())
    assert Registry.load(path).generation == 1
    path.write_bytes(Registry(generation=2).to_json())  # same size, same inode
    assert Registry.load(path).generation == 2
    path.write_bytes(b"{not json")
    with pytest.raises(OperationError, match="damaged"):
        Registry.load(path)


def test_a_generation_and_its_view_are_made_durable_by_fsyncs_of_their_folders_not_a_syncfs(home, monkeypatch):
    """syncfs would also flush every other process's writes on the file system (issue 14)."""
    from atomicplug import fsutil, views

    home.installer.install_file(home.package("alpha"))
    synced: list[Path] = []
    fsynced: list[str] = []
    real_fsync_dir = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "sync_tree", synced.append)
    monkeypatch.setattr(fsutil, "fsync_dir", lambda path: fsynced.append(str(path)) or real_fsync_dir(path))
    home.installer.disable("alpha")  # a view never shown before: no plugin at all
    number = generations.current_number(home.config)
    view = views.key_of(generations.folder(home.config, number) / generations.BACKEND)
    assert synced == []
    assert str(views.root(home.config) / f".building-{view}") in fsynced
    assert str(generations.root(home.config) / f".building-{number}") in fsynced
    assert {str(views.root(home.config)), str(generations.root(home.config))} <= set(fsynced)  # the renames into place


def test_a_generation_showing_a_backend_view_seen_before_shares_it(home, monkeypatch):
    """Issue 14: 1000 links for every generation, although rollbacks and undone toggles show a view
    an earlier generation already has; a view is made once per content (atomicplug.views)."""
    from atomicplug import fsutil, views

    home.installer.install_file(home.package("alpha"))
    home.installer.install_file(home.package("beta"))
    both = generations.current_number(home.config)
    made: list[list[str]] = []
    real = fsutil.make_symlinks
    monkeypatch.setattr(
        fsutil, "make_symlinks", lambda folder, links, **kw: made.append([n for n, _ in links]) or real(folder, links, **kw)
    )

    def view(number: int) -> str | None:
        return views.key_of(generations.folder(home.config, number) / generations.BACKEND)

    home.installer.disable("beta")  # alpha alone: generation 1's view
    assert made == [[generations.BACKEND]] and view(generations.current_number(home.config)) == view(1)
    home.installer.rollback(generation=both)
    assert made[1:] == [[generations.BACKEND]] and view(generations.current_number(home.config)) == view(both)
    home.installer.install_file(home.package("gamma"))  # a view never seen: its links are made
    assert made[2:] == [["alpha", "beta", "gamma"], [generations.BACKEND]]
    # what the live view held is hard-linked from it, not made again (no new inode)
    new, old = (generations.folder(home.config, n) / generations.BACKEND for n in (generations.current_number(home.config), both))
    assert all(os.lstat(new / pid).st_ino == os.lstat(old / pid).st_ino for pid in ("alpha", "beta"))
    assert os.lstat(new / "gamma").st_nlink == 1
    assert sorted(os.listdir(home.config.backend_addons)) == ["alpha", "beta", "gamma"]
    assert all(report.ok for report in home.installer.verify())
    home.installer.gc()  # keeps the views of the two generations it keeps, removes the rest
    assert sorted(os.listdir(views.root(home.config))) == sorted(generations.shown_views(home.config))
    assert len(generations.shown_views(home.config)) == 2


def test_a_transaction_reads_back_the_generation_it_built_without_parsing_it(home, monkeypatch):
    home.installer.install_file(home.package("alpha"))
    parsed: list[bytes] = []
    real_parse = Registry._parse
    monkeypatch.setattr(Registry, "_parse", classmethod(lambda cls, path, raw: parsed.append(raw) or real_parse(path, raw)))
    home.installer.install_file(home.package("beta"))
    home.installer.disable("alpha")
    assert parsed == []  # the live registry each time is the one this process wrote
    assert Registry.load(home.config.registry_path).plugins["alpha"].enabled is False


def test_doctor_names_a_live_generation_link_removed_by_hand(home):
    """`list` then says "no plugins installed" while generations are kept: doctor must not pass it."""
    import json as _json

    home.installer.install_file(home.package("alpha"))
    os.unlink(home.config.home / generations.CURRENT)
    doctor = subprocess.run([sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "doctor", "--json"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    finding = {f["check"]: f for f in _json.loads(doctor.stdout)}["generation"]
    assert not finding["ok"] and finding["detail"].startswith(f"no live generation: {home.config.home / 'current'} is missing")
    assert finding["detail"].endswith("`atomicplug recover` (or the next change) points it at generation 1 again"), finding


def _cli(home, *args):
    return subprocess.run([sys.executable, "-m", "atomicplug", "--config", str(home.config_path), *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_recover_puts_back_a_live_generation_link_removed_by_hand(home):
    """Every transaction makes a higher-numbered generation (a rollback too), so the live one is the highest kept."""
    installer = home.installer
    installer.install_file(home.package("alpha", "1.0.0"))  # generation 1
    installer.install_file(home.package("alpha", "1.1.0"))  # 2
    installer.rollback(generation=1)  # 3: alpha 1.0.0 again
    os.unlink(home.config.home / generations.CURRENT)
    assert installer.list() == []
    done = _cli(home, "recover")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{home.config.home / 'current'} was missing (removed by hand?): it points at generation 3 again"]
    assert generations.current_number(home.config) == 3
    assert {p["id"]: p["version"] for p in installer.list()} == {"alpha": "1.0.0"}
    assert _cli(home, "doctor").returncode == 0
    assert _cli(home, "recover").stdout.strip() == "nothing to recover"


def test_a_transaction_after_the_live_link_was_removed_starts_from_the_live_generation(home):
    """Without the link the registry read empty: the next install made a generation showing only its own plugin."""
    installer = home.installer
    installer.install_file(home.package("alpha"))
    os.unlink(home.config.home / generations.CURRENT)
    installer.install_file(home.package("beta"))
    assert {p["id"] for p in installer.list()} == {"alpha", "beta"}
    assert all(report.ok for report in installer.verify())


def test_generations_lists_the_kept_ones_with_what_each_shows_and_the_transaction_that_made_it(home):
    """What `rollback --generation N` needs: which N shows what (as `nix-env --list-generations`, `ostree admin status`)."""
    installer = home.installer
    installer.install_file(home.package("alpha", "1.0.0"))  # generation 1
    installer.install_file(home.package("beta"))  # 2
    installer.install_file(home.package("alpha", "1.1.0"))  # 3
    installer.disable("beta")  # 4
    installer.gc()  # keeps 3 and 4
    listed = _cli(home, "generations")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(rf"generation 4 \(live\)  {stamp}  disable beta", lines[0]), lines
    assert lines[1] == "  alpha 1.1.0, beta 1.0.0 (disabled)"
    assert re.fullmatch(rf"generation 3  {stamp}  upgrade alpha 1.0.0 -> 1.1.0", lines[2]), lines
    assert lines[3] == "  alpha 1.1.0, beta 1.0.0" and len(lines) == 4
    rows = json.loads(_cli(home, "generations", "--json").stdout)
    assert [(r["generation"], r["live"], r["operation"], r["parent"]) for r in rows] == [(4, True, "disable", 3), (3, False, "upgrade", 2)]
    assert rows[1]["plugins"] == [{"id": "alpha", "version": "1.1.0", "enabled": True}, {"id": "beta", "version": "1.0.0", "enabled": True}]
    installer.rollback(generation=3)  # 5, showing 3's view: made by the rollback
    assert re.fullmatch(rf"generation 5 \(live\)  {stamp}  rollback: enable beta", _cli(home, "generations").stdout.splitlines()[0])


def test_generations_before_the_first_install(home):
    listed = _cli(home, "generations")
    assert (listed.returncode, listed.stdout) == (0, "no generations yet (nothing installed)\n")


def _files_of(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("layout", ["flat", "fan-out"])
def test_gc_dry_run_says_what_gc_would_remove_and_free_and_removes_nothing(home, layout):
    """Also in a home whose objects are in the earlier fan-out layout: read in place, nothing moved."""
    from crash_harness import fan_out_objects

    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):  # gc keeps 3 and 4, and 1.1.0: generation 3's previous
        home.installer.install_file(home.package("alpha", version, files={"backend/v.py": f"V = {version!r}\n" * 2000}))
    if layout == "fan-out":
        assert fan_out_objects(home.config) > 0
    before = _files_of(home.config.home)
    dry = _cli(home, "gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert _files_of(home.config.home) == before
    said = re.fullmatch(r"would remove 2 generation\(s\), 2 view\(s\), 1 store tree\(s\), (\d+) object\(s\), 0 package\(s\), "
                        r"(\d+) journal\(s\), 0 leftover\(s\), freeing (\d+) bytes\n", dry.stdout)  # fmt: skip
    assert said, dry.stdout
    done = _cli(home, "gc")
    assert done.returncode == 0, done.stderr
    assert done.stdout == dry.stdout.replace("would remove", "removed").replace(", freeing", ", freed"), (dry.stdout, done.stdout)
    assert int(said[3]) >= len("V = '1.0.0'\n") * 2000  # 1.0.0's own v.py object at least
    assert _cli(home, "gc", "--dry-run").stdout.startswith("would remove 0 generation(s), 0 view(s), 0 store tree(s), 0 object(s)")


def test_gc_dry_run_with_the_live_link_removed_counts_what_gc_would_after_putting_it_back(home):
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        home.installer.install_file(home.package("alpha", version))
    os.unlink(home.config.home / generations.CURRENT)
    dry = _cli(home, "gc", "--dry-run")
    assert not (home.config.home / generations.CURRENT).exists()  # a dry run does not relink either
    done = _cli(home, "gc")
    assert dry.stdout.startswith("would remove 1 generation(s), 1 view(s), 0 store tree(s), 0 object(s)"), dry.stdout
    assert done.stdout == dry.stdout.replace("would remove", "removed").replace(", freeing", ", freed"), (dry.stdout, done.stdout)


def test_gc_dry_run_refuses_while_a_transaction_is_unfinished(home_factory):
    from atomicplug.installer import Installer
    from atomicplug.testing import count_crash_points, crash_at

    reference, home = home_factory(name="reference"), home_factory(name="crashed")
    total = count_crash_points(lambda: Installer(reference.config).install_file(reference.package("alpha")))
    assert crash_at(lambda: Installer(home.config).install_file(home.package("alpha")), total - 2)
    before = _files_of(home.config.home)
    dry = _cli(home, "gc", "--dry-run")
    assert (dry.returncode, dry.stdout) == (1, ""), dry
    assert dry.stderr.strip().endswith("run `atomicplug recover`, then `atomicplug gc --dry-run` again"), dry.stderr
    assert len(dry.stderr.strip().splitlines()) == 1 and _files_of(home.config.home) == before


def test_a_clock_set_back_still_orders_the_history_as_it_happened(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    """Txids are made from the wall clock, and readers take their order for the order of the
    transactions (``history``'s listing; ``generations``, which reads history from the end no
    further back than the oldest txid it asks for). A clock set back (an NTP step) between two
    transactions must not reorder them: the next txid comes after the last one in the home."""
    from datetime import datetime, timedelta

    from atomicplug.journal import writer

    class EarlierClock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return datetime.now(tz) - timedelta(hours=1)

    installer = home.installer
    first = installer.install_file(home.package("alpha"))
    monkeypatch.setattr(writer, "datetime", EarlierClock)
    second = installer.install_file(home.package("beta"))
    third = installer.disable("beta")
    assert first.txid < second.txid < third.txid
    assert [entry["txid"] for entry in installer.history()] == [first.txid, second.txid, third.txid]
    rows = installer.generations()
    assert [row["operation"] for row in rows] == ["disable", "install", "install"]


@pytest.mark.parametrize("which", ["live", "older"])
def test_a_generation_whose_registry_is_missing_is_refused_not_read_as_empty(home_factory, which):
    """Found from outside: a generation's registry.json removed read as "no plugins", so gc removed the
    live trees and a rollback to that generation uninstalled everything, dropping tables."""
    home = home_factory(keep_generations=5)
    tables = {"0001_t": ("CREATE TABLE gamma_t (id INTEGER);", "DROP TABLE gamma_t;")}
    for plugin, fields in (("alpha", {}), ("gamma", {"migrations": tables}), ("beta", {})):
        home.installer.install_file(home.package(plugin, **fields))
    number = 3 if which == "live" else 2
    (generations.folder(home.config, number) / generations.REGISTRY_NAME).unlink()
    trees = sorted(p for p in home.config.store_dir.glob("*/*"))
    expected = f"registry {generations.folder(home.config, number) / generations.REGISTRY_NAME} is missing"
    commands = [("gc",), ("doctor",)]
    commands += [("verify",), ("list",), ("uninstall", "beta"), ("rollback", "--generation", "1")] if which == "live" else [("rollback", "--generation", "2")]
    for args in commands:
        proc = _cli(home, *args)
        assert proc.returncode != 0, (args, proc.stdout, proc.stderr)
        assert expected in proc.stderr + proc.stdout, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert sorted(p for p in home.config.store_dir.glob("*/*")) == trees
    from atomicplug.testing import table_names

    assert table_names(home.config.database_url) == {"gamma_t"}


@pytest.mark.parametrize("change", ["retargeted", "added"])
def test_a_kept_view_changed_by_hand_is_made_again_before_it_is_shown(home, tmp_path, change):
    """Found from outside: a view is named by what it should hold, and a rollback showed a kept
    generation's view as it found it: an entry pointed elsewhere by hand, or one added, went live."""
    home.installer.install_file(home.package("alpha", "1.0.0"))
    home.installer.install_file(home.package("alpha", "1.1.0"))
    view = (generations.folder(home.config, 1) / generations.BACKEND).resolve()
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "__init__.py").write_text("PWNED = True\n")
    if change == "retargeted":
        (view / "alpha").unlink()
        (view / "alpha").symlink_to(evil)
    else:
        (view / "evil").symlink_to(evil)
    home.installer.rollback("alpha")
    live = home.config.home / generations.CURRENT / generations.BACKEND
    assert sorted(os.listdir(live)) == ["alpha"]
    assert (live / "alpha").resolve().parent.name.startswith("1.0.0-")
    assert all(report.ok for report in home.installer.verify())


def test_verify_across_a_switch_reads_one_generation_not_a_mix(home, monkeypatch):
    """Found from outside: `verify` (no lock: hashing takes seconds) read the registry of one
    generation and the links of the next when a transaction switched meanwhile: an intact plugin
    was reported MODIFIED with bad links, exit 1. Damage seen across a switch is looked at again."""
    from atomicplug import installer as installer_module

    home.installer.install_file(home.package("alpha", "1.0.0"))
    newer = home.package("alpha", "1.1.0")
    real = installer_module.verify_plugin
    switched: list[bool] = []

    def with_a_transaction_in_between(config, entry, **kwargs):
        if not switched:
            switched.append(True)
            type(home.installer)(home.config).install_file(newer)  # another writer switches to 1.1.0 now
        return real(config, entry, **kwargs)

    monkeypatch.setattr(installer_module, "verify_plugin", with_a_transaction_in_between)
    reports = home.installer.verify()
    assert switched and [(r.plugin_id, r.version, r.ok) for r in reports] == [("alpha", "1.1.0", True)]


def test_doctor_tells_a_transaction_in_progress_from_unfinished_work(home, tmp_path):
    """Found from outside: `doctor` run while a writer worked said "1 unfinished transaction(s): run
    `atomicplug recover`" (exit 1). A journal whose writer holds the lock is work in progress."""
    from atomicplug.doctor import examine

    from atomicplug.journal.writer import Journal

    home.installer.install_file(home.package("alpha", "1.0.0"))
    left = Journal.begin(home.config.journal_dir, "20991231T000000000000-abcdef", plan={"operation": "install", "steps": []})
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl, sys; f = open({str(home.config.lock_path)!r}); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        [finding] = [f for f in examine(home.config) if f.check == "journal"]
        assert (finding.ok, finding.detail) == (True, f"a transaction is in progress ({left.txid})")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    [finding] = [f for f in examine(home.config) if f.check == "journal"]
    assert (finding.ok, finding.detail) == (False, "1 unfinished transaction(s): run `atomicplug recover`")


def test_doctor_skips_a_generation_gc_removed_while_it_looked(home, monkeypatch):
    """doctor reads kept generations without the lock: one listed, then removed whole by a gc, is no
    rollback target any more, not a generation whose registry is missing."""
    from atomicplug.doctor import examine

    home.installer.install_file(home.package("alpha", "1.0.0"))
    listed = generations.numbers
    monkeypatch.setattr(generations, "numbers", lambda config: [0, *listed(config)])  # 0: gone since it was listed
    [finding] = [f for f in examine(home.config) if f.check == "rollback targets"]
    assert finding.ok, finding.detail


def test_rollback_of_a_plugin_gives_back_the_signer_of_the_version_it_goes_to(home_factory, publisher, tmp_path):
    """Found from outside: `rollback alpha` kept the signer of the version it left (`list` showed
    1.0.0 signed by 1.1.0's key); a fresh install of 1.0.0 and `rollback --generation` show 1.0.0's."""
    from atomicplug.testing import PluginSpec, build_package, make_keypair

    other = make_keypair(tmp_path / "other-key")
    home = home_factory(trusted_keys=[str(publisher.public_path), str(other.public_path)])
    home.installer.install_file(build_package(PluginSpec(id="alpha", version="1.0.0"), tmp_path / "pk", publisher.secret))
    home.installer.install_file(build_package(PluginSpec(id="alpha", version="1.1.0"), tmp_path / "pk", other.secret))
    assert home.installer.list()[0]["signed_by"] == other.secret.key_id_hex
    home.installer.rollback("alpha")
    [entry] = home.installer.list()
    assert (entry["version"], entry["signed_by"]) == ("1.0.0", publisher.secret.key_id_hex)


def test_the_live_view_changed_by_hand_is_never_removed_also_through_a_linked_home(home_factory, publisher, tmp_path):
    """Found in review: `views.ensure` compared the resolved live view with an unresolved path, so with
    the home reached through a symlink it took the live view for a kept one and removed it to make it
    again: the addon folder dangled meanwhile, and for good when the disk failed right then."""
    import shutil

    from atomicplug.packing import pack
    from atomicplug.testing import PluginSpec, write_plugin_source

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    home = home_factory(home=str(tmp_path / "link" / "state"))  # an absolute home keeps its link (Config.path_of)
    assert "link" in str(home.config.home)
    home.installer.install_file(home.package("shop"))
    live = Path(os.path.realpath(home.config.home / generations.CURRENT / generations.BACKEND))
    (live / "zzz_hand").symlink_to(tmp_path)
    source = write_plugin_source(PluginSpec(id="ui"), tmp_path / "src" / "ui")
    shutil.rmtree(source / "backend")  # frontend only: its generation shows the same backend view
    home.installer.install_file(pack(source, publisher.secret, tmp_path / "ui.zip").zip_path)
    assert (live / "zzz_hand").is_symlink()  # left as it is: `verify` names it
    assert os.path.isdir(home.config.backend_addons / "shop")


def test_a_rollback_to_a_tree_with_an_epoch_version_an_earlier_atomicplug_installed_works(home, monkeypatch):
    """Found in review: refusing epochs in the metadata parser refused a rollback to a tree an earlier
    atomicplug had installed with one; only packages new to atomicplug are refused (intake, pack)."""
    from atomicplug import intake, metadata, packing
    from atomicplug.errors import MetadataError

    for module in (intake, metadata, packing):  # an earlier atomicplug: no refusal anywhere
        monkeypatch.setattr(module, "refuse_new", lambda meta: None, raising=False)
    older, newer = home.package("legacy", "1!1.0.0"), home.package("legacy", "1!2.0.0")
    home.installer.install_file(older)
    home.installer.install_file(newer)
    monkeypatch.undo()
    assert home.installer.rollback("legacy").changes == ("downgrade legacy 1!2.0.0 -> 1!1.0.0",)
    with pytest.raises(MetadataError, match="must not have an epoch"):
        home.installer.install_file(newer)  # the same package, new to this home's intake again
