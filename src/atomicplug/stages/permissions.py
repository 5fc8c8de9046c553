"""What a plugin may do: the permissions it declares, against what it ships and what is granted.

docs/design.md "Permissions". A package is checked at plan time, before the writer
lock and the journal, from what intake already knows (its metadata and the names
of its entries): a refusal leaves the home as it was. A tree a transaction makes
live is checked again from its files (:func:`check_tree`, in the database step's
checks), which also covers trees no package comes with (a rollback, an enable,
a cluster node's sync) and permissions granted differently since.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from atomicplug.errors import MetadataError, PermissionRefusedError

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.intake import Package

__all__ = ["DATABASE_PERMISSION", "check_packages", "check_tree"]

#: The permission a plugin must declare to ship migrations or install hooks.
DATABASE_PERMISSION = "database.create_tables"

#: The install hook's place in a package (docs/design.md "Install hooks").
_HOOK = "backend/install.py"


def check_packages(config: Config, packages: Sequence[Package]) -> None:
    """Refuse a package whose declared permissions are not granted, or that ships migrations or
    an install hook without declaring :data:`DATABASE_PERMISSION` (PermissionRefusedError)."""
    from atomicplug import safezip
    from atomicplug.errors import PackageError
    from atomicplug.intake import blob_path
    from atomicplug.registry import Registry

    installed = Registry.load(config.registry_path).plugins  # read without the lock: check_tree stands behind it
    for package in packages:
        entry = installed.get(package.metadata.id)
        if entry is not None and entry.current.sha256 == package.sha256:
            continue  # installed from these very bytes: a reinstall or repair grants nothing new
        try:
            names = safezip.entry_names(blob_path(config, package.sha256), config.limits, sha256=package.sha256)
        except PackageError:  # its blob released by another install of it meanwhile: the tree's check decides
            names = ()
        _refuse(config, package.metadata.id, package.metadata.permissions, _ships_database_code(names))


def check_tree(config: Config, plugin_id: str, tree: Path) -> None:
    """The same refusals for a store tree, from its files."""
    from atomicplug.database.discovery import discover

    ships = bool(discover(tree, plugin_id)) or (Path(tree) / _HOOK).is_file()
    _refuse(config, plugin_id, _declared(plugin_id, tree), ships)


def _ships_database_code(names: Iterable[str]) -> bool:
    """A ``migrations/*.sql`` file or the install hook among a package's entry names
    (what :func:`atomicplug.database.discovery.discover` and the hook runner read)."""
    return any(name == _HOOK or (name.startswith("migrations/") and name.endswith(".sql") and name.count("/") == 1) for name in names)


def _refuse(config: Config, plugin_id: str, declared: Collection[str], ships_database_code: bool) -> None:
    if ships_database_code and DATABASE_PERMISSION not in declared:
        raise PermissionRefusedError(
            f"plugin {plugin_id} ships migrations or install hooks but does not declare "
            f"the permission '{DATABASE_PERMISSION}' in metadata.json"
        )
    for permission in declared:
        if permission not in config.granted_permissions:
            raise PermissionRefusedError(
                f"plugin {plugin_id} needs the permission '{permission}', which is not granted "
                "(granted_permissions in the config)"
            )


def _declared(plugin_id: str, tree: Path) -> list[str]:
    path = Path(tree) / "metadata.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MetadataError(f"plugin {plugin_id}: cannot read metadata.json: {exc}") from exc
    permissions = data.get("permissions", []) if isinstance(data, dict) else None
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise MetadataError(f"plugin {plugin_id}: 'permissions' must be a list of strings (got {permissions!r})")
    return permissions
