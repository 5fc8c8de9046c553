"""Backend views: the folder of per-plugin links a generation shows, stored once by its content.

A generation's backend view is a folder holding one link per enabled plugin with a
backend (docs/design.md "Generations"). Making it costs a link per installed plugin
(1000 of them: ~15 ms on a quiet disk, several times that while other processes write),
although most transactions show a view seen before: ``rollback --generation N`` shows
N's, and a disable or enable undone shows the one before it. So, like OSTree's
dirtree objects, a view is named by what it holds and made once::

    <home>/views/<key>/<id>       -> ../../store/<id>/<version>-<sha12>/backend
    <home>/generations/<n>/backend -> ../../views/<key>

A view is built under ``views/.building-<key>``, made durable (an fsync of the
folder: a new link is durable with its folder's entry), and renamed into place, so a
folder named ``<key>`` is always whole; atomicplug never changes it afterwards, and one
found changed by hand when it is shown again is made again. A new view's
entries that the live view holds too are hard links to the live view's (no new inode:
see :func:`atomicplug.fsutil.make_symlinks`), so a view costs a link per plugin and an
inode per change. gc removes the views no generation on disk shows.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from atomicplug import fsutil

if TYPE_CHECKING:
    from atomicplug.config import Config

__all__ = ["FOLDER", "root", "link_target", "ensure", "names", "remove_unused"]

FOLDER = "views"
_BUILDING = ".building-"


def root(config: Config) -> Path:
    return config.home / FOLDER


def link_target(tree: str, part: str) -> str:
    """The link text from ``views/<key>/<id>`` to ``part`` of a store tree (relative: home may move)."""
    return f"../../{tree}/{part}"  # a string, not os.path.join: 1000 of them for a new view


def ensure(config: Config, links: Sequence[tuple[str, str]], *, like: str | None = None) -> str:
    """The key of the view holding exactly ``links`` (name, target), sorted by name; made if new,
    its entries that ``like`` (a view, such as the live one) already holds hard-linked to it.

    Idempotent: a leftover ``.building-<key>`` of a crash is discarded and built again.
    """
    key = hashlib.sha256("".join(f"{name}\0{target}\n" for name, target in links).encode()).hexdigest()[:32]
    final = root(config) / key
    if final.is_dir():
        if _holds(final, links) or (like is not None and os.path.realpath(like) == os.path.realpath(final)):  # home may be a link
            return key  # the live one, changed by hand, stays what it is: `verify` names its bad links
        fsutil.remove_tree(final)  # a kept view changed by hand: made again, not made live as it is
    building = root(config) / f"{_BUILDING}{key}"
    fsutil.make_dirs(root(config))
    fsutil.remove_tree(building)
    fsutil.make_dirs(building)
    fsutil.make_symlinks(str(building), links, like=like)
    # Not a syncfs, which would also flush every other process's writes on the file system.
    fsutil.fsync_dir(building)
    fsutil.replace(building, final)
    return key


def _holds(folder: Path, links: Sequence[tuple[str, str]]) -> bool:
    """``folder`` holds exactly ``links`` (sorted by name), each a link with that text: a view is
    named by what it should hold, not by what it holds, and someone may have changed it since."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        if sorted(os.listdir(fd)) != [name for name, _ in links]:
            return False
        return all(os.readlink(name, dir_fd=fd) == target for name, target in links)
    except OSError:  # an entry that is no link
        return False
    finally:
        os.close(fd)


def key_of(link: Path) -> str | None:
    """The view a generation's ``backend`` link shows (None: a real folder, from before views)."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    return Path(target).name if Path(target).parent.name == FOLDER else None


def names(config: Config) -> list[str]:
    """Every complete view (not a build or delete leftover)."""
    try:
        return sorted(name for name in os.listdir(root(config)) if not name.startswith("."))
    except FileNotFoundError:
        return []


def remove_unused(config: Config, shown: Collection[str]) -> int:
    """Delete every view not in ``shown`` (and leftovers of crashed builds and deletes); how many went."""
    folder = root(config)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        if name in shown:
            continue
        if name.startswith(fsutil.TRASH_PREFIX):
            fsutil.delete_trash(folder / name)
        else:
            fsutil.remove_tree(folder / name)
        removed += 0 if name.startswith(".") else 1
    return removed
