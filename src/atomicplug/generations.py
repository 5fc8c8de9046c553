"""Generations: whole addon views, switched by one rename (docs/design.md "Generations").

Switching each plugin's link in turn let a running application import a mix of
old and new between the first and the last switch (issue 14: 375 mixed reads in
110,006 while two plugins were upgraded together). So, as OSTree and Nix do,
every transaction builds a complete view of the addons it leaves, invisible,
and one ``os.replace`` of ``<home>/current`` makes it the live one::

    <home>/generations/<n>/backend       -> ../../views/<key>  (a backend view: a link per
                                            plugin into the store, see atomicplug.views)
    <home>/generations/<n>/registry.json     the registry of that view
    <home>/current                        -> generations/<n>
    <home>/addon_registry.json            -> current/registry.json
    <backend_addons>                      -> <home>/current/backend

A generation is built under ``generations/.building-<n>`` and renamed into
place once complete and durable, so a folder named ``<n>`` is always whole.
Readers that must see one generation resolve the addon folder once
(``os.path.realpath``) and read inside what it resolved to (the loader does).
"""

from __future__ import annotations

import os
import sys
import re
from pathlib import Path
from typing import TYPE_CHECKING

from atomicplug import fsutil, views
from atomicplug.errors import OperationError

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.registry import InstalledPlugin, Registry

__all__ = [
    "CURRENT",
    "REGISTRY_NAME",
    "signer_of",
    "BACKEND",
    "current_number",
    "restore_live_link",
    "numbers",
    "next_number",
    "folder",
    "build",
    "shown_views",
    "switch",
    "remove",
    "remove_unused_views",
    "check_backend_folder",
    "ensure_backend_link",
    "link_registry",
]

CURRENT = "current"
REGISTRY_NAME = "registry.json"
BACKEND = "backend"
_BUILDING = ".building-"
_LEGACY = ".legacy-"
_NUMBER = re.compile(r"^[0-9]+$")


def root(config: Config) -> Path:
    return config.home / "generations"


def folder(config: Config, number: int) -> Path:
    return root(config) / str(number)


def current_number(config: Config) -> int | None:
    """The live generation's number, None before the first one."""
    try:
        target = os.readlink(config.home / CURRENT)
    except (FileNotFoundError, OSError):
        return None
    name = Path(target).name
    return int(name) if _NUMBER.match(name) else None


def numbers(config: Config) -> list[int]:
    """Every complete generation on disk, oldest first."""
    try:
        names = os.listdir(root(config))
    except FileNotFoundError:
        return []
    return sorted(int(name) for name in names if _NUMBER.match(name))


def next_number(config: Config) -> int:
    """One above every generation that exists or is live (numbers never repeat while kept)."""
    existing = numbers(config)
    live = current_number(config)
    return max([0, *existing, *([live] if live is not None else [])]) + 1


def build(config: Config, number: int, registry: Registry) -> Path:
    """Make ``generations/<number>`` hold ``registry``'s view; idempotent, atomic when it appears.

    Its registry.json is ``registry`` with every tree's parts known (see
    :meth:`Registry.with_parts_known`); the trees must be in the store. Its
    ``backend`` is a link to the backend view of the enabled plugins' trees
    (:mod:`atomicplug.views`): made for this generation, or the same one an
    earlier generation showed.

    Built in ``.building-<number>`` (a leftover of a crash is discarded and rebuilt),
    made durable, then renamed into place. An existing complete generation is kept.
    """
    final = folder(config, number)
    if final.is_dir():
        return final
    # What each tree holds is kept in its registry entry, probed only for a tree new to it
    # (a new install, or a registry written before): not 1000 probes every transaction.
    registry = registry.with_parts_known(config.home)
    entries = registry.plugins
    view = views.ensure(
        config,
        [(pid, views.link_target(entries[pid].current.tree, BACKEND)) for pid in sorted(entries) if _shows_backend(entries[pid])],
        like=str(config.home / CURRENT / BACKEND),  # the live view: what it shares is hard-linked
    )
    building = root(config) / f"{_BUILDING}{number}"
    fsutil.make_dirs(root(config))
    fsutil.remove_tree(building)
    fsutil.make_dirs(building)
    fsutil.make_symlinks(str(building), [(BACKEND, f"../../{views.FOLDER}/{view}")])
    data = registry.to_json()
    fsutil.write_new_file(building / REGISTRY_NAME, data, durable=True)
    fsutil.fsync_dir(building)  # its two entries; not a syncfs, which flushes other processes' writes too
    fsutil.replace(building, final)
    registry.remember(data)  # the switch reads it back: not parsed again in this process
    return final


def _shows_backend(entry: InstalledPlugin) -> bool:
    return entry.enabled and bool(entry.current.backend)


def shown_views(config: Config) -> set[str]:
    """The backend views the generations on disk show (see :mod:`atomicplug.views`)."""
    shown = {views.key_of(folder(config, number) / BACKEND) for number in numbers(config)}
    return {key for key in shown if key is not None}


def switch(config: Config, number: int, txid: str) -> None:
    """Make generation ``number`` the live one: one ``os.replace`` of ``<home>/current``, then fsync."""
    if current_number(config) == number:
        return
    if not folder(config, number).is_dir():
        raise OperationError(f"generation {number} is not complete in {root(config)}; run `atomicplug recover`")
    fsutil.switch_symlink(config.home / CURRENT, Path("generations") / str(number), txid)


def restore_live_link(config: Config) -> int | None:
    """Point a ``<home>/current`` removed by hand at the live generation again; its number, or None.

    Every transaction builds a generation numbered above all others (a rollback too), and
    one that did not commit is removed (recovery runs first), so the live generation is
    the highest complete one. Without the link the registry reads empty, and the next
    transaction would build a generation showing only its own plugins.
    """
    if os.path.lexists(config.home / CURRENT):
        return None
    kept = numbers(config)
    if not kept:
        return None
    fsutil.switch_symlink(config.home / CURRENT, Path("generations") / str(kept[-1]), "relink")  # under the writer lock: one name
    return kept[-1]


def remove(config: Config, number: int) -> None:
    """Delete generation ``number`` and any half-built copy of it (its view: :func:`remove_unused_views`)."""
    fsutil.remove_tree(root(config) / f"{_BUILDING}{number}")
    fsutil.remove_tree(folder(config, number))


def signer_of(config: Config, plugin_id: str, tree: str) -> str | None:
    """Who signed the package of ``plugin_id``'s store ``tree``, from the newest kept generation that
    showed it (a registry entry names its own tree's signer, not its previous tree's); None when
    none does any more."""
    from atomicplug.registry import Registry

    for number in reversed(numbers(config)):
        entry = Registry.load(folder(config, number) / REGISTRY_NAME, required=True).plugins.get(plugin_id)
        if entry is not None and entry.current.tree == tree:
            return entry.signed_by
    return None


def remove_unused_views(config: Config) -> int:
    """Delete the backend views no generation on disk shows; how many went."""
    return views.remove_unused(config, shown_views(config))


def link_registry(config: Config, txid: str) -> None:
    """``<home>/addon_registry.json`` → ``current/registry.json`` (replaces a legacy file once)."""
    target = Path(CURRENT) / REGISTRY_NAME
    path = config.registry_path
    if path.is_symlink() and Path(os.readlink(path)) == target:
        return
    fsutil.switch_symlink(path, target, txid, replace_file=True)


# -- the configured backend addon folder ----------------------------------------------


def _backend_link_target(config: Config) -> Path:
    return config.home / CURRENT / BACKEND


def check_backend_folder(config: Config) -> None:
    """Refuse, before a transaction starts, a backend addon folder atomicplug cannot take over.

    Fine: absent, atomicplug's link, or a real folder holding only links into the
    store (the layout before generations, converted once by :func:`ensure_backend_link`).
    """
    path = config.backend_addons
    if path.is_symlink():
        target = Path(os.readlink(path))
        if target != _backend_link_target(config):
            raise OperationError(
                f"{path} is a symlink to {target}, not atomicplug's link to {_backend_link_target(config)}; move it away first"
            )
        return
    if not path.exists():
        return
    if not path.is_dir():
        raise OperationError(f"{path} exists and is not a folder; move it away first")
    foreign = sorted(entry.name for entry in path.iterdir() if not _is_legacy_link(config, entry))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" (and {len(foreign) - 3} more)" if len(foreign) > 3 else "")
        raise OperationError(
            f"{path} holds files atomicplug did not put there ({shown}); move them away so atomicplug can "
            "make the folder a link to its current generation"
        )


def _is_legacy_link(config: Config, entry: Path) -> bool:
    """A per-plugin link of the layout before generations, or its leftover temp link: into ``<home>/store``."""
    return entry.is_symlink() and fsutil.link_points_into(entry, config.store_dir)


def ensure_backend_link(config: Config, txid: str) -> None:
    """Make the backend addon folder atomicplug's link to ``<home>/current/backend``; idempotent.

    A legacy real folder (only links into the store: checked by
    :func:`check_backend_folder` before the transaction began) is first renamed
    aside, then the link takes its name, then the old folder's links are removed,
    and the folder with them when nothing else is in it. A crash in between leaves
    work that the next run (recovery) finishes. Anything else found there (written
    after the check, or while a crash after COMMIT left the conversion to
    ``recover``) is kept where it is, and named: the roll forward cannot refuse.
    """
    path = config.backend_addons
    if path.exists() and not path.is_symlink():
        fsutil.replace(path, path.with_name(f".{path.name}{_LEGACY}{txid}"))
    if not (path.is_symlink() and Path(os.readlink(path)) == _backend_link_target(config)):
        fsutil.make_dirs(path.parent)
        fsutil.switch_symlink(path, _backend_link_target(config), txid)
    for leftover in sorted(path.parent.glob(f".{path.name}{_LEGACY}*")):
        kept = [entry for entry in sorted(leftover.iterdir()) if not _is_legacy_link(config, entry)]
        if not kept:
            fsutil.remove_tree(leftover)
            continue
        for entry in leftover.iterdir():
            if _is_legacy_link(config, entry):
                fsutil.remove_file(entry)
        shown = ", ".join(entry.name for entry in kept[:3]) + (f" (and {len(kept) - 3} more)" if len(kept) > 3 else "")
        print(f"atomicplug: kept {leftover}: it holds files atomicplug did not put there ({shown})", file=sys.stderr)
