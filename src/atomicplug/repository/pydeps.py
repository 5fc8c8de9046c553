"""Check a plugin's backend Python dependencies (docs/design.md "One transaction", step 2).

``metadata.json`` ``backend.dependencies`` are PEP 508 strings. atomicplug
never runs pip inside a transaction; it refuses at plan time when the running
environment lacks a distribution or has the wrong version, and says which
``pip install`` would fix it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from atomicplug.errors import DependencyError, MetadataError

__all__ = ["check_python_dependencies", "unmet_python_dependencies"]


def unmet_python_dependencies(requirements: Sequence[str | Requirement]) -> list[tuple[Requirement, str]]:
    """Each requirement the current environment does not satisfy, with why (e.g. "not installed").

    Requirements whose environment marker is false here are skipped. Raises
    MetadataError for a string that is not PEP 508.
    """
    unmet: list[tuple[Requirement, str]] = []
    for item in requirements:
        try:
            req = item if isinstance(item, Requirement) else Requirement(item)
        except InvalidRequirement as exc:
            raise MetadataError(f"backend.dependencies: expected a PEP 508 requirement, got {item!r} ({exc})") from exc
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            found = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append((req, "not installed"))
            continue
        try:
            version = Version(found)
        except InvalidVersion:
            unmet.append((req, f"installed version {found!r} is not PEP 440"))
            continue
        if not req.specifier.contains(version, prereleases=True):
            unmet.append((req, f"{found} installed"))
    return unmet


def _pip_form(req: Requirement) -> str:
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def check_python_dependencies(requirements: Sequence[str | Requirement]) -> None:
    """Raise DependencyError listing every unmet requirement and the pip command that fixes them."""
    unmet = unmet_python_dependencies(requirements)
    if not unmet:
        return
    listed = "; ".join(f"{_pip_form(req)} ({why})" for req, why in unmet)
    command = "pip install " + " ".join(f"'{_pip_form(req)}'" for req, _ in unmet)
    raise DependencyError(f"missing Python dependencies: {listed}; run: {command}")
