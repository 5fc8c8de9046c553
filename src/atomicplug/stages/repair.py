"""Repairing a store tree from the package it was staged from (docs/design.md "The tree record").

Why a module of its own: three callers repair alike before a tree is trusted:
a reinstall of the installed package, an install that makes a tree the store
kept live again, and a cluster node's sync that does the same. The tree is
checked as ``verify --deep`` checks it; its files are hard links to objects,
so damaged objects are rewritten in place (:func:`stage.repair_tree`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from atomicplug.verification import verify_plugin

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.objects import ObjectStore
    from atomicplug.registry import InstalledPlugin

__all__ = ["reinstall_ways", "repair_before_use", "repair_from_package", "repair_line"]


def repair_before_use(config: Config, entry: InstalledPlugin, sha256: str, progress: Callable[[str], None], *, outcome: str) -> str | None:
    """:func:`repair_from_package` for a tree about to be trusted; its :func:`repair_line`, None when nothing was damaged.

    Both callers (an install, a cluster node's sync) repair before their transaction
    begins, so a disk or database failure here has changed no plugin: it is one line,
    ``StorageError("repair <id> <version> failed: …; <outcome>")``, the caller's
    ``outcome`` saying what finishes the repair.
    """
    from atomicplug import ioerrors

    try:
        count = repair_from_package(config, entry, sha256, progress)
    except Exception as exc:  # a failing disk: one line, like a transaction's (the extractor's OperationError too)
        cause = ioerrors.storage_cause(exc, wrapped=True)
        if cause is None:
            raise
        raise ioerrors.storage_error(f"repair {entry.id} {entry.version} failed", cause, outcome, config) from exc
    return None if count is None else repair_line(entry, count)


def repair_from_package(config: Config, entry: InstalledPlugin, sha256: str, progress: Callable[[str], None]) -> int | None:
    """How many files of ``entry``'s tree were repaired from the package ``sha256``; None when nothing was damaged.

    A damaged record (the tree's own, or the package RECORD it trusts) hides the
    rest of the tree: it is repaired first, then the tree checked again. A tree
    removed whole is staged again. Idempotent: a crash half-way leaves work the
    next repair finishes.
    """
    from atomicplug.layout import RECORD_NAME as PACKAGE_RECORD_NAME
    from atomicplug.stages.stage import objects_for_staging, pycs_built_otherwise, remake_record, remove_extra, repair_tree
    from atomicplug.store import RECORD_NAME

    tree = entry.current.tree

    def damaged() -> tuple[list[str], list[str]]:
        """(changed or missing paths, extra paths) as ``verify --deep`` finds them now."""
        report = verify_plugin(config, entry, deep=True)
        return [*report.changed, *report.missing], list(report.extra)

    found, extra = damaged()
    if not found and not extra:
        return None
    objects = objects_for_staging(config)
    if not (config.home / tree).is_dir():
        return _stage_again(config, entry, sha256, objects, progress)
    count = remove_extra(config, tree, extra)
    # The tree's own record, or a line of it a damaged pyc is not built to here (an earlier atomicplug's
    # pyc): made again (extracting repairs objects too).
    if RECORD_NAME in found or pycs_built_otherwise(config, tree, found, objects):
        remake_record(config, tree, entry.id, sha256, objects)
        count += 1 + len(objects.repaired)
        found, extra = damaged()  # what the damaged record hid
        count += remove_extra(config, tree, extra)
    count += repair_tree(config, tree, sha256, found, objects)
    if PACKAGE_RECORD_NAME in found:  # RECORD repaired: what it lists (and what it does not) can be checked now
        found, extra = damaged()
        count += repair_tree(config, tree, sha256, found, objects)
        count += remove_extra(config, tree, extra)
    return count


def _stage_again(config: Config, entry: InstalledPlugin, sha256: str, objects: ObjectStore, progress: Callable[[str], None]) -> int:
    """A store tree removed whole is staged again from its package (as its first install did,
    in ``staging/`` then renamed into place); how many files it holds."""
    from atomicplug.fsutil import remove_tree
    from atomicplug.journal.writer import new_txid
    from atomicplug.stages.stage import stage_tree
    from atomicplug.tree_record import read_record

    txid = new_txid()
    try:
        stage_tree(config, txid, entry.id, sha256, entry.current.tree, objects, progress)
    finally:
        remove_tree(config.staging_dir / txid)
    return len(read_record(config.home / entry.current.tree))


def repair_line(entry: InstalledPlugin, files: int, what: str = "") -> str:
    """The line of a repair ("repair crm 1.0.0: 2 files"); with ``what`` " damaged", its dry run's."""
    return f"repair {entry.id} {entry.version}: {files} file{'s' if files != 1 else ''}{what}"


def reinstall_ways(plugin_id: str = "ID", version: str = "VERSION", *, several: bool = False) -> str:
    """How to install ``plugin_id`` ``version`` from its package again, which repairs its tree
    (``several``: how to do so for several plugins, their ids and versions left as placeholders)."""
    return f"{'their zips' if several else 'its zip'}, or `atomicplug install {plugin_id}=={version}`; --allow-downgrade to go back"
