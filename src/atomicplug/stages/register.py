"""Stage 5b, register: the frontend addon folder.

Written whole with temp-then-replace and derived from the registry, so
repeating this stage after a crash is safe. The registry itself is part of
the generation (:mod:`atomicplug.generations`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atomicplug.frontend.layout import write_layout

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.registry import Registry

__all__ = ["write_frontend_index"]


def write_frontend_index(config: Config, registry: Registry) -> None:
    """``<frontend_addons>``: index.ts (rewritten when the enabled addons change), types.ts, ``.store``.

    ``registry.txid`` (the transaction that made it) names the temp link of a ``.store``
    switch. See :mod:`atomicplug.frontend.layout`.
    """
    write_layout(config, registry, registry.txid or "init")
