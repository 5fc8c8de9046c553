"""atomicplug: a transactional plugin installer for web applications.

Every install, upgrade, uninstall and rollback is one journaled transaction;
after a crash, recovery leaves the application wholly in the old state or
wholly in the new one.
"""

from __future__ import annotations

from atomicplug.errors import AtomicplugError

TYPE_CHECKING = False  # not `from typing import`: every command, and the resident client, imports this module

__all__ = ["AtomicplugError", "Config", "Installer", "__version__"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.installer import Installer


def __getattr__(name: str) -> object:
    # Lazy: `atomicplug recover` must not pay for SQLAlchemy or requests imports.
    if name == "Config":
        from atomicplug.config import Config

        return Config
    if name == "Installer":
        from atomicplug.installer import Installer

        return Installer
    raise AttributeError(name)
