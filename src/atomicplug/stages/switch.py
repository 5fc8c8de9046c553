"""Stage 5a, switch: the frontend addon entries (the backend view switches with its generation).

Idempotent by construction (it sets links to the state the plan's ``after``
describes), so recovery can run it again after a crash at any point. The
backend entries live in the generation (:mod:`atomicplug.generations`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from atomicplug.errors import OperationError
from atomicplug.fsutil import make_dirs, remove_file, switch_symlink

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.registry import InstalledPlugin

__all__ = ["switch_plugin", "check_addon_entries", "remove_temp_links"]

#: Package sub-folders linked one by one into an addon folder of the config.
_PARTS = ("frontend",)


def _addon_dir(config: Config, part: str) -> Path:
    return config.backend_addons if part == "backend" else config.frontend_addons


def check_addon_entries(config: Config, plugin_id: str) -> None:
    """Refuse before anything starts when a real folder sits where a link must go."""
    for part in _PARTS:
        link = _addon_dir(config, part) / plugin_id
        if os.path.lexists(link) and not link.is_symlink():
            raise OperationError(f"{link} exists and was not installed by atomicplug; move it away first")


def switch_plugin(config: Config, plugin_id: str, after: InstalledPlugin | None, txid: str) -> None:
    """Make the addon entries of ``plugin_id`` match ``after`` (None: uninstalled)."""
    for part in _PARTS:
        link = _addon_dir(config, part) / plugin_id
        target = None
        if after is not None and after.enabled:
            folder = config.home / after.current.tree / part
            target = folder if folder.is_dir() else None
        if target is None:
            if os.path.lexists(link):
                if not link.is_symlink():
                    raise OperationError(f"{link} exists and was not installed by atomicplug; move it away first")
                remove_file(link)
            continue
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        make_dirs(link.parent)
        switch_symlink(link, target, txid)


def remove_temp_links(config: Config, txid: str) -> None:
    """Delete ``<name>.tmp-<txid>`` links a crash may have left: addon entries, ``current``, the registry link."""
    folders = [_addon_dir(config, part) for part in _PARTS] + [config.home, config.backend_addons.parent]
    for folder in folders:
        if not folder.is_dir():
            continue
        for leftover in folder.glob(f"*.tmp-{txid}"):
            if leftover.is_symlink():
                remove_file(leftover)
