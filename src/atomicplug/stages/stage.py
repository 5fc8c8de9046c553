"""Stage 3, stage: a package's store tree, made of hard links to content-addressed objects.

docs/design.md "The object store" and issue 14: every file of every installed
tree is an object in ``<home>/objects`` (named by its sha256, read-only), and a
store tree ``store/<id>/<version>-<sha12>/`` is a folder of hard links to them.
Staging one package therefore costs what changed:

1. extract the verified blob into the object store: with the package's RECORD,
   entries whose objects already exist are not even inflated;
2. compile the backend sources no installed tree already has a pyc for (the
   pycs are objects too, the same for the same source in every version);
3. materialise ``staging/<txid>/<id>/`` by linking every object (copying where
   the file system has no hard links), write the tree's record, sync once, and
   rename the folder into the store.

A tree damaged later (a byte flipped through any link) is repaired in place by
:func:`repair_tree`, which rewrites the damaged objects from the blob; a tree
record that cannot be read is made again by :func:`remake_record`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from atomicplug.fsutil import TEMP_SUFFIX, make_dirs, remove_file, remove_tree, replace, sync_tree
from atomicplug.objects import ObjectStore
from atomicplug.package_record import RecordEntry
from atomicplug.pycs import SourceCompiler, build_pyc, pyc_name, pyc_sources, wants_source
from atomicplug.store import RECORD_NAME, plugin_trees, read_record, write_record
from atomicplug.tree_record import TreeRecordError, read_pyc_index, record_lines

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.safezip import ObjectExtraction

__all__ = ["objects_of", "objects_for_staging", "staging_tree", "stage_tree", "repair_tree", "remove_extra", "remake_record", "installed_pycs"]


def objects_of(config: Config) -> ObjectStore:
    """The home's object store, as it is (objects left in the earlier fan-out layout are read in place)."""
    return ObjectStore(config.home / "objects")


def objects_for_staging(config: Config) -> ObjectStore:
    """The object store for a caller holding the writer lock that is about to add objects: what is left
    of the earlier fan-out layout is flattened first, as far as it can be (:meth:`ObjectStore.flatten`,
    docs/design.md "The object store")."""
    objects = objects_of(config)
    objects.flatten()
    return objects


def staging_tree(config: Config, txid: str, plugin_id: str) -> Path:
    return config.staging_dir / txid / plugin_id


def installed_pycs(trees: tuple[Path, ...]) -> dict[str, RecordEntry]:
    """Source sha256 → pyc entry, from the records of a plugin's ``trees`` in the store.

    Any such pyc serves the same source in the new tree (they are built under a
    path-independent name), so an upgrade compiles only its changed modules. Only
    each record's pyc lines are read, not the package RECORD (docs/design.md "The tree record").
    """
    index: dict[str, RecordEntry] = {}
    for tree in trees:
        try:
            index.update(read_pyc_index(tree))
        except (OSError, ValueError):
            continue  # a tree without a readable record only costs a recompile
    return index


def stage_tree(
    config: Config,
    txid: str,
    plugin_id: str,
    sha256: str,
    tree: str,
    objects: ObjectStore,
    progress: Callable[[str], None],
    *,
    before_worker: Callable[[], None] | None = None,
    after_worker: Callable[[], None] | None = None,
) -> None:
    """Make ``<home>/<tree>`` from the blob of ``sha256``: objects, pycs, links, record; durable.

    ``before_worker`` is called once if the backend's compile worker is about to start
    (the transaction stops the health gate's idle interpreter then: one helper at a time),
    ``after_worker`` once that worker has exited (the gate's interpreter starts again
    while the links, the record and the sync are made).

    Raises PackageError/MetadataError for a package the extractor refuses (nothing
    is left but unreferenced objects, which gc sweeps), OperationError when the
    store cannot be written.
    """
    from atomicplug.intake import release_used

    extraction, files = _package_objects(config, plugin_id, sha256, objects, before_worker, after_worker)
    # Every file is an object now: drop the blob before the sync below, so its dirty
    # pages (67 MB for the large bench plugin, ~40 ms of syncfs) are never written back.
    release_used(config, [sha256])
    if extraction.reused:
        progress(f"staging {plugin_id}: {extraction.reused} of {len(extraction.files)} files already in the object store")
    staged = staging_tree(config, txid, plugin_id)
    make_dirs(staged.parent)
    remove_tree(staged)  # left by an earlier attempt of this same txid: start clean
    _materialise(staged, files, extraction.folders, objects)
    if objects.notice:
        progress(objects.notice)
    write_record(staged, files, extraction.recorded)
    sync_tree(staged)  # the tree, its links and (same file system) the objects they name
    objects.sync()  # a no-op unless the objects were written and not covered above
    final = config.home / tree
    make_dirs(final.parent)
    if final.exists():
        remove_tree(staged)  # same id, version and package: an identical tree is already there
        return
    replace(staged, final)


def _package_objects(
    config: Config,
    plugin_id: str,
    sha256: str,
    objects: ObjectStore,
    before_worker: Callable[[], None] | None = None,
    after_worker: Callable[[], None] | None = None,
) -> tuple[ObjectExtraction, list[RecordEntry]]:
    """Every file of the package of ``sha256`` as an object, and its pycs: the extraction and the tree's files."""
    from atomicplug import safezip
    from atomicplug.errors import PackageError
    from atomicplug.intake import open_blob, release
    from atomicplug.ioerrors import is_full_disk

    trees = plugin_trees(config.home, plugin_id)
    known = installed_pycs(trees)
    pycs = _PycObjects(objects)
    compiler = SourceCompiler(pycs.keep, known=frozenset(known), before_worker=before_worker, after_worker=after_worker)
    extraction = None
    try:
        with open_blob(config, sha256) as blob:
            # No tree of the plugin yet: its files are most likely new here, created without a look first.
            extraction = safezip.extract_to_objects(blob, objects, config.limits, sink=compiler, sha256=sha256, fresh=not trees)
        compiler.finish()
    except BaseException as exc:
        objects.discard(pycs.created)  # as the extractor does with its own objects on its own failures
        if extraction is not None:  # the blob failed its check after the extraction (open_blob), or a source its compile
            objects.discard(extraction.created)
        if isinstance(exc, PackageError):  # its bytes lie (a CRC, a size, a RECORD line): none of them is kept to be taken in again
            release(config, sha256)
        elif is_full_disk(exc) and not config.cluster:  # the space the retry needs (it takes the zip in again anyway)
            try:
                release(config, sha256)
            except OSError:
                pass  # the disk's own failure is the one to report
        raise
    finally:
        compiler.close()
    return extraction, _with_pycs(extraction.files, pycs.by_source, known, objects)


def remake_record(config: Config, tree: str, plugin_id: str, sha256: str, objects: ObjectStore) -> None:
    """Write ``tree``'s record again from its package, replacing one that cannot be read.

    The record is no object, so a reinstall that reuses the identical tree would
    never rewrite it; this makes it as staging did (same files, same pycs), in one
    atomic replace. The files it lists are checked afterwards like any others.
    """
    from atomicplug.fsutil import atomic_write_bytes

    extraction, files = _package_objects(config, plugin_id, sha256, objects)
    lines = record_lines(files, extraction.recorded)
    # Written in staging, then renamed into the tree: a crash leaves its temp where gc sweeps, not in the tree.
    scratch = config.staging_dir / f"record-{secrets.token_hex(6)}"
    make_dirs(scratch)
    try:
        atomic_write_bytes(scratch / RECORD_NAME, "".join(lines).encode("utf-8"))
        replace(scratch / RECORD_NAME, config.home / tree / RECORD_NAME)
    finally:
        try:
            remove_tree(scratch)
        except OSError:  # the disk that failed above: gc sweeps staging
            pass


class _PycObjects:
    """The compiler's ``keep``: each pyc stored as an object the moment it arrives, not held until the end."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.by_source: dict[str, tuple[str, int]] = {}  # source sha256 -> (pyc sha256, size)
        self.created: list[str] = []

    def keep(self, source_sha256: str, pyc: bytes) -> None:
        sha, created = self.objects.put(pyc)
        if created:
            self.created.append(sha)
        self.by_source[source_sha256] = (sha, len(pyc))


def _with_pycs(
    files: tuple[RecordEntry, ...], compiled: dict[str, tuple[str, int]], known: dict[str, RecordEntry], objects: ObjectStore
) -> list[RecordEntry]:
    """The package's files plus one pyc object per backend source (a pyc shipped in the zip is replaced)."""
    by_path = {f.path: f for f in files}
    for source in files:
        if not wants_source(source.path):
            continue
        name = pyc_name(source.path)
        reused = known.get(source.sha256)
        if source.sha256 in compiled:
            sha, size = compiled[source.sha256]
            by_path[name] = RecordEntry(path=name, size=size, sha256=sha)
        elif reused is not None and objects.has(reused.sha256, reused.size):
            by_path[name] = RecordEntry(path=name, size=reused.size, sha256=reused.sha256)
        else:  # its pyc object was collected or damaged since: compile it again here
            data = build_pyc(objects.read_bytes(source.sha256))
            by_path[name] = RecordEntry(path=name, size=len(data), sha256=objects.put_bytes(data))
    return sorted(by_path.values(), key=lambda f: f.path)


def _materialise(staged: Path, files: list[RecordEntry], folders: tuple[str, ...], objects: ObjectStore) -> None:
    """``staged`` as a folder of links to ``files``' objects (not yet durable: the caller syncs once)."""
    root = os.fspath(staged)
    os.makedirs(root)
    for folder in sorted({os.path.dirname(f.path) for f in files} | set(folders)):
        if folder:
            os.makedirs(f"{root}/{folder}", exist_ok=True)
    for entry in files:
        objects.link(entry.sha256, f"{root}/{entry.path}")


def repair_tree(config: Config, tree: str, sha256: str, damaged: list[str], objects: ObjectStore) -> int:
    """Rewrite the objects behind ``damaged`` paths of ``tree`` from the blob of ``sha256``; returns how many.

    The tree's files are the objects themselves (hard links), so rewriting an
    object in place repairs every tree that shares it. A path missing from the
    tree is linked again. Idempotent: a crash half-way leaves work the next
    repair finishes (an object being rewritten fails :meth:`ObjectStore.has`).
    """
    from atomicplug.intake import open_blob
    from atomicplug.safezip import read_entries

    folder = config.home / tree
    listed = _trusted_files(folder)  # with its RECORD damaged: what the tree record itself lists
    record = {f.path: f for f in listed}
    bad = [record[p] for p in damaged if p in record]
    repaired = 0
    built = pyc_sources(listed)  # pyc path -> its source's sha256: the pycs staging built
    with open_blob(config, sha256) as blob:  # every other file, a pyc the package ships too, from the package
        for path, data in read_entries(blob, {f.path for f in bad if f.path not in built}, config.limits):
            _repair_object(objects, record[path], data)
            repaired += 1
    for pyc in (f for f in bad if f.path in built):
        _repair_object(objects, pyc, build_pyc(objects.read_bytes(built[pyc.path])))
        repaired += 1
    for entry in bad:
        target = folder / entry.path
        if _a_copy(target, objects.path(entry.sha256)):
            _copy_again(objects, entry.sha256, target)  # no hard links here: the object's repair did not reach it
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            objects.link(entry.sha256, target)
    if repaired or bad:
        sync_tree(folder)
    return repaired


def _copy_again(objects: ObjectStore, sha256: str, target: Path) -> None:
    """Replace the copy ``target`` with a new copy of its object: written beside it, then renamed
    over it, so a full disk halfway leaves the damaged file where it was, not none (the next repair
    finishes; a temp a crash leaves is one of the tree's extra files, which a reinstall removes)."""
    temp = target.with_name(f".repair.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")  # not its name: that may be 255 bytes
    try:
        objects.link(sha256, temp)
        replace(temp, target, durable=False)
    except BaseException:
        try:
            remove_file(temp, durable=False)
        except OSError:
            pass  # the error in flight is the one to report
        raise


def _a_copy(target: Path, obj: Path) -> bool:
    """``target`` exists and is not a hard link to the object ``obj`` (a copy, where links are impossible)."""
    try:
        return not os.path.samefile(target, obj)
    except FileNotFoundError:
        return False


def remove_extra(config: Config, tree: str, extra: list[str]) -> int:
    """Remove what ``tree`` holds beyond its record; returns how many went.

    Nobody signed those files, and an extra module in a backend tree would be
    imported. Idempotent: a crash half-way leaves the rest for ``verify`` to name
    and the next reinstall to remove.
    """
    folder = config.home / tree
    for path in extra:
        remove_file(folder / path, durable=False)  # a symlink itself, never what it points at
    if extra:
        sync_tree(folder)
    return len(extra)


def pycs_built_otherwise(config: Config, tree: str, damaged: list[str], objects: ObjectStore) -> bool:
    """A damaged pyc staging built that this process builds to other bytes than its record line
    names: repairing it needs a new line (``remake_record``). An earlier atomicplug built pycs
    whose shared strings were marked as its process had them (``pyc_worker._intern_the_shared_strings``)."""
    listed = _trusted_files(config.home / tree)
    built = {path: source for path, source in pyc_sources(listed).items() if path in damaged}
    if not built:
        return False
    recorded = {f.path: f.sha256 for f in listed}
    for path, source in built.items():
        try:
            if hashlib.sha256(build_pyc(objects.read_bytes(source))).hexdigest() != recorded[path]:
                return True
        except (OSError, SyntaxError, ValueError):  # its source is damaged or gone too: the record's way repairs both
            return True
    return False


def _trusted_files(folder: Path) -> list[RecordEntry]:
    """What ``folder``'s record lists, or, when it is damaged, what it still vouches for."""
    try:
        return read_record(folder)
    except TreeRecordError as exc:
        return list(exc.trusted)


def _repair_object(objects: ObjectStore, entry: RecordEntry, data: bytes) -> None:
    """Put the right bytes back under ``entry``'s object (they hash to it, or nothing is written)."""
    if objects.path(entry.sha256).exists():
        objects.repair(entry.sha256, data)
    elif objects.put_bytes(data) != entry.sha256:  # pragma: no cover - a pyc from another interpreter
        return

