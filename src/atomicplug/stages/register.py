"""Stage 5b, register: the registry and the frontend addon folder.

Both are written whole with temp-then-replace and are derived from the plan
and the registry before it, so repeating this stage after a crash is safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atomicplug.fsutil import make_dirs
from atomicplug.frontend.layout import write_layout

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.registry import Registry

__all__ = ["write_registry", "write_frontend_index"]


def write_registry(config: Config, registry: Registry) -> None:
    make_dirs(config.home)
    registry.save(config.registry_path)


def write_frontend_index(config: Config, registry: Registry) -> None:
    """``<frontend_addons>``: index.ts (rewritten when the enabled addons change), types.ts, ``.store``.

    ``registry.txid`` (the transaction that made it) names the temp link of a ``.store``
    switch. See :mod:`atomicplug.frontend.layout`.
    """
    write_layout(config, registry, registry.txid or "init")
