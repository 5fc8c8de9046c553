"""Load enabled addons into a running web application, and keep them in step.

DESIGN.md "Interfaces": the billing backend runs recovery on startup, imports
every enabled addon's backend as ``<package>.<id>`` from the config's
``backend_addons`` folder and mounts its FastAPI ``router``; after every
install, uninstall, enable, disable or rollback it calls :meth:`AddonLoader.reload`
so routes appear and disappear without a restart.

Reloading re-imports only what changed (the link now resolves to another
store tree, or the addon came or went) and the addons that require it, so
module-level state of untouched addons survives. An addon that fails to
import is logged, listed in :attr:`AddonLoader.failures` and skipped: the
application keeps serving. FastAPI is not imported here; any app object with
``router.routes``, ``include_router`` and ``openapi_schema`` will do.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import os
import sys
import traceback
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from atomicplug.errors import LockBusyError
from atomicplug.registry import Registry

if TYPE_CHECKING:
    from atomicplug.config import Config

__all__ = ["AddonLoader", "LoadedAddon", "WebApp"]

log = logging.getLogger("atomicplug.loader")


class _Router(Protocol):
    @property
    def routes(self) -> list[Any]: ...


class WebApp(Protocol):
    """What the loader needs of the application (a ``fastapi.FastAPI`` has it)."""

    @property
    def router(self) -> _Router: ...

    openapi_schema: dict[str, Any] | None

    def include_router(self, router: Any) -> None: ...


@attrs.frozen
class LoadedAddon:
    """One imported addon: the store tree it came from and its router (if any)."""

    id: str
    version: str
    target: str  # the store backend folder the link resolved to when imported
    module: types.ModuleType
    router: Any | None


class AddonLoader:
    """Import enabled addons as ``<package>.<id>`` and mount their routers on ``app``."""

    def __init__(self, config: Config, app: WebApp, package: str = "addons", *, lock_timeout: float | None = None) -> None:
        self.config = config
        self.app = app
        self.package = package
        self.lock_timeout = config.lock_timeout if lock_timeout is None else lock_timeout
        self.loaded: dict[str, LoadedAddon] = {}
        self.failures: dict[str, str] = {}  # id → one-line reason its import failed
        self._failed_targets: dict[str, str] = {}
        self._mounted: list[Any] = []  # the route objects this loader added to app.router.routes
        self._pinned: str | None = None  # the generation backend folder ``<package>.__path__`` holds

    # -- lifecycle --------------------------------------------------------------
    def startup(self) -> None:
        """Recover unfinished transactions, then import and mount every enabled addon."""
        self.recover()
        self.reload()

    def recover(self) -> list[tuple[str, str]]:
        """``Installer.recover()``; a lock held by a running operation is logged, not fatal."""
        from atomicplug.installer import Installer

        try:
            outcomes = Installer(attrs.evolve(self.config, lock_timeout=self.lock_timeout)).recover()
        except LockBusyError as exc:
            log.warning("addon recovery skipped: %s", exc)
            return []
        for txid, direction in outcomes:
            log.info("recovered transaction %s: rolled %s", txid, direction)
        return outcomes

    def reload(self) -> None:
        """Bring imported modules and mounted routes in line with the registry and links.

        Only addons whose link now resolves elsewhere (or that came or went),
        and the addons requiring them, are re-imported; a failed addon is
        retried when its tree changes.
        """
        view = self._ensure_package()
        # The registry of the pinned generation (beside its backend view), not the live link:
        # both must describe the same generation.
        registry = Registry.load(self._registry_of(view))
        wanted = self._wanted(registry, view)
        current = {pid: a.target for pid, a in self.loaded.items()} | self._failed_targets
        stale = {pid for pid, target in current.items() if wanted.get(pid) != target}
        stale |= self._dependents(registry, stale)
        for pid in stale:
            self._unload(pid)
        if stale:
            importlib.invalidate_caches()
        for pid in _dependencies_first(registry, sorted(wanted)):
            if pid not in self.loaded and pid not in self.failures:
                self._load(pid, registry.plugins[pid].version, wanted[pid])
        self._remount()

    # -- importing --------------------------------------------------------------
    def _registry_of(self, view: str) -> Path:
        """The registry beside a generation's backend view; the live link before generations exist."""
        beside = Path(view).parent / "registry.json"
        return beside if beside.is_file() else self.config.registry_path

    def _ensure_package(self) -> str:
        """Make ``<package>`` a package whose ``__path__`` is the live generation's backend view.

        The addon folder is a link to ``<home>/current/backend``; it is resolved
        once per reload and the package pinned to what it resolved to, so every
        import of this reload comes from one whole generation even if a
        transaction switches ``current`` meanwhile (docs/design.md "Generations").
        Returns the pinned folder.
        """
        pinned = os.path.realpath(self.config.backend_addons)
        module = sys.modules.get(self.package)
        if module is None:
            module = types.ModuleType(self.package, "Addons loaded by atomicplug (synthetic package).")
            module.__spec__ = importlib.machinery.ModuleSpec(self.package, None, is_package=True)
            module.__path__ = []
            sys.modules[self.package] = module
        path = getattr(module, "__path__", None)
        if path is None:
            raise TypeError(f"{self.package!r} is already imported and is not a package; choose another package name")
        if self._pinned is not None and self._pinned in path:
            path.remove(self._pinned)
        if pinned not in path:
            path.insert(0, pinned)
        self._pinned = pinned
        if module.__spec__ is not None and module.__spec__.submodule_search_locations is not None:
            module.__spec__.submodule_search_locations = list(path)
        return pinned

    def _wanted(self, registry: Registry, view: str) -> dict[str, str]:
        """Enabled addons with a backend entry in the pinned view: id → the store folder it resolves to."""
        wanted = {}
        for pid, entry in registry.plugins.items():
            link = os.path.join(view, pid)
            if entry.enabled and os.path.isdir(link):
                wanted[pid] = os.path.realpath(link)
        return wanted

    def _dependents(self, registry: Registry, changed: set[str]) -> set[str]:
        """Loaded addons that (transitively) require a changed one hold stale references: reload them too."""
        from atomicplug.metadata import PluginRequirement

        result: set[str] = set()
        frontier = set(changed)
        while frontier:
            found = {
                pid
                for pid in self.loaded
                if pid not in changed | result
                and pid in registry.plugins
                and any(PluginRequirement.parse(r).id in frontier for r in registry.plugins[pid].requires)
            }
            result |= found
            frontier = found
        return result

    def _load(self, pid: str, version: str, target: str) -> None:
        """Import ``<package>.<id>`` afresh: a module someone else left may come from another tree.

        Dependencies are loaded first, so a dependent's ``from addons.<dep> import``
        binds to the module loaded here.
        """
        name = f"{self.package}.{pid}"
        if name in sys.modules:
            self._purge(pid)
            importlib.invalidate_caches()
        try:
            module = importlib.import_module(name)
            router = getattr(module, "router", None)
            if router is not None and not isinstance(getattr(router, "routes", None), list):
                raise TypeError(f"'router' must be an APIRouter (got {type(router).__name__})")
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any addon failure must leave the app serving
            reason = traceback.format_exception_only(type(exc), exc)[-1].strip()
            log.error("addon %s %s failed to load, skipped: %s", pid, version, reason)
            self.failures[pid] = reason
            self._failed_targets[pid] = target
            self._purge(pid)
            return
        self.loaded[pid] = LoadedAddon(id=pid, version=version, target=target, module=module, router=router)
        log.info("addon %s %s loaded%s", pid, version, " with routes" if router is not None else "")

    def _unload(self, pid: str) -> None:
        self.loaded.pop(pid, None)
        self.failures.pop(pid, None)
        self._failed_targets.pop(pid, None)
        self._purge(pid)

    def _purge(self, pid: str) -> None:
        """Forget ``<package>.<id>`` and its submodules so the next import reads the new tree."""
        name = f"{self.package}.{pid}"
        for module_name in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module_name]
        parent = sys.modules.get(self.package)
        if parent is not None and hasattr(parent, pid):
            delattr(parent, pid)

    # -- mounting ---------------------------------------------------------------
    def _remount(self) -> None:
        """Rebuild the app's routes: its own ones, then each loaded addon's, in id order."""
        routes = self.app.router.routes
        mine = {id(r) for r in self._mounted}
        own = [r for r in routes if id(r) not in mine]
        routes[:] = own
        for pid in sorted(self.loaded):
            router = self.loaded[pid].router
            if router is not None:
                self.app.include_router(router)
        self._mounted = routes[len(own) :]
        self.app.openapi_schema = None  # FastAPI caches it; the next /openapi.json is rebuilt

    # -- reading ----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Loaded addons (id → version) and failures (id → reason), for a health endpoint."""
        return {
            "loaded": {pid: self.loaded[pid].version for pid in sorted(self.loaded)},
            "failed": dict(sorted(self.failures.items())),
        }


def _dependencies_first(registry: Registry, plugin_ids: list[str]) -> list[str]:
    """``plugin_ids`` ordered so that every addon comes after the addons it requires."""
    from atomicplug.metadata import PluginRequirement

    order: list[str] = []
    wanted = set(plugin_ids)

    def visit(pid: str, chain: tuple[str, ...]) -> None:
        if pid in order or pid in chain:
            return
        for text in registry.plugins[pid].requires:
            dep = PluginRequirement.parse(text).id
            if dep in wanted:
                visit(dep, (*chain, pid))
        order.append(pid)

    for pid in plugin_ids:
        visit(pid, ())
    return order
