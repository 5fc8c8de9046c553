"""Stage 5a, switch: what is left of per-plugin addon entries once views switch whole.

The backend view switches with its generation (:mod:`atomicplug.generations`); the
frontend has no per-plugin entries at all: index.ts imports each tree through the one
``.store`` link (:mod:`atomicplug.frontend.layout`, written in stage 5b). What remains
here: refusing, before anything starts, a frontend folder holding what atomicplug did not
put there, and sweeping the ``<name>.tmp-<txid>`` links a crash left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atomicplug.frontend.layout import check_layout
from atomicplug.fsutil import remove_file

if TYPE_CHECKING:
    from atomicplug.config import Config

__all__ = ["check_addon_entries", "remove_temp_links"]


def check_addon_entries(config: Config) -> None:
    """Refuse before anything starts when the frontend addon folder holds what atomicplug did not put there."""
    check_layout(config)


def remove_temp_links(config: Config, txid: str) -> None:
    """Delete ``<name>.tmp-<txid>`` links a crash may have left: ``current``, the registry link."""
    for folder in (config.home, config.backend_addons.parent):
        if not folder.is_dir():
            continue
        for leftover in folder.glob(f"*.tmp-{txid}"):
            if leftover.is_symlink():
                remove_file(leftover)
