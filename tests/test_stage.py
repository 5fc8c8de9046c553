"""Staging (issue 14): store trees made of hard links to content-addressed objects.

Installs through the Installer API; what is asserted is what the issue asks:
identical files share one object, an upgrade writes only what changed, the
import system uses our pycs without writing, a damaged object is caught by
``verify``, repaired by reinstalling and never linked into a new tree.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import attrs
import pytest

from atomicplug.errors import OperationError, PackageError
from atomicplug.installer import Installer
from atomicplug.minisign import sign_file
from atomicplug.objects import MTIME_STAMP_NS, ObjectStore
from atomicplug.pycs import IN_PROCESS_BYTES, SourceCompiler, build_pyc, pyc_name
from atomicplug.stages.stage import installed_pycs
from atomicplug.store import RECORD_NAME, plugin_trees, read_record, sha256_file

SHARED = "# one module every version and plugin ships\n" + "VALUE = 42\n" * 20


def _tree(home, plugin_id: str) -> Path:
    return Path(os.path.realpath(home.config.backend_addons / plugin_id)).parent


def _objects(home) -> ObjectStore:
    return ObjectStore(home.config.home / "objects")


def test_identical_files_across_plugins_and_versions_are_one_object(home):
    files = {"backend/shared.py": SHARED}
    home.installer.install_file(home.package("alpha", files=files))
    home.installer.install_file(home.package("beta", files=files))
    alpha, beta = (_tree(home, pid) / "backend" / "shared.py" for pid in ("alpha", "beta"))
    assert os.stat(alpha).st_ino == os.stat(beta).st_ino
    assert os.stat(alpha).st_nlink == 3  # the object and two trees
    pyc_alpha = next((alpha.parent / "__pycache__").glob("shared.*.pyc"))
    pyc_beta = next((beta.parent / "__pycache__").glob("shared.*.pyc"))
    assert os.stat(pyc_alpha).st_ino == os.stat(pyc_beta).st_ino, "the pyc of the same source is one object too"


def test_an_upgrade_inflates_and_compiles_only_what_changed(home):
    many = {f"backend/m{i}.py": f"VALUE = {i}\n" for i in range(30)}
    home.installer.install_file(home.package("alpha", "1.0.0", files=many))
    old = _tree(home, "alpha")
    messages: list[str] = []
    changed = {**many, "backend/m7.py": "VALUE = 'new'\n"}
    Installer(home.config, progress=lambda event: messages.append(str(event))).install_file(home.package("alpha", "1.1.0", files=changed))
    new = _tree(home, "alpha")
    assert new != old
    same = [p for p in many if p != "backend/m7.py"]
    assert all(os.stat(old / p).st_ino == os.stat(new / p).st_ino for p in same)
    assert os.stat(old / "backend/m7.py").st_ino != os.stat(new / "backend/m7.py").st_ino
    assert any("already in the object store" in m for m in messages), messages


def test_the_import_system_uses_the_pycs_and_writes_nothing(home, tmp_path):
    home.installer.install_file(home.package("alpha", files={"backend/routes.py": "def answer():\n    return 'é' * 2\n"}))
    tree = _tree(home, "alpha")
    pyc = next((tree / "backend" / "__pycache__").glob("routes.*.pyc"))
    before = sorted(p.name for p in (tree / "backend").rglob("*"))
    code = (  # -B is not given: a missing or stale pyc would be written, and show up below
        "import importlib, sys, types\n"
        f"pkg = types.ModuleType('addons'); pkg.__path__ = [{str(home.config.backend_addons)!r}]; sys.modules['addons'] = pkg\n"
        "mod = importlib.import_module('addons.alpha.routes')\n"
        "import os; print(mod.answer(), os.path.realpath(mod.__cached__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["éé", os.path.realpath(pyc)]
    assert sorted(p.name for p in (tree / "backend").rglob("*")) == before


def test_the_tree_record_lists_files_and_pycs_once_and_a_shipped_pyc_is_replaced(home):
    shipped = f"backend/__pycache__/routes.{sys.implementation.cache_tag}.pyc"
    package = home.package("alpha", files={"backend/routes.py": "X = 1\n", shipped: b"not a pyc at all"})
    home.installer.install_file(package)
    tree = _tree(home, "alpha")
    listed = read_record(tree)
    paths = [entry.path for entry in listed]
    assert len(paths) == len(set(paths)) and shipped in paths
    assert (tree / shipped).read_bytes() != b"not a pyc at all"
    for entry in listed:
        assert sha256_file(tree / entry.path) == entry.sha256
    # compact: RECORD named, then only what RECORD does not say (our pycs, the shipped one replaced)
    header, *lines = (tree / RECORD_NAME).read_text().splitlines()
    record = next(e for e in listed if e.path == "RECORD")
    assert json.loads(header) == {"format": 2, "package_record": ["RECORD", record.size, record.sha256]}
    assert [json.loads(line)[0] for line in lines] == sorted(e.path for e in listed if e.path.endswith(".pyc"))


def test_a_backend_that_does_not_compile_is_refused_by_name(home):
    with pytest.raises(PackageError, match=r"backend/broken.py does not compile"):
        home.installer.install_file(home.package("alpha", files={"backend/broken.py": "def nope(:\n"}))
    assert home.installer.list() == []


def test_pycs_stored_before_a_later_source_is_refused_are_removed_again(home):
    """Each pyc is stored as an object as the worker answers (issue 14, memory): a package refused
    afterwards leaves none of them behind, like the extractor's own objects."""
    good = {f"backend/big{i}.py": f"X{i} = '{'x' * (IN_PROCESS_BYTES // 2)}'\n" for i in range(4)}
    with pytest.raises(PackageError, match=r"backend/broken.py does not compile"):
        home.installer.install_file(home.package("alpha", files={**good, "backend/broken.py": "def nope(:\n"}))
    pycs = [hashlib.sha256(build_pyc(source.encode())).hexdigest() for source in good.values()]
    assert not any(_objects(home).path(sha).exists() for sha in pycs)
    assert home.installer.list() == []


def test_a_flipped_byte_is_caught_by_verify_repaired_by_reinstalling_and_not_spread(home):
    package = home.package("alpha", "1.0.0", files={"backend/shared.py": SHARED})
    home.installer.install_file(package)
    target = _tree(home, "alpha") / "backend" / "shared.py"
    os.chmod(target, 0o644)  # as a careless editor (or a cosmic ray with root) would
    data = bytearray(target.read_bytes())
    data[5] ^= 0x01
    target.write_bytes(bytes(data))
    [report] = home.installer.verify()
    assert report.changed == ("backend/shared.py",)
    # A new version sharing that file must not link the damaged object: it is re-inflated and repaired.
    home.installer.install_file(home.package("alpha", "1.1.0", files={"backend/shared.py": SHARED}))
    assert (_tree(home, "alpha") / "backend" / "shared.py").read_text() == SHARED
    assert all(r.ok for r in home.installer.verify())
    # and rot that keeps the object's stat (mtime restored) is repaired by reinstalling the package
    home.installer.rollback("alpha")
    sha = next(e.sha256 for e in read_record(_tree(home, "alpha")) if e.path == "backend/shared.py")
    obj = _objects(home).path(sha)
    os.chmod(obj, 0o644)
    rotten = bytearray(obj.read_bytes())
    rotten[9] ^= 0x01
    obj.write_bytes(bytes(rotten))
    os.chmod(obj, 0o444)
    os.utime(obj, ns=(MTIME_STAMP_NS, MTIME_STAMP_NS))
    assert not all(r.ok for r in home.installer.verify())
    result = home.installer.install_file(package)
    assert result.changes == ("repair alpha 1.0.0: 1 file",)
    assert all(r.ok for r in home.installer.verify())
    assert obj.read_text() == SHARED


@pytest.mark.parametrize(("how", "damage"), [("upgrade", "changed"), ("downgrade", "changed"), ("upgrade", "added")])
def test_a_damaged_tree_already_in_the_store_is_repaired_before_a_package_makes_it_live(home, how, damage):
    """Found from outside: a tree the store still holds (the version rolled back from, or the one
    upgraded from) was made live by installing its package again without a look: a file changed in
    it, or a module added to it, went live, where the package's own bytes were asked for."""
    old, new = home.package("alpha", "1.0.0"), home.package("alpha", "1.1.0", files={"backend/extra.py": SHARED})
    home.installer.install_file(old)
    home.installer.install_file(new)
    home.installer.rollback("alpha")  # 1.0.0 live; 1.1.0's tree stays in the store (its rollback target)
    if how == "downgrade":  # 1.1.0 live, 1.0.0's tree the one kept
        home.installer.rollback("alpha")
    kept = next(t for t in plugin_trees(home.config.home, "alpha") if t != _tree(home, "alpha"))
    target = kept / "backend" / ("__init__.py" if damage == "changed" else "added.py")
    if damage == "changed":
        os.chmod(target, 0o644)
    target.write_text("BROKEN = True\n")
    version = "1.1.0" if how == "upgrade" else "1.0.0"
    preview = home.installer.preview("install_file", new if how == "upgrade" else old, allow_downgrade=True)
    assert preview.repairs == (f"repair alpha {version}: 1 file damaged",)  # the dry run names it, repairs nothing
    assert "BROKEN" in target.read_text()
    result = home.installer.install_file(new if how == "upgrade" else old, allow_downgrade=True)
    assert result.changes[0] == f"repair alpha {version}: 1 file"
    assert _tree(home, "alpha") == kept
    assert "BROKEN" not in (kept / "backend" / "__init__.py").read_text() and not (kept / "backend" / "added.py").exists()
    assert all(r.ok for r in home.installer.verify())


@pytest.mark.parametrize("how", ["plugin", "generation"])
def test_a_rollback_to_a_damaged_tree_is_refused_and_installing_its_package_repairs_it(home, how):
    """A rollback has no package to repair from: a tree it would make live that a file was changed
    in is refused, naming what repairs it, and nothing changes; `doctor` says so before."""
    from atomicplug.doctor import examine
    from atomicplug.errors import OperationError
    from atomicplug.testing import snapshot

    old = home.package("alpha", "1.0.0")
    home.installer.install_file(old)
    home.installer.install_file(home.package("alpha", "1.1.0", files={"backend/extra.py": SHARED}))
    kept = next(t for t in plugin_trees(home.config.home, "alpha") if t != _tree(home, "alpha"))
    target = kept / "backend" / "__init__.py"
    os.chmod(target, 0o644)
    target.write_text("BROKEN = True\n")
    before = snapshot(home.config)
    [doctor] = [f for f in examine(home.config) if f.check == "rollback targets"]  # said before anyone needs the rollback
    assert (doctor.ok, doctor.detail) == (False, (
        "alpha 1.0.0 is damaged (changed: backend/__init__.py): a rollback to it is refused until its package is "
        "installed again (its zip, or `atomicplug install alpha==1.0.0`; --allow-downgrade to go back)"
    ))
    with pytest.raises(OperationError) as refused:
        home.installer.rollback("alpha") if how == "plugin" else home.installer.rollback(generation=1)
    assert str(refused.value) == (
        "rollback refused: the store tree of alpha 1.0.0 is damaged (changed: backend/__init__.py); install alpha 1.0.0 "
        "from its package instead, which repairs it (its zip, or `atomicplug install alpha==1.0.0`; --allow-downgrade to go back)"
    )
    assert snapshot(home.config) == before
    result = home.installer.install_file(old, allow_downgrade=True)
    assert result.changes == ("repair alpha 1.0.0: 1 file", "downgrade alpha 1.1.0 -> 1.0.0")
    assert _tree(home, "alpha") == kept and all(r.ok for r in home.installer.verify())
    [doctor] = [f for f in examine(home.config) if f.check == "rollback targets"]
    assert (doctor.ok, doctor.detail) == (True, "1 kept tree a rollback can go to: intact")


def test_doctor_checks_a_disabled_plugins_tree_as_enable_does(home):
    """Found from outside: doctor's "rollback targets" skipped every tree the live registry lists,
    disabled ones too, and said ok while `enable` refused the same tree as damaged."""
    from atomicplug.doctor import examine
    from atomicplug.registry import Registry

    home.installer.install_file(home.package("alpha"))
    home.installer.install_file(home.package("beta"))
    home.installer.disable("beta")
    target = home.config.home / Registry.load(home.config.registry_path).plugins["beta"].current.tree / "backend" / "__init__.py"
    os.chmod(target, 0o644)
    target.write_text("BROKEN = True\n")
    [doctor] = [f for f in examine(home.config) if f.check == "rollback targets"]
    assert not doctor.ok and doctor.detail.startswith("beta 1.0.0 is damaged (changed: backend/__init__.py): enabling it is refused"), doctor.detail


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_a_rollback_to_a_tree_whose_metadata_is_damaged_is_refused_as_damaged(home, damage):
    """Found from outside: planning the rollback read the kept tree's metadata.json before the
    damage check, so a damaged one gave 'not valid JSON' (exit 3) or ENOENT, not what repairs it."""
    from atomicplug.errors import OperationError
    from atomicplug.testing import snapshot

    home.installer.install_file(home.package("alpha", "1.0.0"))
    home.installer.install_file(home.package("alpha", "1.1.0"))
    kept = next(t for t in plugin_trees(home.config.home, "alpha") if t != _tree(home, "alpha"))
    metadata = kept / "metadata.json"
    if damage == "changed":
        os.chmod(metadata, 0o644)
        metadata.write_text("{broken")
    else:
        metadata.unlink()
    before = snapshot(home.config)
    with pytest.raises(OperationError, match=f"^rollback refused: the store tree of alpha 1.0.0 is damaged \\({damage}: metadata.json\\)"):
        home.installer.rollback("alpha")
    assert snapshot(home.config) == before


@pytest.mark.parametrize("how", ["enable", "generation"])
def test_a_damaged_disabled_tree_is_not_made_live_again(home, how):
    """Found from outside: a disabled plugin's tree, changed while disabled, went live again by
    `rollback --generation` to a generation where it was enabled (the check skipped a tree that
    stays the same); `enable` made it live without a look too."""
    from atomicplug.errors import OperationError
    from atomicplug.testing import snapshot

    home.installer.install_file(home.package("alpha", "1.0.0"))
    home.installer.disable("alpha")
    [tree] = plugin_trees(home.config.home, "alpha")
    target = tree / "backend" / "__init__.py"
    os.chmod(target, 0o644)
    target.write_text("BROKEN = True\n")
    before = snapshot(home.config)
    with pytest.raises(OperationError, match=f"^{how if how == 'enable' else 'rollback'} refused: the store tree of alpha 1.0.0 is damaged"):
        home.installer.enable("alpha") if how == "enable" else home.installer.rollback(generation=1)
    assert snapshot(home.config) == before
    result = home.installer.install_file(home.package("alpha", "1.0.0"))
    assert result.changes[0] == "repair alpha 1.0.0: 1 file"
    home.installer.enable("alpha")
    assert all(r.ok for r in home.installer.verify())


def test_doctor_names_every_damaged_tree_a_rollback_would_go_to_and_exits_1(home):
    for plugin_id in ("alpha", "beta"):
        home.installer.install_file(home.package(plugin_id, "1.0.0"))
        home.installer.install_file(home.package(plugin_id, "1.1.0", files={"backend/extra.py": SHARED}))
    kept = {p: next(t for t in plugin_trees(home.config.home, p) if t != _tree(home, p)) for p in ("alpha", "beta")}
    _flip(kept["alpha"] / "backend" / "__init__.py", 0)
    (kept["beta"] / "backend" / "planted.py").write_text("X = 1\n")
    doctor = subprocess.run([sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "doctor"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert doctor.returncode == 1
    [line] = [line for line in doctor.stdout.splitlines() if "rollback targets" in line]
    assert "alpha 1.0.0 (changed: backend/__init__.py); beta 1.0.0 (added: backend/planted.py) are damaged" in line, line


@pytest.mark.parametrize("files", ["links", "copies"])
def test_an_intact_tree_already_in_the_store_is_made_live_after_an_lstat_of_each_file(home, monkeypatch, files):
    """The check of a tree the store holds is the one a tree staged again would get (each object's
    stat), not a hash of every file: an upgrade back after a rollback stays a switch, and so does
    the rollback itself. Where objects are copied, the copies are sealed as the objects are."""
    import atomicplug.verification as verification

    if files == "copies":
        monkeypatch.setattr(os, "link", lambda *args, **kwargs: (_ for _ in ()).throw(OSError(errno.EXDEV, "Invalid cross-device link")))
    home.installer.install_file(home.package("alpha", "1.0.0"))
    new = home.package("alpha", "1.1.0", files={"backend/extra.py": SHARED})
    home.installer.install_file(new)
    home.installer.rollback("alpha")
    hashed: list[Path] = []
    monkeypatch.setattr(verification, "sha256_file", lambda path: hashed.append(path) or "0" * 64)
    assert home.installer.install_file(new).changes == ("upgrade alpha 1.0.0 -> 1.1.0",)
    assert home.installer.rollback("alpha").changes == ("downgrade alpha 1.1.0 -> 1.0.0",)
    assert hashed == []


def test_where_hard_links_are_impossible_objects_are_copied_and_it_is_said(home, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)  # the OS boundary: a file system without hard links
    messages: list[str] = []
    Installer(home.config, progress=lambda event: messages.append(str(event))).install_file(home.package("alpha", files={"backend/shared.py": SHARED}))
    assert any("hard links unavailable on this file system (EXDEV), copying" in m for m in messages), messages
    target = _tree(home, "alpha") / "backend" / "shared.py"
    assert os.stat(target).st_nlink == 1 and target.read_text() == SHARED
    assert all(r.ok for r in home.installer.verify())


def test_where_objects_are_copied_a_damaged_copy_is_repaired_by_reinstalling(home, monkeypatch):
    """Without hard links a tree holds copies: rewriting the object repairs no copy, so the copy is made again."""

    def no_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    package = home.package("alpha", files={"backend/shared.py": SHARED})
    home.installer.install_file(package)
    _flip(_tree(home, "alpha") / "backend" / "shared.py", 3)
    assert home.installer.verify()[0].changed == ("backend/shared.py",)
    assert home.installer.install_file(package).changes == ("repair alpha 1.0.0: 1 file",)
    assert all(r.ok for r in home.installer.verify())
    assert (_tree(home, "alpha") / "backend" / "shared.py").read_text() == SHARED


def test_where_objects_are_copied_a_repair_that_fails_leaves_the_file_where_it_was(home, monkeypatch):
    """Found from outside: the repair removed the damaged copy and then wrote the new one: a full
    disk in between left the live plugin without the file, while the line said it was unchanged.
    The new copy is written beside it and renamed over it."""
    from atomicplug import objects as objects_module

    def no_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    package = home.package("alpha", files={"backend/shared.py": SHARED})
    home.installer.install_file(package)
    target = _tree(home, "alpha") / "backend" / "shared.py"
    _flip(target, 3)
    real_copy = objects_module.ObjectStore._copy

    def full_disk(self, source, dest):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(dest))

    monkeypatch.setattr(objects_module.ObjectStore, "_copy", full_disk)
    with pytest.raises(Exception, match="ENOSPC"):
        home.installer.install_file(package)
    assert target.exists() and home.installer.verify()[0].changed == ("backend/shared.py",)  # damaged, not gone
    assert not [p.name for p in target.parent.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(objects_module.ObjectStore, "_copy", real_copy)
    assert home.installer.install_file(package).changes == ("repair alpha 1.0.0: 1 file",)
    assert all(r.ok for r in home.installer.verify())


def test_a_copy_with_a_long_name_is_repaired(home, monkeypatch):
    """Found in review: the repair's temp beside the copy added ~32 bytes to its name, so a name near
    the 255-byte limit failed with ENAMETOOLONG at every reinstall."""

    def no_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    name = "frontend/" + "a" * 240 + ".ts"
    package = home.package("alpha", files={name: SHARED})
    home.installer.install_file(package)
    _flip(_tree(home, "alpha") / name, 3)
    assert home.installer.install_file(package).changes == ("repair alpha 1.0.0: 1 file",)
    assert all(r.ok for r in home.installer.verify())


def _flip(path: Path, offset: int) -> None:
    """A byte changed through a tree's link, as in the test above."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_the_trees_record_is_caught_by_verify_and_repaired_by_reinstalling(home):
    """The tree record trusts the package RECORD (a file of the tree) only while it matches its named sha256."""
    package = home.package("alpha", files={"backend/shared.py": SHARED})
    home.installer.install_file(package)
    _flip(_tree(home, "alpha") / "RECORD", 40)
    [report] = home.installer.verify()
    assert report.changed == ("RECORD",) and not report.extra and not report.ok
    objects_before = sorted(p.name for p in (home.config.home / "objects").rglob("*"))
    with pytest.raises(OperationError, match=r"gc: cannot tell which objects store/alpha/\S+ uses \(.*RECORD: expected"):
        home.installer.gc()
    assert sorted(p.name for p in (home.config.home / "objects").rglob("*")) == objects_before
    assert home.installer.install_file(package).changes == ("repair alpha 1.0.0: 1 file",)
    assert all(r.ok for r in home.installer.verify())
    home.installer.gc()


def test_a_damaged_record_and_what_it_hid_are_repaired_by_one_reinstall(home):
    package = home.package("alpha", files={"backend/shared.py": SHARED})
    home.installer.install_file(package)
    tree = _tree(home, "alpha")
    _flip(tree / "RECORD", 40)
    _flip(tree / "backend" / "shared.py", 3)
    [report] = home.installer.verify()
    assert report.changed == ("RECORD",)  # the rest is hidden until RECORD can be trusted again
    assert home.installer.install_file(package).changes == ("repair alpha 1.0.0: 2 files",)
    assert all(r.ok for r in home.installer.verify())


def test_files_added_to_a_tree_are_named_by_verify_and_removed_by_reinstalling(home):
    """README: installing the same package again repairs what verify finds. An extra module in a
    store tree is code nobody signed that the backend would import: it goes too."""
    package = home.package("alpha", files={"backend/shared.py": SHARED})
    home.installer.install_file(package)
    tree = _tree(home, "alpha")
    (tree / "backend" / "injected.py").write_text("import os\n")
    (tree / "extra.txt").write_text("x")
    os.symlink("/etc", tree / "backend" / "etc")
    [report] = home.installer.verify()
    assert report.extra == ("backend/etc", "backend/injected.py", "extra.txt")
    assert home.installer.install_file(package).changes == ("repair alpha 1.0.0: 3 files",)
    assert all(r.ok for r in home.installer.verify())
    assert not os.path.lexists(tree / "backend" / "etc") and os.path.isdir("/etc")


def test_gc_refuses_before_removing_anything_when_a_kept_trees_record_is_damaged(home):
    """gc reads every kept tree's record first: it used to remove generations and trees, then refuse."""
    from atomicplug import generations

    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        home.installer.install_file(home.package("alpha", version, files={"backend/v.py": f"V = {version!r}\n"}))
    _flip(_tree(home, "alpha") / "RECORD", 40)  # the live tree: 1.3.0
    trees_before = sorted(p.name for p in (home.config.store_dir / "alpha").iterdir())
    with pytest.raises(OperationError, match="gc: cannot tell which objects"):
        home.installer.gc()
    assert generations.numbers(home.config) == [1, 2, 3, 4]
    assert sorted(p.name for p in (home.config.store_dir / "alpha").iterdir()) == trees_before


def test_a_tree_record_that_does_not_parse_is_reported_by_verify_not_raised(home):
    home.installer.install_file(home.package("alpha"))
    record = _tree(home, "alpha") / RECORD_NAME
    os.chmod(record, 0o644)
    record.write_text("garbage\n")
    [report] = home.installer.verify()
    assert report.changed == (RECORD_NAME,) and not report.ok


def test_a_tree_record_that_does_not_parse_is_made_again_by_reinstalling_and_the_rest_repaired(home):
    """It was reported but never repaired (the identical tree was reused), and gc refused while it lasted."""
    package = home.package("alpha", files={"backend/shared.py": SHARED})
    home.installer.install_file(package)
    tree = _tree(home, "alpha")
    record = tree / RECORD_NAME
    before = record.read_bytes()
    os.chmod(record, 0o644)
    record.write_text("garbage\n")
    _flip(tree / "backend" / "shared.py", 3)  # hidden while the record cannot be read
    assert home.installer.install_file(package).changes == ("repair alpha 1.0.0: 2 files",)
    assert record.read_bytes() == before  # what staging wrote
    assert all(r.ok for r in home.installer.verify())
    assert (tree / "backend" / "shared.py").read_text() == SHARED
    home.installer.gc()


def test_a_package_without_record_installs_with_every_file_in_the_trees_record(home):
    """RECORD is optional (issue 14): the tree record then lists every file itself."""
    package = home.package("alpha", files={"backend/shared.py": SHARED})
    with zipfile.ZipFile(package) as signed:
        entries = [(info, signed.read(info)) for info in signed.infolist() if info.filename != "RECORD"]
    with zipfile.ZipFile(package, "w") as unsigned:
        for info, data in entries:
            unsigned.writestr(info, data)
    package.with_name(package.name + ".minisig").write_text(sign_file(package, home.publisher.secret))
    home.installer.install_file(package)
    tree = _tree(home, "alpha")
    header, *lines = (tree / RECORD_NAME).read_text().splitlines()
    assert json.loads(header) == {"format": 2}
    listed = read_record(tree)
    assert [json.loads(line)[0] for line in lines] == [e.path for e in listed]
    assert {e.path for e in listed} == {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()} - {RECORD_NAME}
    assert all(r.ok for r in home.installer.verify())


@pytest.mark.parametrize("record_format", [2, 1])
def test_an_upgrade_reuses_the_pycs_a_compact_or_an_old_record_lists(home, record_format):
    """installed_pycs reads a compact record's pyc lines, and an old (format 1) record's full list."""
    many = {f"backend/m{i}.py": f"VALUE = {i}\n" for i in range(5)}
    home.installer.install_file(home.package("alpha", "1.0.0", files=many))
    old = _tree(home, "alpha")
    listed = read_record(old)
    if record_format == 1:  # as the previous atomicplug wrote it, for a home upgraded from it
        os.chmod(old, 0o755)
        (old / RECORD_NAME).write_text(json.dumps({"files": [attrs.asdict(e) for e in listed]}, indent=1) + "\n")
    pycs = {e.path: e for e in listed if e.path.endswith(".pyc")}
    sources = {e.sha256: pycs[pyc_name(e.path)] for e in listed if e.path.startswith("backend/") and e.path.endswith(".py")}
    assert installed_pycs(plugin_trees(home.config.home, "alpha")) == sources
    compiled: list[str] = []
    real = SourceCompiler.take

    def take(compiler, relative, sha256, data):
        if not compiler.known(sha256):
            compiled.append(relative)
        real(compiler, relative, sha256, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SourceCompiler, "take", take)
        home.installer.install_file(home.package("alpha", "1.1.0", files={**many, "backend/m3.py": "VALUE = 'new'\n"}))
    assert compiled == ["backend/__init__.py", "backend/m3.py"]  # __init__ says the version
    assert all(r.ok for r in home.installer.verify())


def _failing_writes_to(inode: int, monkeypatch) -> None:
    """ENOSPC for every write into the file ``inode`` (an object every linked tree shares)."""
    real_write = os.write

    def write(fd, data):
        if os.fstat(fd).st_ino == inode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_an_intact_object_with_only_its_mtime_changed_is_sealed_again_not_rewritten(home, monkeypatch):
    """Found by an adversarial review: a `touch` (or a restore without times) failed the stat check, and the next
    package shipping the file rewrote the object with O_TRUNC; a failing write then emptied the file of a
    plugin the refused transaction never touched."""
    home.installer.install_file(home.package("alpha", files={"backend/shared.py": SHARED}))
    live = _tree(home, "alpha") / "backend" / "shared.py"
    os.utime(live)  # content intact: only the mtime differs
    _failing_writes_to(os.stat(live).st_ino, monkeypatch)
    home.installer.install_file(home.package("beta", files={"backend/shared.py": SHARED}))  # no write into it at all
    monkeypatch.undo()
    assert live.read_text() == SHARED and os.stat(live).st_mtime_ns == MTIME_STAMP_NS
    assert all(r.ok for r in home.installer.verify())


def test_repairing_one_plugin_never_rewrites_an_intact_object_another_plugin_shares(home, monkeypatch):
    """An editor saved alpha's copy by rename (the object and beta intact); the repair of alpha rewrote the
    shared object in place anyway, and a failing write emptied beta, "the installed plugins unchanged"."""
    alpha = home.package("alpha", files={"backend/shared.py": SHARED})
    home.installer.install_file(alpha)
    home.installer.install_file(home.package("beta", files={"backend/shared.py": SHARED}))
    a_file, b_file = (_tree(home, pid) / "backend" / "shared.py" for pid in ("alpha", "beta"))
    edited = a_file.with_name("shared.py.tmp")
    edited.write_text(SHARED.replace("42", "43", 1))
    os.replace(edited, a_file)  # what sed -i does
    _failing_writes_to(os.stat(b_file).st_ino, monkeypatch)
    assert home.installer.install_file(alpha).changes == ("repair alpha 1.0.0: 1 file",)
    monkeypatch.undo()
    assert a_file.read_text() == b_file.read_text() == SHARED and os.path.samefile(a_file, b_file)
    assert all(r.ok for r in home.installer.verify())


def test_a_tree_record_removed_by_hand_is_named_by_verify_made_again_by_reinstalling_and_refuses_gc(home):
    """Found by an adversarial review: verify failed with a storage error, every reinstall failed the same way,
    and gc took the tree for gone and swept all of its objects from under the live tree."""
    package = home.package("alpha", files={"backend/shared.py": SHARED})
    home.installer.install_file(package)
    record = _tree(home, "alpha") / RECORD_NAME
    record.unlink()
    assert home.installer.verify()[0].missing == (RECORD_NAME,)
    objects = set(_objects(home))
    with pytest.raises(OperationError, match="gc: cannot tell which objects .* uses .*is missing.*nothing was removed"):
        home.installer.gc()
    assert set(_objects(home)) == objects
    assert home.installer.install_file(package).changes[0].startswith("repair alpha 1.0.0: ")
    assert record.is_file() and all(r.ok for r in home.installer.verify())


def _list_in_tree_record(tree: Path, path: str, data: bytes) -> None:
    """Add a line for ``path`` to the tree's own (unsigned) record, as a hand could."""
    record = tree / RECORD_NAME
    os.chmod(record, 0o644)
    header, *lines = record.read_text().splitlines()
    lines.append(json.dumps([path, len(data), hashlib.sha256(data).hexdigest()], separators=(",", ":")))
    record.write_text("\n".join([header, *sorted(lines)]) + "\n")


def test_a_hand_edited_tree_record_does_not_vouch_for_a_patched_or_added_file(home):
    """Found by an adversarial review: a line of the tree record overrode the signed RECORD's for any path, so a
    patched module with its line "fixed", or an added one listed, passed verify and survived reinstalling."""
    package = home.package("alpha", files={"backend/routes.py": "def answer():\n    return 42\n"})
    home.installer.install_file(package)
    tree = _tree(home, "alpha")
    target = tree / "backend" / "routes.py"
    target.unlink()
    target.write_bytes(b"def answer():\n    return 'patched'\n")
    _list_in_tree_record(tree, "backend/routes.py", target.read_bytes())
    (tree / "backend" / "evil.py").write_bytes(b"import os\n")
    _list_in_tree_record(tree, "backend/evil.py", b"import os\n")
    [report] = home.installer.verify()
    assert RECORD_NAME in report.changed and not report.ok, report
    assert home.installer.install_file(package).changes[0].startswith("repair alpha 1.0.0: ")
    assert target.read_text() == "def answer():\n    return 42\n" and not (tree / "backend" / "evil.py").exists()
    assert all(r.ok for r in home.installer.verify())


def _repacked(home, package: Path, extra: dict[str, bytes], *, record: bool) -> Path:
    """``package``'s files and ``extra`` in a zip signed again, with a RECORD of them all or none (as other tools make)."""
    from atomicplug.package_record import PackageRecord, RecordEntry

    with zipfile.ZipFile(package) as signed:
        files = {i.filename: signed.read(i) for i in signed.infolist() if i.filename != "RECORD" and not i.is_dir()}
    files.update(extra)
    out = package.with_name(f"{package.stem}-repacked.zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(files.items()):
            archive.writestr(name, data)
        if record:
            lines = [RecordEntry(path=n, size=len(d), sha256=hashlib.sha256(d).hexdigest()) for n, d in sorted(files.items())]
            archive.writestr("RECORD", PackageRecord.from_entries(lines).to_bytes())
    out.with_name(out.name + ".minisig").write_text(sign_file(out, home.publisher.secret))
    return out


@pytest.mark.parametrize("record", [True, False], ids=["with RECORD", "without RECORD"])
def test_a_pyc_the_package_ships_is_repaired_from_the_package_not_compiled(home, record):
    """Found by an adversarial review: every damaged `.pyc` was compiled again from a source found by name; a
    shipped pyc with none ("repair … 0 files", still damaged) or beside a frontend source (a traceback) was not
    repaired. Only the pycs staging built are compiled again; any other file comes from the package."""
    foreign = b"\x55\x0d\x0d\x0a" + b"\0" * 12 + b"another interpreter's code object" * 4
    frontend_pyc = build_pyc(b"Y = 2\n")
    shipped = {"backend/__pycache__/mod.cpython-312.pyc": foreign, "frontend/helper.py": b"Y = 2\n",
               pyc_name("frontend/helper.py"): frontend_pyc}  # fmt: skip
    package = _repacked(home, home.package("alpha", files={"backend/mod.py": "X = 1\n"}), shipped, record=record)
    home.installer.install_file(package)
    tree = _tree(home, "alpha")
    for path in shipped:
        if path.endswith(".pyc"):
            _flip(tree / path, 20)
    assert set(home.installer.verify()[0].changed) == {p for p in shipped if p.endswith(".pyc")}
    assert home.installer.install_file(package).changes == ("repair alpha 1.0.0: 2 files",)
    assert all((tree / path).read_bytes() == data for path, data in shipped.items())
    assert all(r.ok for r in home.installer.verify())


def _doctor_pyc(tree: Path, source: str, evil: bytes, *, in_place: bool) -> str:
    """A staging pyc replaced by other code, and its tree record line rewritten to match it (size, sha256;
    its source's sha256 kept): what plain ``verify`` cannot see, as the record vouches for the new bytes."""
    pyc = pyc_name(source)
    target = tree / pyc
    if in_place:  # through the link: the object itself, its stat put back as the store seals it
        os.chmod(target, 0o644)
        target.write_bytes(evil)
        os.chmod(target, 0o444)
        os.utime(target, ns=(MTIME_STAMP_NS, MTIME_STAMP_NS))
    else:  # a new file in the tree: the object stays intact
        target.unlink()
        target.write_bytes(evil)
    record = tree / RECORD_NAME
    lines = record.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(f'["{pyc}",'):
            fields = json.loads(line)
            fields[1:3] = [len(evil), hashlib.sha256(evil).hexdigest()]
            lines[i] = json.dumps(fields, separators=(",", ":")) + "\n"
    os.chmod(record, 0o644)
    record.write_text("".join(lines))
    return pyc


@pytest.mark.parametrize("in_place", [False, True], ids=["a new file", "the object in place"])
def test_a_pyc_edited_with_its_record_line_is_caught_by_deep_verify_and_repaired_by_reinstalling(home, in_place):
    """Left open since stop 25: a pyc is what Python runs, and it is built here, so no signature covers it;
    the tree record's line was its only check. ``verify --deep`` compiles each source again and compares."""
    source = b"def charge(amount):\n    return amount\n"
    package = home.package("alpha", files={"backend/billing.py": source.decode()})
    home.installer.install_file(package)
    tree = _tree(home, "alpha")
    pyc = _doctor_pyc(tree, "backend/billing.py", build_pyc(b"def charge(amount):\n    return amount * 100\n"), in_place=in_place)
    assert all(r.ok for r in home.installer.verify())  # the record vouches for the doctored bytes
    [deep] = home.installer.verify(deep=True)
    assert (deep.changed, deep.missing, deep.extra) == ((RECORD_NAME, pyc), (), ())
    (tree / "backend" / "added.py").write_text("X = 1\n")
    assert home.installer.verify(deep=True)[0].extra == ("backend/added.py",)  # the record's list is still whole
    cli = subprocess.run([sys.executable, "-m", "atomicplug", "--config", str(home.config_path), "verify", "--deep"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert cli.returncode == 1 and cli.stdout.splitlines()[:4] == [
        "alpha 1.0.0: MODIFIED", f"  changed: {RECORD_NAME}", f"  changed: {pyc}", "  extra: backend/added.py"
    ]
    assert home.installer.preview("install_file", package).repairs == ("repair alpha 1.0.0: 3 files damaged",)
    assert home.installer.install_file(package).changes[0].startswith("repair alpha 1.0.0: ")
    assert all(r.ok for r in home.installer.verify(deep=True))
    assert (tree / pyc).read_bytes() == build_pyc(source)


_LEGACY_PYC = """
import importlib.util, marshal, sys
data = open(sys.argv[1], 'rb').read()
code = compile(data, '<atomicplug>', 'exec', dont_inherit=True)
header = importlib.util.MAGIC_NUMBER + (3).to_bytes(4, 'little') + importlib.util.source_hash(data)
sys.stdout.buffer.write(header + marshal.dumps(code))
"""


def test_a_pyc_staged_before_its_bytes_were_fixed_passes_deep_verify_and_is_repaired_when_damaged(home, tmp_path):
    """A pyc an earlier atomicplug staged in a process where no one-character string was interned has
    other bytes than this one builds (the strings marked otherwise), for the same code: `verify --deep`
    compares the code, not the marks, and a repair of such a pyc records the pyc built now."""
    source = b'SEP = " "\nMARK = "\\xa7"\n'
    package = home.package("alpha", files={"backend/billing.py": source.decode()})
    home.installer.install_file(package)
    tree = _tree(home, "alpha")
    (tmp_path / "billing.py").write_bytes(source)
    legacy = subprocess.run([sys.executable, "-I", "-c", _LEGACY_PYC, str(tmp_path / "billing.py")], capture_output=True, check=True).stdout
    assert legacy != build_pyc(source)  # what an earlier atomicplug left: the same code, other bytes
    pyc = _doctor_pyc(tree, "backend/billing.py", legacy, in_place=False)
    assert all(r.ok for r in home.installer.verify(deep=True))
    assert home.installer.install_file(package).changes == ()  # nothing to repair
    _flip(tree / pyc, len(legacy) - 3)
    assert home.installer.verify()[0].changed == (pyc,)
    assert home.installer.install_file(package).changes[0].startswith("repair alpha 1.0.0: ")
    assert all(r.ok for r in home.installer.verify(deep=True))
    assert (tree / pyc).read_bytes() == build_pyc(source)


def test_deep_verify_leaves_the_pycs_of_another_interpreter_alone(home):
    """A tree staged by another Python keeps its pycs under that interpreter's tag: this one cannot build them."""
    package = home.package("alpha", files={"backend/billing.py": "X = 1\n"})
    home.installer.install_file(package)
    tree = _tree(home, "alpha")
    pyc = pyc_name("backend/billing.py")
    other = pyc.replace(sys.implementation.cache_tag, "cpython-299")
    os.rename(tree / pyc, tree / other)
    record = tree / RECORD_NAME
    os.chmod(record, 0o644)
    record.write_text(record.read_text().replace(f'["{pyc}",', f'["{other}",'))
    assert all(r.ok for r in home.installer.verify(deep=True))


def test_a_full_disk_while_staging_drops_the_packages_blob(home, monkeypatch):
    """Found from outside: after an install failed for lack of space while staging, the package's zip
    stayed in downloads/ (gc keeps a blob an hour), holding the space the retry needed, and the retry
    took the zip in again anyway. A cluster node keeps its blobs: the others fetch them from it."""
    from atomicplug import safezip
    from atomicplug.errors import StorageError
    from atomicplug.testing import snapshot

    def full_disk(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(home.config.home / "objects"))

    before = snapshot(home.config)
    monkeypatch.setattr(safezip, "extract_to_objects", full_disk)
    with pytest.raises(StorageError, match="ENOSPC"):
        home.installer.install_file(home.package("alpha"))
    assert snapshot(home.config) == before
    assert list(home.config.downloads_dir.glob("*.zip")) == []
    monkeypatch.undo()
    assert home.installer.install_file(home.package("alpha")).changes == ("install alpha 1.0.0",)
