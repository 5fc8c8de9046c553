"""The object store (atomicplug.objects): naming, sealing, the stat check, repair, links, sweep, crashes."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from atomicplug import objects as objects_module
from atomicplug.fsutil import TEMP_SUFFIX
from atomicplug.objects import MTIME_STAMP_NS, ObjectStore, probe_hardlinks
from atomicplug.testing import count_crash_points, crash_at, fail_at

DATA = b"def answer():\n    return 42\n"
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore(tmp_path / "objects")


def temps(root: Path) -> list[Path]:
    return list(root.glob(f".*{TEMP_SUFFIX}")) if root.is_dir() else []


def flip_a_byte(path: Path, offset: int = 0) -> None:
    """What an editor or a stray script does: make it writable, write into it (through any link)."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as handle:
        handle.seek(offset, os.SEEK_SET if offset >= 0 else os.SEEK_END)
        where = handle.tell()
        byte = handle.read(1)
        handle.seek(where)
        handle.write(bytes([byte[0] ^ 0x01]))


# -- storing --------------------------------------------------------------------------


def test_put_bytes_names_the_object_by_sha256_in_one_flat_folder_read_only_and_stamped(store: ObjectStore) -> None:
    assert store.put_bytes(DATA) == SHA
    path = store.root / SHA
    assert store.path(SHA) == path
    assert path.read_bytes() == DATA
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o444
    assert info.st_mtime_ns == MTIME_STAMP_NS
    assert store.has(SHA, len(DATA))
    assert list(store) == [SHA]
    assert temps(store.root) == []


def test_has_is_false_for_a_missing_object_or_a_wrong_size(store: ObjectStore) -> None:
    assert not store.has(SHA, len(DATA))
    store.put_bytes(DATA)
    assert not store.has(SHA, len(DATA) + 1)


def test_storing_the_same_bytes_twice_keeps_one_object(store: ObjectStore) -> None:
    store.put_bytes(DATA)
    inode = store.path(SHA).stat().st_ino
    with store.writer() as writer:
        writer.write(DATA)
        assert writer.commit() == (SHA, len(DATA))
    assert not writer.created
    assert store.path(SHA).stat().st_ino == inode
    assert list(store) == [SHA] and temps(store.root) == []


def test_a_writer_told_the_sha256_writes_a_new_object_under_its_name_directly(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    monkeypatch.setattr(store, "_new_temp", lambda: made.append("temp"))  # never asked for one
    with store.writer(SHA) as writer:
        writer.write(DATA)
        assert writer.commit() == (SHA, len(DATA))
    assert writer.created and made == [] and store.has(SHA, len(DATA))


@pytest.mark.parametrize("there", ["sealed object", "interrupted write", "symlink"])
def test_a_writer_told_the_sha256_of_a_name_already_taken_writes_a_temp_and_keeps_or_mends(store: ObjectStore, there: str) -> None:
    store.put_bytes(b"other")
    if there == "sealed object":
        store.put_bytes(DATA)
    elif there == "interrupted write":
        store.path(SHA).write_bytes(DATA[:5])  # what a kill during a direct write leaves: not sealed
    else:
        store.path(SHA).symlink_to(store.path(hashlib.sha256(b"other").hexdigest()))
    inode = store.path(SHA).lstat().st_ino
    with store.writer(SHA) as writer:
        writer.write(DATA)
        writer.commit()
    assert store.has(SHA, len(DATA)) and store.verify(SHA) and temps(store.root) == []
    assert (store.path(SHA).lstat().st_ino == inode) == (there != "symlink"), "kept or mended in place; a symlink is replaced"


def test_writer_streams_chunks_and_hashes_them(store: ObjectStore) -> None:
    chunks = [os.urandom(70_000) for _ in range(5)]
    with store.writer() as writer:
        for chunk in chunks:
            writer.write(chunk)
        expected = hashlib.sha256(b"".join(chunks)).hexdigest()
        assert writer.hexdigest() == expected
        assert writer.commit() == (expected, 350_000)
    assert writer.created
    assert store.path(expected).read_bytes() == b"".join(chunks)


def test_a_writer_left_without_commit_leaves_no_temp(store: ObjectStore) -> None:
    with store.writer() as writer:
        writer.write(DATA)
        assert len(temps(store.root)) == 1
    assert temps(store.root) == [] and list(store) == []


def test_malformed_sha_is_a_caller_error(store: ObjectStore) -> None:
    for bad in ("", SHA.upper(), SHA[:-1], "../" + SHA[3:]):
        with pytest.raises(ValueError, match="expected a sha256 as 64 lowercase hex digits"):
            store.path(bad)


# -- the stat check, re-hashing and repair ------------------------------------------------


def test_a_flipped_byte_is_seen_by_the_stat_check_and_by_rehashing(store: ObjectStore) -> None:
    store.put_bytes(DATA)
    assert store.verify(SHA)
    flip_a_byte(store.path(SHA))
    assert not store.has(SHA, len(DATA))
    assert not store.verify(SHA)


def test_a_write_through_a_tree_link_is_seen_too(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes(DATA)
    tree_file = tmp_path / "tree.py"
    store.link(SHA, tree_file)
    flip_a_byte(tree_file)
    assert not store.has(SHA, len(DATA))


def test_the_stat_check_misses_a_change_that_restores_the_mtime_rehashing_does_not(store: ObjectStore) -> None:
    """The documented limit: silent bit rot (or a writer restoring the stamp) needs ``verify``."""
    store.put_bytes(DATA)
    path = store.path(SHA)
    flip_a_byte(path)
    os.chmod(path, 0o444)
    os.utime(path, ns=(MTIME_STAMP_NS, MTIME_STAMP_NS))
    assert store.has(SHA, len(DATA))
    assert not store.verify(SHA)


def test_a_changed_mode_fails_the_stat_check(store: ObjectStore) -> None:
    store.put_bytes(DATA)
    os.chmod(store.path(SHA), 0o644)
    assert not store.has(SHA, len(DATA))


def test_repair_rewrites_in_place_so_every_linked_tree_is_repaired(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes(DATA)
    trees = [tmp_path / "one.py", tmp_path / "two.py"]
    for tree_file in trees:
        store.link(SHA, tree_file)
    inode = store.path(SHA).stat().st_ino
    flip_a_byte(trees[0])
    assert trees[1].read_bytes() != DATA
    store.repair(SHA, DATA)
    assert store.has(SHA, len(DATA)) and store.verify(SHA)
    assert store.path(SHA).stat().st_ino == inode
    assert [t.read_bytes() for t in trees] == [DATA, DATA]
    assert store.repaired == [SHA]


def test_repair_refuses_data_of_another_hash(store: ObjectStore) -> None:
    store.put_bytes(DATA)
    with pytest.raises(ValueError, match=f"expected data with sha256 {SHA}"):
        store.repair(SHA, DATA + b"#")


def test_committing_over_a_corrupt_object_repairs_it_in_place(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes(DATA)
    store.link(SHA, tmp_path / "tree.py")
    flip_a_byte(store.path(SHA))
    with store.writer() as writer:
        writer.write(DATA)
        writer.commit()
    assert not writer.created
    assert store.has(SHA, len(DATA)) and store.verify(SHA)
    assert (tmp_path / "tree.py").read_bytes() == DATA
    assert store.repaired == [SHA] and temps(store.root) == []


def test_committing_over_a_symlink_in_place_of_an_object_replaces_the_name(store: ObjectStore, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_bytes(b"not yours")
    store.path(SHA).parent.mkdir(parents=True)
    store.path(SHA).symlink_to(tmp_path / "elsewhere")
    assert not store.has(SHA, len(DATA))
    store.put_bytes(DATA)
    assert store.has(SHA, len(DATA)) and not store.path(SHA).is_symlink()
    assert (tmp_path / "elsewhere").read_bytes() == b"not yours"


# -- links ------------------------------------------------------------------------------


def test_two_trees_with_an_identical_file_share_one_object(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes(DATA)
    store.put_bytes(DATA)
    for tree in ("a", "b"):
        (tmp_path / tree).mkdir()
        store.link(SHA, tmp_path / tree / "x.py")
    inodes = {(tmp_path / t / "x.py").stat().st_ino for t in ("a", "b")}
    assert inodes == {store.path(SHA).stat().st_ino}
    assert store.path(SHA).stat().st_nlink == 3
    assert store.link_fallback is None and store.notice is None and store.copied == 0


def test_link_onto_an_existing_file_is_an_error_not_a_copy(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes(DATA)
    (tmp_path / "x.py").write_text("mine")
    with pytest.raises(FileExistsError):
        store.link(SHA, tmp_path / "x.py")
    assert (tmp_path / "x.py").read_text() == "mine"


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP])
def test_link_copies_when_hard_links_are_impossible_and_says_so(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    store.put_bytes(DATA)
    calls = []

    def no_links(src: object, dst: object, **kwargs: object) -> None:
        calls.append(dst)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(objects_module.os, "link", no_links)
    store.link(SHA, tmp_path / "one.py")
    store.link(SHA, tmp_path / "two.py")
    assert len(calls) == 1  # the second call copies without trying again
    for copy in ("one.py", "two.py"):
        info = (tmp_path / copy).stat()
        assert (tmp_path / copy).read_bytes() == DATA
        assert info.st_ino != store.path(SHA).stat().st_ino
        assert stat.S_IMODE(info.st_mode) == 0o444
    assert store.link_fallback == errno.errorcode[code]
    assert store.copied == 2
    assert store.notice == f"object store: hard links unavailable on this file system ({errno.errorcode[code]}), copying"


def test_too_many_links_copies_that_object_and_keeps_linking_others(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_bytes(DATA)
    other = store.put_bytes(b"other")
    real_link = os.link

    def full(src: object, dst: object, **kwargs: object) -> None:
        if str(src).endswith(SHA[2:]):
            raise OSError(errno.EMLINK, "Too many links")
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(objects_module.os, "link", full)
    store.link(SHA, tmp_path / "popular.py")
    store.link(other, tmp_path / "other")
    assert (tmp_path / "popular.py").stat().st_ino != store.path(SHA).stat().st_ino
    assert (tmp_path / "other").stat().st_ino == store.path(other).stat().st_ino
    assert store.link_fallback == "EMLINK" and store.copied == 1


@pytest.fixture
def other_file_system(tmp_path: Path) -> Iterator[Path]:
    """A folder on another file system than tmp_path: /dev/shm when it is one, else a tmpfs mounted here."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        folder = Path(tempfile.mkdtemp(dir=shm, prefix="atomicplug-test-"))
        yield folder
        shutil.rmtree(folder)
        return
    mount_point = tmp_path / "other-fs"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("no second file system: /dev/shm is on the same one and mounting a tmpfs is not permitted")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_link_across_real_file_systems_falls_back_to_copying(store: ObjectStore, other_file_system: Path) -> None:
    store.put_bytes(DATA)
    assert store.probe_hardlinks(other_file_system) == "EXDEV"
    store.link(SHA, other_file_system / "x.py")
    assert (other_file_system / "x.py").read_bytes() == DATA
    assert store.link_fallback == "EXDEV" and store.copied == 1
    assert list(other_file_system.iterdir()) == [other_file_system / "x.py"]


def test_probe_hardlinks_on_one_file_system_succeeds_and_leaves_nothing(store: ObjectStore, tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    assert store.probe_hardlinks(tmp_path / "store") is None
    assert probe_hardlinks(store.root, tmp_path / "store") is None
    assert list((tmp_path / "store").iterdir()) == [] and list(store.root.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT])
def test_probe_hardlinks_raises_a_failing_disk_rather_than_calling_links_unavailable(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """Found from outside: `doctor` said "ok: hard links unavailable (ENOSPC), objects are copied"
    on a full disk, where the next upgrade failed. Only the errnos of a file system without links
    (EXDEV, EPERM, EMLINK, ENOTSUP) mean copying."""
    (tmp_path / "store").mkdir()

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(objects_module.os, "link", failing)
    with pytest.raises(OSError) as info:
        store.probe_hardlinks(tmp_path / "store")
    assert info.value.errno == code
    assert list((tmp_path / "store").iterdir()) == [] and list(store.root.iterdir()) == []


def test_a_probe_whose_removal_fails_leaves_no_error_in_flight_and_its_link_is_swept(home, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found from outside: `doctor` with a failing unlink left `.probe-link.*` in store/, and every
    later `gc` failed on it (ENOTDIR), forever. gc looks at plugin folders only, and recovery sweeps
    the probe's leftovers as it sweeps every dead writer's temp files."""
    from atomicplug.doctor import examine

    home.installer.install_file(home.package("alpha"))
    real = os.unlink

    def failing_for_probes(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if ".probe" in os.fspath(path):
            raise OSError(errno.EIO, "Input/output error", os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(objects_module.os, "unlink", failing_for_probes)
    [storage] = [f for f in examine(home.config) if f.check == "storage"]
    monkeypatch.setattr(objects_module.os, "unlink", real)
    assert storage.ok, storage.detail  # the probe's link worked: what is left is only litter
    assert [p.name for p in home.config.store_dir.iterdir() if p.name.startswith(".probe")]
    (home.config.store_dir / "NOTES.txt").write_text("a file someone left in store/\n")
    home.installer.gc()  # its writer (this process) is done with the probe: swept like a dead writer's temp
    assert sorted(p.name for p in home.config.store_dir.iterdir() if not p.is_dir()) == ["NOTES.txt"]
    assert not [p.name for p in (home.config.home / "objects").iterdir() if p.name.startswith(".probe")]


# -- sweep, sync --------------------------------------------------------------------------


def test_sweep_removes_unreferenced_objects_and_dead_temps_only(store: ObjectStore, tmp_path: Path) -> None:
    kept = store.put_bytes(b"kept")
    gone = store.put_bytes(b"gone")
    store.link(gone, tmp_path / "old-tree-file")
    dead = _dead_pid()
    (store.root / f".incoming.{dead}-0123{TEMP_SUFFIX}").write_bytes(b"half")
    (store.root / "ab").mkdir(exist_ok=True)
    (store.root / "ab" / "README").write_text("not an object name: left alone")
    assert store.sweep({kept}) == 1
    assert list(store) == [kept]
    assert temps(store.root) == []
    assert (store.root / "ab" / "README").exists()
    assert (tmp_path / "old-tree-file").read_bytes() == b"gone"  # a tree keeps its inode


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_sweep_of_a_store_never_written_is_zero(store: ObjectStore) -> None:
    assert store.sweep(set()) == 0


def test_sync_makes_the_written_objects_durable_once(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(objects_module, "sync_tree", synced.append)
    store.sync()
    assert synced == []
    store.put_bytes(DATA)
    store.put_bytes(b"more")
    store.sync()
    store.sync()
    assert synced == [store.root]


def test_without_syncfs_sync_fsyncs_each_object_and_folder_written(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(objects_module, "_SYNCFS", False)
    monkeypatch.setattr(objects_module, "fsync_file", synced.append)
    monkeypatch.setattr(objects_module, "fsync_dir", synced.append)
    store.put_bytes(DATA)
    store.sync()
    assert synced == [store.path(SHA), store.root, store.root.parent]
    store.sync()
    assert len(synced) == 3


# -- crashes ------------------------------------------------------------------------------


def _crash_everywhere(setup: Callable[[], None], operation: Callable[[], None], check: Callable[[int], None]) -> int:
    """Kill ``operation`` at each of its crash points in turn (from ``setup``'s state); ``check`` what is left."""
    setup()
    points = count_crash_points(operation)
    assert points > 0
    for point in range(1, points + 1):
        setup()
        assert crash_at(operation, point), f"crash point {point} of {points} was not reached"
        check(point)
    return points


def test_a_kill_at_any_step_of_storing_and_linking_leaves_good_objects_or_none(tmp_path: Path) -> None:
    payloads = [b"one", b"two" * 50_000, b"one"]
    shas = [hashlib.sha256(p).hexdigest() for p in payloads]

    def operation() -> None:
        store = ObjectStore(tmp_path / "objects")
        tree = tmp_path / "tree"
        tree.mkdir(exist_ok=True)
        for index, payload in enumerate(payloads):
            with store.writer() as writer:
                writer.write(payload)
                writer.commit()
            store.link(shas[index], tree / f"f{index}")

    def setup() -> None:
        shutil.rmtree(tmp_path / "objects", ignore_errors=True)
        shutil.rmtree(tmp_path / "tree", ignore_errors=True)

    def check(point: int) -> None:
        store = ObjectStore(tmp_path / "objects")
        for sha in store:
            assert store.verify(sha), f"crash point {point}: object {sha} has other bytes"
        store.sweep(set(shas))
        assert temps(store.root) == [], f"crash point {point}: sweep left a temp"

    assert _crash_everywhere(setup, operation, check) >= 10


# -- the earlier fan-out layout -----------------------------------------------------------


def _fanned_out(root: Path, payloads: list[bytes]) -> list[str]:
    """A store written in git's fan-out layout (``objects/ab/cdef…``), as homes were before it became flat."""
    from crash_harness import fan_out_store

    store = ObjectStore(root)
    shas = [store.put_bytes(payload) for payload in payloads]
    assert fan_out_store(root) == len(set(shas))
    return shas


def test_flatten_moves_fan_out_objects_to_their_flat_names_and_keeps_their_inodes(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    payloads = [DATA, b"two" * 1000, os.urandom(70_000)]
    shas = _fanned_out(root, payloads)
    tree_file = tmp_path / "tree-file"
    os.link(root / shas[2][:2] / shas[2][2:], tree_file)  # a store tree's hard link
    store = ObjectStore(root)
    assert list(store) == sorted(shas) and store.path(shas[0]) == root / shas[0][:2] / shas[0][2:]  # read in place
    assert store.flatten() == 3
    assert sorted(store) == sorted(shas)
    assert all(store.has(sha, len(p)) and store.verify(sha) for sha, p in zip(shas, payloads))
    assert store.path(shas[2]).stat().st_ino == tree_file.stat().st_ino
    assert [p.name for p in root.iterdir() if p.is_dir()] == []
    assert store.flatten() == 0  # done once


def _counting_lstats(monkeypatch: pytest.MonkeyPatch, root: Path, nlink: int | None = None) -> list[str]:
    """The lstat calls under ``root`` from now on; ``nlink`` given: ``root`` reports that link
    count, as on a file system that does not count a folder's subfolders (btrfs says 1)."""
    calls: list[str] = []
    real = os.lstat

    def lstat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).startswith(str(root)):
            calls.append(str(path))
        info = real(path, *args, **kwargs)
        if nlink is not None and str(path) == str(root):
            return os.stat_result((*info[:3], nlink, *info[4:]))
        return info

    monkeypatch.setattr(os, "lstat", lstat)
    return calls


def test_bytes_in_hand_are_written_under_their_name_with_no_temp_and_no_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pyc arrives whole: its sha256 is known before a byte is written (one open, no lookup, no rename)."""
    store = ObjectStore(tmp_path / "objects")
    store.put_bytes(b"warm")  # the store's folder made
    renamed: list[str] = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renamed.append(str(b)), real_rename(a, b)))
    calls = _counting_lstats(monkeypatch, tmp_path / "objects")
    sha, created = store.put(DATA)
    assert created and renamed == [] and [c for c in calls if c.endswith(sha)] == []
    assert store.has(sha, len(DATA)) and store.verify(sha)
    assert store.put(DATA) == (sha, False)  # there already: looked up, kept


@pytest.mark.parametrize("there", ["interrupted write", "symlink"])
def test_bytes_in_hand_mend_a_name_taken_by_something_that_is_not_the_object(store: ObjectStore, there: str) -> None:
    other = store.put_bytes(b"other")
    if there == "interrupted write":
        store.path(SHA).write_bytes(DATA[:5])  # what a kill during a direct write leaves: not sealed
    else:
        store.path(SHA).symlink_to(store.path(other))
    assert store.put(DATA) == (SHA, there == "symlink")  # a file is mended in place, a symlink replaced
    assert store.has(SHA, len(DATA)) and store.verify(SHA) and not store.path(SHA).is_symlink()
    assert store.read_bytes(other) == b"other" and temps(store.root) == []


def test_a_store_without_subfolders_knows_it_holds_no_fan_out_folder_from_one_lstat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder's link count is 2 plus its subfolders (ext4, tmpfs, xfs): a flat store needs no 256 probes."""
    root = tmp_path / "objects"
    ObjectStore(root).put_bytes(DATA)
    calls = _counting_lstats(monkeypatch, root)
    assert ObjectStore(root).fan_outs_left() == frozenset() and calls == [str(root)]
    (root / "ab").mkdir()
    assert ObjectStore(root).fan_outs_left() == frozenset({"ab"})  # one folder: probed for


def test_where_folders_count_no_links_the_fan_out_folders_are_probed_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "objects"
    _fanned_out(root, [b"one"])
    calls = _counting_lstats(monkeypatch, root, nlink=1)
    assert ObjectStore(root).fan_outs_left() == frozenset({hashlib.sha256(b"one").hexdigest()[:2]})
    assert len(calls) > 256


def test_flatten_prefers_an_untouched_object_and_leaves_a_folder_holding_anything_else(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    one, two, three = _fanned_out(root, [b"one", b"two", b"three"])
    store = ObjectStore(root)
    (root / one).write_bytes(b"a leftover of an interrupted write")  # flat but not sealed: the fanned object wins
    shutil.copy2(root / two[:2] / two[2:], root / two)  # flat and sealed as well: the fanned copy is dropped
    (root / three[:2] / "notes.txt").write_text("someone's file")
    assert store.flatten() == 2
    assert all(store.has(sha, n) and store.verify(sha) for sha, n in ((one, 3), (two, 3), (three, 5)))
    assert not (root / two[:2]).exists() and not (root / one[:2]).exists()
    assert sorted(p.name for p in (root / three[:2]).iterdir()) == ["notes.txt"]


def test_flatten_never_follows_a_symlink_named_like_a_fan_out_folder(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    _fanned_out(root, [b"one"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ("a" * 62)).write_bytes(b"someone's file")
    (root / "00").symlink_to(outside)
    store = ObjectStore(root)
    assert store.flatten() == 1
    assert (outside / ("a" * 62)).read_bytes() == b"someone's file" and not (root / ("00" + "a" * 62)).exists()
    assert list(store) == [hashlib.sha256(b"one").hexdigest()] and store.fan_outs_left() == frozenset()


def _objects_work(store: ObjectStore, payloads: list[bytes], tree: Path) -> None:
    """Each object passes the stat check and a re-hash, is listed, and links into a tree."""
    tree.mkdir(exist_ok=True)
    for index, payload in enumerate(payloads):
        sha = hashlib.sha256(payload).hexdigest()
        assert store.has(sha, len(payload)) and store.verify(sha) and sha in set(store), sha
        store.link(sha, tree / str(index))
        assert (tree / str(index)).read_bytes() == payload


def test_a_disk_failing_at_any_step_of_flattening_is_not_in_the_way(tmp_path: Path) -> None:
    """A full disk (the renames into the flat folder grow it): objects not moved are read in place,
    and once space is back the next flatten finishes."""
    root = tmp_path / "objects"
    payloads = [b"one", b"two" * 50_000, b"three", b"four"]
    _fanned_out(root, payloads)
    points = count_crash_points(lambda: ObjectStore(root).flatten())
    for point in range(1, points + 1):
        shutil.rmtree(root)
        _fanned_out(root, payloads)
        store = ObjectStore(root)
        assert fail_at(store.flatten, point, errno.ENOSPC, then=errno.ENOSPC) is None, f"point {point}: flatten raised"
        if point == 1:
            assert len(store.fan_outs_left()) == len(payloads), "full from the first move on: every folder is left"
        _objects_work(store, payloads, tmp_path / f"tree-{point}")
        ObjectStore(root).flatten()
        assert [p for p in root.iterdir() if p.is_dir()] == [], f"point {point}: a fan-out folder stayed"
        _objects_work(ObjectStore(root), payloads, tmp_path / f"tree-{point}-after")


def test_objects_left_in_a_fan_out_folder_are_read_mended_and_swept_in_place(tmp_path: Path) -> None:
    """What a store not yet flattened (or a folder flatten had to leave) offers: every operation, in place."""
    root = tmp_path / "objects"
    payloads = [b"kept", b"damaged" * 1000, b"unused"]
    kept, damaged, unused = _fanned_out(root, payloads)
    store = ObjectStore(root)
    _objects_work(store, payloads, tmp_path / "tree")
    flip_a_byte(root / damaged[:2] / damaged[2:])
    assert not store.has(damaged, 7000)
    with store.writer(damaged) as writer:  # what staging does when the stat check fails: the trees' inode is mended
        writer.write(payloads[1])
        writer.commit()
    assert (tmp_path / "tree" / "1").read_bytes() == payloads[1] and store.has(damaged, 7000)
    assert not (root / damaged).exists(), "mended where it is, not written again under its flat name"
    assert store.sweep({kept, damaged}) == 1
    assert sorted(store) == sorted([kept, damaged]) and not (root / unused[:2]).exists()


def test_footprint_counts_each_name_of_an_object_once_per_inode(tmp_path: Path) -> None:
    """gc's freed bytes: a copy in both layouts is two files, a hard link between them one (found by a review)."""
    root = tmp_path / "objects"
    (sha,) = _fanned_out(root, [b"z" * 100_000])
    store = ObjectStore(root)
    assert store.footprint(sha) == 100_000
    shutil.copy2(root / sha[:2] / sha[2:], root / sha)
    assert ObjectStore(root).footprint(sha) == 200_000
    (root / sha).unlink()
    os.link(root / sha[:2] / sha[2:], root / sha)
    assert ObjectStore(root).footprint(sha) == 100_000
    assert ObjectStore(root).sweep(set()) == 1 and ObjectStore(root).footprint(sha) == 0 and not (root / sha[:2]).exists()


def test_flatten_keeps_the_fanned_out_object_when_the_sealed_flat_copy_has_other_bytes(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    (sha,) = _fanned_out(root, [b"the right bytes"])
    shutil.copy2(root / sha[:2] / sha[2:], root / sha)
    os.chmod(root / sha, 0o644)
    (root / sha).write_bytes(b"the wrong bytes")  # same size; sealed again below, as bit rot keeping the stamp would be
    os.chmod(root / sha, 0o444)
    os.utime(root / sha, ns=(MTIME_STAMP_NS, MTIME_STAMP_NS))
    store = ObjectStore(root)
    assert store.flatten() == 1
    assert store.verify(sha) and (root / sha).read_bytes() == b"the right bytes"


def test_a_kill_at_any_step_of_flattening_loses_no_object(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    payloads = [b"one", b"two" * 50_000, b"three", b"four"]

    def setup() -> None:
        shutil.rmtree(root, ignore_errors=True)
        _fanned_out(root, payloads)

    def check(point: int) -> None:
        store = ObjectStore(root)
        store.flatten()  # what the next writer does
        for payload in payloads:
            sha = hashlib.sha256(payload).hexdigest()
            assert store.has(sha, len(payload)) and store.verify(sha), f"crash point {point}: object {sha} lost"
        assert [p for p in root.iterdir() if p.is_dir()] == [], f"crash point {point}: a fan-out folder stayed"

    assert _crash_everywhere(setup, lambda: ObjectStore(root).flatten(), check) >= len(payloads)


def test_a_kill_at_any_step_of_a_repair_leaves_it_refused_by_the_stat_check_or_repaired(tmp_path: Path) -> None:
    payload = os.urandom(200_000)
    sha = hashlib.sha256(payload).hexdigest()
    root = tmp_path / "objects"

    def setup() -> None:
        shutil.rmtree(root, ignore_errors=True)
        ObjectStore(root).put_bytes(payload)
        flip_a_byte(ObjectStore(root).path(sha), offset=-1)  # the last byte: a repair is only done when it reaches it

    def operation() -> None:
        ObjectStore(root).repair(sha, payload)

    def check(point: int) -> None:
        store = ObjectStore(root)
        assert not store.has(sha, len(payload)) or store.verify(sha), f"crash point {point}: passes the stat check with bad bytes"

    assert _crash_everywhere(setup, operation, check) >= 4
