"""Garbage collection: what no kept generation needs (docs/design.md "Generations", "gc").

Kept: the live generation and the ``keep_generations - 1`` before it; the
backend views they show; the store trees they show, plus each of their plugins' previous tree (so a per-plugin
rollback still works, also after switching back to an older kept generation); the package blobs those trees came from; unfinished
journals and the live generation's own; the objects those trees' records name
(a tree's files are hard links to them, or copies where links are impossible). Everything is deleted through :mod:`atomicplug.fsutil`
(rename to ``.deleting-*`` first), so a crash mid-gc leaves only leftovers the
next gc or recovery sweeps; it runs under the writer lock, after recovery. A kept
tree whose record cannot be read refuses gc before anything is removed.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import attrs

from atomicplug import generations
from atomicplug.errors import OperationError
from atomicplug.fsutil import remove_file, remove_tree
from atomicplug.registry import Registry

if TYPE_CHECKING:
    from atomicplug.config import Config

__all__ = ["Collected", "collect", "BLOB_GRACE_SECONDS"]

#: A package blob younger than this is kept although no generation uses it yet: another
#: process may have taken it in and be waiting for the lock to install it.
BLOB_GRACE_SECONDS = 3600


@attrs.frozen
class Collected:
    """What one gc removed."""

    generations: int = 0
    views: int = 0  # backend views no kept generation shows (docs/design.md "Generations")
    trees: int = 0
    objects: int = 0
    journals: int = 0
    blobs: int = 0
    leftovers: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


def kept_generations(config: Config) -> list[int]:
    """The live generation and the ones before it that ``keep_generations`` keeps, oldest first."""
    live = generations.current_number(config)
    if live is None:
        return []
    older = [n for n in generations.numbers(config) if n < live]
    return [*older[len(older) - (config.keep_generations - 1) :], live] if config.keep_generations > 1 else [live]


def collect(config: Config) -> Collected:
    """Remove what no kept generation needs; the caller holds the writer lock and has recovered."""
    from atomicplug.journal.reader import all_journals
    from atomicplug.stages.stage import objects_of
    from atomicplug.transaction import sweep_temp_files, sweep_trash

    sweep_temp_files(config)
    leftovers = sweep_trash(config)
    keep = kept_generations(config)
    registries = [Registry.load(generations.folder(config, n) / generations.REGISTRY_NAME) for n in keep]
    if not registries:  # a home from before generations: its one registry file
        registries = [Registry.load(config.registry_path)]
    # Each kept generation needs what it shows and each plugin's previous tree: switched back to,
    # a per-plugin rollback from it goes where it went before.
    trees = set().union(*(registry.referenced_trees() for registry in registries))
    objects_in_use = _objects_in_use(config, trees)  # before removing anything: a damaged record refuses gc whole
    removed_generations = 0
    for number in generations.numbers(config):
        if number not in keep:
            generations.remove(config, number)
            removed_generations += 1
    removed_views = generations.remove_unused_views(config)
    removed_trees = 0
    store = config.store_dir
    for plugin_dir in sorted(store.iterdir()) if store.is_dir() else []:
        for tree in sorted(plugin_dir.iterdir()):
            if f"store/{plugin_dir.name}/{tree.name}" not in trees:
                remove_tree(tree)
                removed_trees += 1
        if not any(plugin_dir.iterdir()):
            plugin_dir.rmdir()
    live_txid = registries[-1].txid
    removed_journals = 0
    for journal in all_journals(config.journal_dir):
        if journal.finished and journal.txid != live_txid:
            remove_file(journal.path)
            removed_journals += 1
    staging = config.staging_dir
    for leftover in sorted(staging.iterdir()) if staging.is_dir() else []:
        remove_tree(leftover)
        leftovers += 1
    packages = {tree.split("-")[-1] for tree in trees}  # the sha12 each kept tree came from
    packages = {sha for sha in _blob_names(config) if sha[:12] in packages}
    return Collected(
        generations=removed_generations,
        views=removed_views,
        trees=removed_trees,
        objects=objects_of(config).sweep(objects_in_use),
        journals=removed_journals,
        blobs=_remove_unused_blobs(config, packages),
        leftovers=leftovers,
    )


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


def _blob_names(config: Config) -> list[str]:
    folder = config.downloads_dir
    return [p.name[:-4] for p in folder.glob("*.zip")] if folder.is_dir() else []


def _remove_unused_blobs(config: Config, packages: set[str]) -> int:
    """Package blobs (and their signatures) no kept tree came from, past the grace period."""
    folder = config.downloads_dir
    removed = 0
    cutoff = time.time() - BLOB_GRACE_SECONDS
    for blob in sorted(folder.glob("*.zip")) if folder.is_dir() else []:
        if blob.name[:-4] in packages:
            continue
        try:
            if os.stat(blob).st_mtime > cutoff:
                continue
        except FileNotFoundError:
            continue
        remove_file(blob.with_name(blob.name + ".minisig"))
        remove_file(blob)
        removed += 1
    return removed
