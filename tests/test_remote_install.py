"""Install by id from a signed repository served over loopback HTTP, with dependencies."""

from __future__ import annotations

import os

import pytest

from atomicplug.config import Config
from atomicplug.errors import DependencyError, SecurityError
from atomicplug.installer import Installer
from atomicplug.testing import build_repository, served_repository, snapshot

CORE = {"0001_core": ("CREATE TABLE core_contacts (id INTEGER PRIMARY KEY);", "DROP TABLE core_contacts;")}


@pytest.fixture
def repository(tmp_path, home):
    """core 1.0/1.5/2.0, crm 1.0 (core>=1.0,<2) and 1.1, report (crm, core) — a diamond."""
    packages = [
        home.package("core", "1.0.0", migrations=CORE),
        home.package("core", "1.5.0", migrations=CORE),
        home.package("core", "2.0.0", migrations=CORE),
        home.package("crm", "1.0.0", requires=("core>=1.0,<2",)),
        home.package("crm", "1.1.0", requires=("core>=1.0,<2",)),
        home.package("report", "1.0.0", requires=("crm>=1.0", "core>=1.5")),
    ]
    repo = build_repository(tmp_path / "repo", packages, home.publisher.secret)
    with served_repository(repo) as url:
        yield repo, url


@pytest.fixture
def remote(home, repository):
    _, url = repository
    home.config_path.write_text(home.config_path.read_text() + f'repository = "{url}"\n')
    return Installer(Config.load(home.config_path))


def versions(installer):
    return {p["id"]: p["version"] for p in installer.list()}


def test_install_by_id_brings_the_dependency_closure_in_one_transaction(remote):
    result = remote.install("report")
    assert result.changes == ("install core 1.5.0", "install crm 1.1.0", "install report 1.0.0")
    assert versions(remote) == {"core": "1.5.0", "crm": "1.1.0", "report": "1.0.0"}
    assert len(remote.history()) == 1
    assert "core_contacts" in snapshot(remote.config)["tables"]


def test_exact_and_minimum_versions(remote):
    remote.install("crm==1.0.0")
    assert versions(remote) == {"core": "1.5.0", "crm": "1.0.0"}
    remote.upgrade(["crm"])
    assert versions(remote)["crm"] == "1.1.0"
    assert not remote.install("crm>=1.0").changed


def test_upgrade_that_breaks_a_dependent_is_refused(remote):
    remote.install("crm")
    before = snapshot(remote.config)
    with pytest.raises(DependencyError, match="crm requires core"):
        remote.install("core==2.0.0")
    assert snapshot(remote.config) == before


def test_upgrade_all_and_uninstall_of_a_required_plugin(remote):
    remote.install("crm==1.0.0")
    remote.upgrade()
    assert versions(remote) == {"core": "1.5.0", "crm": "1.1.0"}
    with pytest.raises(DependencyError, match="require"):
        remote.uninstall("core")
    remote.uninstall("core", cascade=True)
    assert versions(remote) == {}


def test_tampered_package_in_the_repository_is_refused_and_nothing_changes(remote, repository):
    repo, _ = repository
    zip_path = next((repo / "plugins" / "core").glob("v1.5.0.zip"))
    data = bytearray(zip_path.read_bytes())
    data[60] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    with pytest.raises(SecurityError):
        remote.install("core==1.5.0")
    assert versions(remote) == {}
    assert not any(remote.config.downloads_dir.glob("*.zip")) if remote.config.downloads_dir.exists() else True


def test_unknown_plugin_is_refused(remote):
    with pytest.raises(DependencyError):
        remote.install("nosuchplugin")


def test_upgrade_on_the_command_line_takes_ids_or_all(remote, home):
    """`upgrade --all` upgrades everything; ids and --all together would silently drop the ids: refused."""
    import json
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "atomicplug", "--config", str(home.config_path), *args], capture_output=True, text=True, timeout=120)

    remote.install("crm==1.0.0")
    for args, message in ((("upgrade",), "upgrade needs plugin ids or --all"), (("upgrade", "crm", "--all"), "upgrade takes plugin ids or --all, not both")):
        refused = cli(*args)
        assert (refused.returncode, refused.stderr.strip()) == (2, f"atomicplug: error: {message}")
    done = cli("upgrade", "--all")
    assert done.returncode == 0, done.stderr
    assert {p["id"]: p["version"] for p in json.loads(cli("list", "--json").stdout)} == {"core": "1.5.0", "crm": "1.1.0"}


def test_install_by_id_of_the_installed_version_repairs_a_damaged_tree_from_the_repository(remote):
    """As reinstalling the zip does: the admin of a panel has no zip, only the repository."""
    remote.install("crm==1.0.0")
    [tree] = (remote.config.home / "store" / "crm").iterdir()
    damaged = next(p for p in tree.rglob("*.py") if p.is_file())
    os.chmod(damaged, 0o644)
    damaged.write_text(damaged.read_text() + "# changed by hand\n")
    (tree / "backend" / "added.py").write_text("raise SystemExit('nobody signed this')\n")
    assert not remote.verify("crm")[0].ok
    result = remote.install("crm")  # its installed 1.0.0 satisfies it: repaired, not upgraded to 1.1.0
    assert result.changes == ("repair crm 1.0.0: 2 files",), result.changes
    assert remote.verify("crm")[0].ok and versions(remote) == {"core": "1.5.0", "crm": "1.0.0"}
    events: list = []
    assert not Installer(remote.config, progress=events.append).install("crm").changed  # intact: nothing to do
    assert not [e for e in events if e.stage == "download"], events  # and nothing downloaded


def test_a_dry_run_of_install_by_id_names_the_repair_from_the_repository_and_repairs_nothing(remote):
    remote.install("crm==1.0.0")
    _damage(remote, "crm")
    before = snapshot(remote.config)
    preview = remote.preview("install", "crm")
    assert (preview.refusal, preview.lines()) == (None, ["repair crm 1.0.0: 1 file damaged"])
    assert snapshot(remote.config) == before and not remote.verify("crm")[0].ok
    assert remote.install("crm").changes == ("repair crm 1.0.0: 1 file",)


def _damage(installer, plugin_id):
    [tree] = (installer.config.home / "store" / plugin_id).iterdir()
    target = tree / "backend" / "__init__.py"
    os.chmod(target, 0o644)
    target.write_text(target.read_text() + "# changed by hand\n")


def test_a_repair_by_id_is_dropped_when_another_writer_changed_the_plugin_during_the_download(remote, home):
    """Found in review: the repair was planned without the lock; an upgrade made meanwhile became a downgrade."""
    remote.install("crm==1.0.0")
    _damage(remote, "crm")
    other = Installer(remote.config)

    def meanwhile(event):
        if event.stage == "download" and versions(other)["crm"] == "1.0.0":
            other.install_file(home.package("crm", "1.1.0", requires=("core>=1.0,<2",)))

    result = Installer(remote.config, progress=meanwhile).install("crm", allow_downgrade=True)
    assert not result.changed, result.changes
    assert versions(remote)["crm"] == "1.1.0" and remote.verify("crm")[0].ok


def test_a_damaged_plugin_the_repository_has_no_package_for_is_left_and_said(remote, home):
    """Installed from a zip the repository does not list: the install by id is not refused (it was, naming
    `crm==0.9.0`, which nobody asked for); a note says how to repair it."""
    remote.install("core==1.0.0")
    remote.install_file(home.package("crm", "0.9.0", requires=("core>=1.0,<2",)))
    _damage(remote, "crm")
    notes: list = []
    result = Installer(remote.config, progress=lambda e: notes.append(str(e)) if e.stage == "note" else None).install(["crm", "core"])
    assert not result.changed, result.changes
    assert versions(remote) == {"core": "1.0.0", "crm": "0.9.0"} and not remote.verify("crm")[0].ok
    assert any("crm 0.9.0 is damaged" in n and "installing its zip again repairs it" in n for n in notes), notes


def test_a_wrong_addon_link_alone_downloads_nothing(remote):
    remote.install("crm")
    link = remote.config.backend_addons
    link.unlink()
    events: list = []
    assert not Installer(remote.config, progress=events.append).install("crm").changed
    assert not [e for e in events if e.stage == "download"], events


def test_an_install_that_upgrades_a_plugin_does_not_hash_the_tree_it_replaces(remote, monkeypatch):
    """Only a plugin the resolution leaves as it is may need a repair: NextPanel's Upgrade must not pay a verify first."""
    import atomicplug.installer as installer_module

    remote.install("crm==1.0.0")
    checked: list[str] = []
    real = installer_module.verify_plugin
    monkeypatch.setattr(installer_module, "verify_plugin", lambda config, entry, **how: checked.append(entry.id) or real(config, entry, **how))
    assert remote.install("crm", upgrade=True).changes == ("upgrade crm 1.0.0 -> 1.1.0",)
    assert checked == []
    assert not remote.install("crm", upgrade=True).changed and checked == ["crm"]  # nothing newer: checked, intact


def test_an_install_refused_at_plan_time_repairs_nothing(remote):
    """Found in review: the repair ran before the plan-time checks, so a refused install had changed the tree."""
    from atomicplug.errors import SettingsError

    remote.install("crm==1.0.0")
    _damage(remote, "crm")
    before = snapshot(remote.config)
    with pytest.raises(SettingsError):
        remote.install(["crm", "report"], settings={"report": {"colour": "red"}})  # report declares no settings
    assert snapshot(remote.config) == before and not remote.verify("crm")[0].ok
    refused = remote.preview("install", ["crm", "report"], settings={"report": {"colour": "red"}})
    assert refused.refusal is not None and refused.repairs == ()  # and its preview names no repair
    assert remote.preview("install", ["crm", "report"]).lines()[0] == "repair crm 1.0.0: 1 file damaged"
    assert remote.install(["crm", "report"]).changes[0] == "repair crm 1.0.0: 1 file"  # once it is not refused


def test_a_store_tree_removed_whole_is_made_again_by_a_repair(remote, home):
    """Found in review: verify names the missing tree, but the repair failed on its missing record, and its
    advice ("installing the package again finishes the repair") failed the same way every time."""
    import shutil

    remote.install("crm==1.0.0")
    [tree] = (remote.config.home / "store" / "crm").iterdir()
    shutil.rmtree(tree)
    assert remote.verify("crm")[0].missing
    result = remote.install("crm")
    assert len(result.changes) == 1 and result.changes[0].startswith("repair crm 1.0.0: "), result.changes
    assert remote.verify("crm")[0].ok and tree.is_dir()
    shutil.rmtree(tree)  # and by the zip, as reinstalling always repaired
    assert remote.install_file(home.package("crm", "1.0.0", requires=("core>=1.0,<2",))).changes[0].startswith("repair crm 1.0.0: ")
    assert remote.verify("crm")[0].ok
