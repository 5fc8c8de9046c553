"""Garbage collection: what no kept generation needs (docs/design.md "Generations", "gc").

Kept: the live generation and the ``keep_generations - 1`` before it; the
backend views they show; the store trees they show, plus each of their plugins' previous tree (so a per-plugin
rollback still works, also after switching back to an older kept generation); the trees of
plugins none of them shows whose tables the database keeps (``uninstall --keep-data``: a later
downgrade takes their downs from those trees); the package blobs those trees came from; unfinished
journals and the live generation's own; the objects those trees' records name
(a tree's files are hard links to them, or copies where links are impossible). Everything is deleted through :mod:`atomicplug.fsutil`
(rename to ``.deleting-*`` first), so a crash mid-gc leaves only leftovers the
next gc or recovery sweeps; it runs under the writer lock, after recovery. A kept
tree whose record cannot be read refuses gc before anything is removed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from atomicplug import generations, views
from atomicplug.errors import OperationError
from atomicplug.fsutil import TRASH_PREFIX, remove_file, remove_tree
from atomicplug.registry import Registry

if TYPE_CHECKING:
    from atomicplug.config import Config

__all__ = ["Collected", "collect", "survey", "BLOB_GRACE_SECONDS"]

#: A package blob younger than this is kept although no generation uses it yet: another
#: process may have taken it in and be waiting for the lock to install it.
BLOB_GRACE_SECONDS = 3600


@attrs.frozen
class Collected:
    """What one gc removed (or, in a dry run, would remove), and the bytes of its objects and packages."""

    generations: int = 0
    views: int = 0  # backend views no kept generation shows (docs/design.md "Generations")
    trees: int = 0
    objects: int = 0
    journals: int = 0
    blobs: int = 0
    leftovers: int = 0
    bytes: int = 0  # the unused objects' and packages' sizes: what their removal frees

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


def _plugin_folders(store: Path) -> list[Path]:
    """The folders of ``store/`` (one per plugin): not a file left there (a probe's litter, a note)."""
    if not store.is_dir():
        return []
    return [entry for entry in sorted(store.iterdir()) if entry.is_dir() and not entry.is_symlink()]


def kept_generations(config: Config) -> list[int]:
    """The live generation and the ones before it that ``keep_generations`` keeps, oldest first.

    With ``<home>/current`` removed by hand, the live one is the highest complete generation
    (what recovery points it at again: ``generations.restore_live_link``).
    """
    live = generations.current_number(config)
    if live is None:
        live = max(generations.numbers(config), default=None)
    if live is None:
        return []
    older = [n for n in generations.numbers(config) if n < live]
    return [*older[max(0, len(older) - (config.keep_generations - 1)) :], live]  # from the start when fewer are older


@attrs.frozen
class _Unused:
    """What no kept generation needs, decided before anything is removed (gc and its dry run share it)."""

    generations: tuple[int, ...]
    views: tuple[str, ...]
    trees: tuple[Path, ...]
    objects_in_use: frozenset[str]
    unreferenced: tuple[str, ...]  # the objects no kept tree's record names
    journals: tuple[Path, ...]
    blobs: tuple[Path, ...]
    bytes: int  # the unreferenced objects' and the blobs' sizes: what removing them frees


def _unused(config: Config) -> _Unused:
    """Raises OperationError when a kept tree's record cannot be read (its objects are unknown)."""
    from atomicplug.journal.reader import all_journals
    from atomicplug.stages.stage import objects_of

    keep = kept_generations(config)
    registries = [Registry.load(generations.folder(config, n) / generations.REGISTRY_NAME, required=True) for n in keep]
    if not registries:  # a home from before generations: its one registry file
        registries = [Registry.load(config.registry_path)]
    # Each kept generation needs what it shows and each plugin's previous tree: switched back to,
    # a per-plugin rollback from it goes where it went before.
    trees = set().union(*(registry.referenced_trees() for registry in registries))
    shown = {views.key_of(generations.folder(config, n) / generations.BACKEND) for n in keep}
    store = config.store_dir
    stored = [tree for plugin_dir in _plugin_folders(store) for tree in sorted(plugin_dir.iterdir()) if not tree.name.startswith(TRASH_PREFIX)]
    trees |= _kept_data_trees(config, stored, registries)
    live_txid = registries[-1].txid
    packages = {tree.split("-")[-1] for tree in trees}  # the sha12 each kept tree came from
    in_use = frozenset(_objects_in_use(config, trees))
    objects = objects_of(config)
    unreferenced = tuple(sha for sha in objects if sha not in in_use)
    blobs = tuple(_unused_blobs(config, packages))
    return _Unused(
        generations=tuple(n for n in generations.numbers(config) if n not in keep),
        views=tuple(name for name in views.names(config) if name not in shown),
        trees=tuple(tree for tree in stored if f"store/{tree.parent.name}/{tree.name}" not in trees),
        objects_in_use=in_use,
        unreferenced=unreferenced,
        journals=tuple(j.path for j in all_journals(config.journal_dir) if j.finished and j.txid != live_txid),
        blobs=blobs,
        bytes=sum(objects.footprint(sha) for sha in unreferenced) + sum(_size(blob) for blob in blobs),
    )


def survey(config: Config) -> Collected:
    """What :func:`collect` would remove now, and the bytes it would free; nothing is removed (``gc --dry-run``).

    Refused (OperationError) while a transaction is unfinished: gc finishes or undoes it first,
    which changes what is live, and a dry run changes nothing.
    """
    from atomicplug.journal.reader import pending_journals

    if pending := pending_journals(config.journal_dir):
        raise OperationError(
            f"{len(pending)} unfinished transaction(s): gc finishes them first, which changes what it would remove; "
            "run `atomicplug recover`, then `atomicplug gc --dry-run` again"
        )
    unused = _unused(config)
    leftovers = [*config.home.glob(f"staging/{TRASH_PREFIX}*"), *config.home.glob(f"store/*/{TRASH_PREFIX}*")]
    staging = config.staging_dir
    leftovers += [p for p in staging.iterdir() if not p.name.startswith(TRASH_PREFIX)] if staging.is_dir() else []
    return Collected(
        generations=len(unused.generations),
        views=len(unused.views),
        trees=len(unused.trees),
        objects=len(unused.unreferenced),
        journals=len(unused.journals),
        blobs=len(unused.blobs),
        leftovers=len(leftovers),
        bytes=unused.bytes,
    )


def collect(config: Config) -> Collected:
    """Remove what no kept generation needs; the caller holds the writer lock and has recovered."""
    from atomicplug.stages.stage import objects_of
    from atomicplug.transaction import sweep_temp_files, sweep_trash

    sweep_temp_files(config)
    leftovers = sweep_trash(config)
    unused = _unused(config)  # before removing anything: a damaged record refuses gc whole
    for number in unused.generations:
        generations.remove(config, number)
    removed_views = generations.remove_unused_views(config)
    for tree in unused.trees:
        remove_tree(tree)
    for plugin_dir in _plugin_folders(config.store_dir):
        if not any(plugin_dir.iterdir()):
            plugin_dir.rmdir()
    for journal in unused.journals:
        remove_file(journal)
    staging = config.staging_dir
    for leftover in sorted(staging.iterdir()) if staging.is_dir() else []:
        remove_tree(leftover)
        leftovers += 1
    for blob in unused.blobs:
        remove_file(blob.with_name(blob.name + ".minisig"))
        remove_file(blob)
    return Collected(
        generations=len(unused.generations),
        views=removed_views,
        trees=len(unused.trees),
        objects=objects_of(config).sweep(unused.objects_in_use),
        journals=len(unused.journals),
        blobs=len(unused.blobs),
        leftovers=leftovers,
        bytes=unused.bytes,
    )


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0


def _objects_in_use(config: Config, trees: set[str]) -> set[str]:
    """The objects the kept trees' records name (marked from the records, so copies count too)."""
    from atomicplug.tree_record import TreeRecordError, read_record

    referenced: set[str] = set()
    for tree in trees:
        try:
            referenced.update(entry.sha256 for entry in read_record(config.home / tree))
        except FileNotFoundError:
            continue  # a tree the registry names but that is gone: verify reports it
        except TreeRecordError as exc:  # its objects are unknown: sweeping could remove them
            raise OperationError(
                f"gc: cannot tell which objects {tree} uses ({exc}); nothing was removed: "
                "`atomicplug verify` shows the damage, reinstalling the package repairs it"
            ) from None
    return referenced


def _kept_data_trees(config: Config, stored: list[Path], registries: list[Registry]) -> set[str]:
    """The stored trees of the plugins no kept generation has whose tables the database keeps.

    Only a plugin that has trees here but is in none of ``registries`` is asked about (one
    ledger query each; none at all in the usual home). Raises OperationError (nothing removed)
    when the ledger cannot be read: gc cannot tell which trees the kept data needs.
    """
    from atomicplug.errors import DatabaseError
    from atomicplug.stages.migrate import keeping_data

    shown = set().union(*(registry.plugins for registry in registries))
    absent = {tree.parent.name for tree in stored} - shown
    try:
        keeping = keeping_data(config, absent)
    except DatabaseError as exc:
        raise OperationError(
            f"gc: {exc}, so it cannot tell which uninstalled plugins' tables are kept and need their store trees; "
            "nothing was removed"
        ) from None
    return {f"store/{tree.parent.name}/{tree.name}" for tree in stored if tree.parent.name in keeping}


def _unused_blobs(config: Config, packages: set[str]) -> list[Path]:
    """Package blobs no kept tree came from (``packages``: their sha12s), past the grace period."""
    folder = config.downloads_dir
    cutoff = time.time() - BLOB_GRACE_SECONDS
    unused = []
    for blob in sorted(folder.glob("*.zip")) if folder.is_dir() else []:
        if blob.name[:12] in packages:
            continue
        try:
            if os.stat(blob).st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        unused.append(blob)
    return unused
