"""The signed plugin repository (docs/design.md "Repository"): publish, serve, fetch, resolve.

The installer needs only :func:`load_manifest`, :func:`resolve`,
:func:`fetch_package` (or :func:`plan_remote`, all three in one call) and
:func:`check_python_dependencies`. A listing uses :func:`cached_manifest`
(verified, read-only, revalidated after ``manifest_max_age``). Publishing lives in
:mod:`atomicplug.repository.repo_admin`, the development server in
:mod:`atomicplug.repository.server`.
"""

from __future__ import annotations

from atomicplug.repository.remote import (
    fetch_package,
    installed_versions,
    plan_remote,
)
from atomicplug.repository.fetcher import Fetcher, ProgressCallback, Timeouts, make_fetcher
from atomicplug.repository.manifest import Manifest, ManifestEntry
from atomicplug.repository.manifest_cache import cached_manifest, load_manifest
from atomicplug.repository.pydeps import check_python_dependencies
from atomicplug.repository.resolver import resolve

__all__ = [
    "Fetcher",
    "Manifest",
    "ManifestEntry",
    "ProgressCallback",
    "Timeouts",
    "cached_manifest",
    "check_python_dependencies",
    "fetch_package",
    "installed_versions",
    "load_manifest",
    "make_fetcher",
    "plan_remote",
    "resolve",
]
