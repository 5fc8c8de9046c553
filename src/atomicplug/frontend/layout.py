"""``<frontend_addons>``: a folder atomicplug owns (docs/design.md "Frontend contract").

    index.ts        generated; replaced atomically when the list of enabled addons changes
    types.ts        the contract, the same text whatever is installed
    .store          -> <home>/store, the one symlink; index.ts imports through it
    index.next.ts   only while the frontend gate's check command runs

A folder in the old layout (a symlink ``<id>`` per plugin into the store, and an index
importing ``./<id>/addon.config``) is converted by the first :func:`write_layout`: the new
index is in place before the old links go, so the host compiles at every moment. Anything
else in the folder is refused by :func:`check_layout` before a transaction starts.
:func:`write_layout` is idempotent: step 5 and recovery run it again after a crash.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from atomicplug.errors import OperationError
from atomicplug.fsutil import TEMP_SUFFIX, atomic_write_bytes, link_points_into, make_dirs, remove_file, switch_symlink
from atomicplug.frontend.contract import CANDIDATE_NAME, INDEX_NAME, MARKER, STORE_LINK, TYPES_NAME, TYPES_TS
from atomicplug.frontend.index import AddonIndex, addon_imports, load_index
from atomicplug.registry import Registry

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.registry import InstalledPlugin

__all__ = [
    "check_layout",
    "write_layout",
    "write_static_parts",
    "write_index_file",
    "next_index",
    "remove_leftovers",
    "frontend_entry_problems",
]

_GENERATED_FILES = (INDEX_NAME, TYPES_NAME, CANDIDATE_NAME)
#: switch_symlink's temp name for the ``.store`` link is ``.store.tmp-<txid>``.
_STORE_SWITCH_PREFIX = f"{STORE_LINK}.tmp-"


def check_layout(config: Config) -> None:
    """Refuse, changing nothing, a folder that holds anything atomicplug did not put there."""
    folder = config.frontend_addons
    if not config.frontend_index or not os.path.lexists(folder):
        return
    if not folder.is_dir():
        raise OperationError(f"frontend_addons {folder} must be a folder atomicplug owns (got a file)")
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == STORE_LINK and entry.is_symlink() and not _ours(config, entry):
                raise OperationError(
                    f"{entry.path} points at {os.readlink(entry.path)}, not at this home's store {config.store_dir} "
                    f"(another home's, or a project copied or moved?); if no other home uses {folder}, remove the "
                    "link: the next transaction makes it again"
                )
            if not _ours(config, entry):
                raise OperationError(
                    f"{entry.path} was not put there by atomicplug; move it out of {folder}, which atomicplug "
                    f"owns (expected only {INDEX_NAME}, {TYPES_NAME} and {STORE_LINK})"
                )


def _ours(config: Config, entry: os.DirEntry[str]) -> bool:
    if entry.is_symlink():
        target = os.readlink(entry.path)
        if entry.name == STORE_LINK:
            return target == str(config.store_dir)
        return _is_legacy_link(config, entry.path)
    if entry.name in _GENERATED_FILES:
        return entry.is_file() and _starts_with_marker(Path(entry.path))
    # temp files of atomic_write_bytes: recovery removes those of dead writers
    return entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file()


def _is_legacy_link(config: Config, link: str) -> bool:
    """Old layout: ``<id>`` (or ``<id>.tmp-<txid>``) linked to ``<home>/store/<id>/<tree>/frontend``."""
    return link_points_into(link, config.store_dir)


def _starts_with_marker(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(MARKER)) == MARKER.encode()


def write_layout(config: Config, registry: Registry, txid: str) -> None:
    """Make the folder match ``registry``: static parts, index.ts, no old links, no candidate."""
    if not config.frontend_index:
        return
    write_static_parts(config, txid)
    write_index_file(config, registry)
    _remove_legacy_links(config)
    remove_leftovers(config)


def write_static_parts(config: Config, txid: str) -> None:
    """The folder, the ``.store`` link and ``types.ts``: what index.ts (or a candidate) needs."""
    folder = config.frontend_addons
    make_dirs(folder)
    make_dirs(config.store_dir)
    link = folder / STORE_LINK
    if not (link.is_symlink() and os.readlink(link) == str(config.store_dir)):
        switch_symlink(link, config.store_dir, txid)
    types = folder / TYPES_NAME
    if _read_bytes(types) != TYPES_TS.encode():
        atomic_write_bytes(types, TYPES_TS.encode())


def write_index_file(config: Config, registry: Registry) -> None:
    """Rewrite index.ts, stamped with the registry's generation, only when its list of addons changes."""
    index = next_index(config, registry)
    if index is not None:
        atomic_write_bytes(config.frontend_addons / INDEX_NAME, index.render().encode())


def next_index(config: Config, registry: Registry) -> AddonIndex | None:
    """The index ``registry`` needs, or None when index.ts already lists exactly those addons.

    Stamped with the registry's generation (``<home>/generations/<n>``): numbers only grow,
    so every transaction that changes the list writes a text index.ts never had.
    """
    index = AddonIndex(registry.generation, addon_imports(config, registry))
    try:
        current = (config.frontend_addons / INDEX_NAME).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return index
    return None if index.lists_the_same_as(current) else index


def _remove_legacy_links(config: Config) -> None:
    with os.scandir(config.frontend_addons) as entries:
        legacy = [
            Path(e.path) for e in entries if e.name != STORE_LINK and e.is_symlink() and _is_legacy_link(config, e.path)
        ]
    for link in legacy:
        remove_file(link)


def remove_leftovers(config: Config) -> None:
    """Remove the gate's ``index.next.ts`` and a half-made ``.store`` switch (after the check, on rollback).

    Both exist only while a transaction runs, so under the writer lock any found is left by a crash.
    """
    folder = config.frontend_addons
    if not folder.is_dir():
        return
    with os.scandir(folder) as entries:
        leftovers = [Path(e.path) for e in entries if e.name == CANDIDATE_NAME or e.name.startswith(_STORE_SWITCH_PREFIX)]
    for path in leftovers:
        remove_file(path)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def frontend_entry_problems(config: Config, entry: InstalledPlugin) -> list[str]:
    """For ``verify``: the paths that do not show ``entry`` as the registry says (empty: fine).

    index.ts must import the plugin's current tree exactly when it is enabled with a frontend
    config, and ``.store`` must lead to the store.
    """
    imports = addon_imports(config, Registry(plugins={entry.id: entry}))
    wanted = imports[0].tree if imports else None
    folder = config.frontend_addons
    index = load_index(folder / INDEX_NAME)
    if index is None and os.path.lexists(folder / entry.id):
        # the old layout, until the next transaction converts it: a link per plugin
        legacy = folder / entry.id
        actual = os.readlink(legacy) if legacy.is_symlink() else None
        return [] if wanted is not None and actual == str(config.home / wanted / "frontend") else [str(legacy)]
    problems = []
    if (index.trees.get(entry.id) if index is not None else None) != wanted:
        problems.append(str(folder / INDEX_NAME))
    link = folder / STORE_LINK
    if wanted is not None and not (link.is_symlink() and os.readlink(link) == str(config.store_dir)):
        problems.append(str(link))
    return problems

