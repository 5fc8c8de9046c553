"""The host app's npm packages: what its package.json declares and node_modules holds.

The frontend gate (docs/design.md "Frontend contract") checks a plugin's declared
``frontend.dependencies`` against them: a plugin importing a package the host lacks would
install and then break the host's build, when nothing can be undone any more. A package
counts when package.json declares it (so ``npm ci`` keeps it) and the copy Node would
resolve from the host folder (``node_modules`` there or in a parent) has a version in the
plugin's range. Ranges are npm's (``^``, ``~``, x-ranges, hyphen ranges, ``||``), read by
``semantic_version.NpmSpec``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from atomicplug.errors import OperationError

if TYPE_CHECKING:
    from atomicplug.config import Config
    from atomicplug.metadata import NpmDependency

__all__ = ["find_host", "HostPackages"]

_DECLARING_FIELDS = ("dependencies", "devDependencies", "peerDependencies", "optionalDependencies")


def find_host(config: Config) -> Path | None:
    """``frontend_host``, else the nearest folder above ``frontend_addons`` with a package.json."""
    if config.frontend_host is not None:
        return config.frontend_host
    for folder in config.frontend_addons.parents:
        if (folder / "package.json").is_file():
            return folder
    return None


@attrs.frozen
class HostPackages:
    """The host folder and the npm packages its package.json declares (name → range)."""

    folder: Path
    declared: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def load(cls, folder: Path) -> HostPackages:
        """Read ``folder/package.json``; OperationError when it is missing or not a JSON object."""
        data = _read_json(folder / "package.json")
        if data is None:
            raise OperationError(f"the frontend host {folder} has no readable package.json (set frontend_host)")
        declared: dict[str, str] = {}
        for field in _DECLARING_FIELDS:
            section = data.get(field)
            if isinstance(section, dict):
                declared.update({str(k): str(v) for k, v in section.items()})
        return cls(folder, declared)

    def installed_version(self, name: str) -> str | None:
        """The version of ``name`` that Node resolves from the host folder, if any."""
        for folder in (self.folder, *self.folder.parents):
            data = _read_json(folder / "node_modules" / name / "package.json")
            if data is not None:
                version = data.get("version")
                return version if isinstance(version, str) else None
        return None

    def problem(self, dependency: NpmDependency) -> str | None:
        """Why the host does not satisfy ``dependency`` (None when it does)."""
        from semantic_version import NpmSpec, Version

        wanted = f"npm package {dependency.name} {dependency.range}"
        try:
            spec = NpmSpec(dependency.range)
        except ValueError:
            return f"declares {wanted}, expected an npm version range such as ^1.2.0"
        if dependency.name not in self.declared:
            return f"needs {wanted}, but the host's package.json ({self.folder}) does not declare it"
        installed = self.installed_version(dependency.name)
        if installed is None:
            return f"needs {wanted}, but it is not installed in {self.folder / 'node_modules'} (run npm install)"
        try:
            matches = spec.match(Version(installed))
        except ValueError:
            matches = False
        if not matches:
            return f"needs {wanted}, but the host has {installed}"
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return data if isinstance(data, dict) else None
